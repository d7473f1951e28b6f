//! Memory is bounded by bytes (`[delivery] memory`), not by counts of
//! changes: a backlog of large rows while every receiver is down stays
//! within the budget, and reaches the receivers whole once they are back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::*;

/// The sidecar's resident memory may not pass this, whatever the backlog.
const RSS_BOUND_MIB: f64 = 96.0;

#[tokio::test]
async fn a_backlog_of_300_kb_rows_while_both_receivers_are_down_stays_under_96_mib() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("big_rows")
        .webhook("a", "/a")
        .webhook("b", "/b")
        .configure(|c| {
            c.delivery.spool_after = Some(Duration::from_secs(1));
            c.delivery.initial_backoff = Some(Duration::from_millis(100));
            c.delivery.max_backoff = Some(Duration::from_millis(500));
        })
        .start(&leadhook())
        .await;
    let up = Arc::new(AtomicBool::new(false));
    let switch = up.clone();
    receiver.set_responder(move |_, _| {
        if switch.load(Ordering::SeqCst) {
            Reply::ok()
        } else {
            Reply::status(500)
        }
    });

    // 400 leads of 300 kB notes: 120 MB of payloads per webhook, twice the
    // budget. (They compress to almost nothing in the database: the
    // pressure is on the sidecar, which gets every value whole.)
    for batch in 0..40 {
        db.sql
            .execute(
                "INSERT INTO leads (email, score, notes)
                 SELECT 'lead' || i || '@example.com', i, repeat(chr(97 + i % 26), 300000)
                 FROM generate_series($1::int * 10 + 1, $1::int * 10 + 10) i",
                &[&batch],
            )
            .await
            .unwrap();
    }
    db.wait_confirmed(
        "both webhooks' backlogs should be spooled and the position move on",
        &sidecar,
    )
    .await;
    assert_eq!(db.spool_rows("a").await, 400);
    assert_eq!(db.spool_rows("b").await, 400);

    up.store(true, Ordering::SeqCst);
    for path in ["/a", "/b"] {
        let got = wait_for_scores(&receiver, path, 400, &sidecar).await;
        assert!(
            got.iter()
                .all(|r| data(r)["notes"].as_str().unwrap().len() == 300_000),
            "every payload arrives whole"
        );
    }
    assert!(
        !sidecar.log().contains("session ended"),
        "the stream stays up while the budget is spent (keepalives answered): {}",
        sidecar.log()
    );
    let peak = sidecar.peak_rss_mib();
    println!("peak RSS with a 300 kB-row backlog: {peak:.1} MiB");
    assert!(
        peak <= RSS_BOUND_MIB,
        "peak RSS {peak:.1} MiB is over {RSS_BOUND_MIB} MiB"
    );
}

#[tokio::test]
async fn a_message_over_max_message_size_is_refused_and_retried_and_delivered_once_the_limit_is_raised()
 {
    let run = Scenario::new("big_frame")
        .configure(|c| c.source.max_message_size = Some("64KiB".into()))
        .start(&leadhook())
        .await;
    // 200 kB of notes: pgoutput sends the value whole, in one message.
    run.db
        .sql
        .execute(
            "INSERT INTO leads (email, notes, score) VALUES ('big@example.com', repeat('x', 200000), 1)",
            &[],
        )
        .await
        .expect("insert a big lead");
    run.sidecar
        .wait_log("over source.max_message_size (65536 bytes): refused before reading it")
        .await;
    // The session reconnects (and is refused again): it is retried, not fatal.
    eventually(
        "the session is retried",
        || run.sidecar.log(),
        async || {
            run.sidecar.assert_running();
            run.sidecar
                .log()
                .matches("refused before reading it")
                .count()
                >= 2
        },
    )
    .await;
    assert_eq!(run.receiver.count_to("/leads"), 0);
    // Raised: the same lead arrives whole, once.
    let raised = run
        .config
        .clone()
        .with(|c| c.source.max_message_size = Some("1MiB".into()));
    run.sidecar.rewrite_config(&raised.to_toml());
    run.sidecar.restart();
    run.db.insert_leads(2..=2).await;
    wait_for_these_scores(&run.receiver, "/leads", 1..=2, &run.sidecar).await;
    let big: Vec<_> = run
        .receiver
        .requests_to("/leads")
        .into_iter()
        .filter(|r| data(r)["email"] == "big@example.com")
        .collect();
    assert_eq!(big.len(), 1, "the big lead arrives once");
    assert_eq!(data(&big[0])["notes"].as_str().map(str::len), Some(200_000));
}
