//! Many webhooks: no fixed cap, every one gets every lead. (How fast they
//! start and how much memory each costs is the benchmark's to measure.)

use std::collections::HashMap;

use crate::support::*;

/// A scenario with `n` webhooks `h0`… at paths `/h0`….
fn with_webhooks(prefix: &str, n: usize) -> Scenario<'static> {
    (0..n).fold(Scenario::new(prefix), |scenario, i| {
        scenario.webhook(&format!("h{i}"), &format!("/h{i}"))
    })
}

/// Requests per path, counting each lead (by score) once per path.
fn leads_per_path(got: &[ReceivedRequest]) -> HashMap<String, usize> {
    let mut seen: HashMap<String, std::collections::HashSet<i64>> = HashMap::new();
    for request in got {
        let score = data(request)["score"].as_i64().expect("score");
        seen.entry(request.path.clone()).or_default().insert(score);
    }
    seen.into_iter().map(|(path, s)| (path, s.len())).collect()
}

#[tokio::test]
async fn a_thousand_enabled_webhooks_start_and_each_gets_the_lead() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = with_webhooks("thousand", 1000).start(&leadhook()).await;

    db.insert_leads(1..=1).await;
    let complete = || {
        let per_path = leads_per_path(&receiver.requests());
        per_path.len() == 1000 && per_path.values().all(|n| *n == 1)
    };
    eventually(
        "not every one of the 1000 webhooks got the lead",
        || {
            format!(
                "{} paths reached; log:\n{}",
                leads_per_path(&receiver.requests()).len(),
                sidecar.log()
            )
        },
        async || complete(),
    )
    .await;
}

// Two threads: the receiver keeps answering while the test checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_webhooks_each_get_all_of_a_hundred_leads() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = with_webhooks("two_hundred", 200)
        // One receiver in the test's runtime stands for 200 partners: 200 × 64
        // connections at once would measure the receiver, not leadhook.
        .configure(|c| c.delivery.max_in_flight = Some(4))
        .start(&leadhook())
        .await;

    db.insert_leads_in_one_transaction(1..=100).await;
    eventually(
        "not every webhook got every lead",
        || {
            let per_path = leads_per_path(&receiver.requests());
            let short = per_path.values().filter(|n| **n < 100).count();
            format!(
                "{} paths, {short} of them short; log:\n{}",
                per_path.len(),
                sidecar.log()
            )
        },
        async || {
            // Counting first (cheap), reading 20 000 bodies only once every
            // path has had enough requests: the check must not starve the
            // receiver it is waiting on.
            let enough = (0..200).all(|i| receiver.count_to(&format!("/h{i}")) >= 100);
            enough && {
                let per_path = leads_per_path(&receiver.requests());
                per_path.len() == 200 && per_path.values().all(|n| *n == 100)
            }
        },
    )
    .await;
    sidecar.assert_running();
}
