//! Per-webhook filters on a multi-tenant leads table: each webhook gets only
//! the leads whose columns match (equality, or membership in a list, ANDed),
//! in both modes; an UPDATE that moves a lead out of a webhook's scope is
//! not sent to it.

use crate::reload::arrived_scores;
use crate::support::*;

const TENANTS: &str = "ALTER TABLE leads ADD COLUMN account_id integer, ADD COLUMN region text";

fn filtered(scenario: Scenario<'static>) -> Scenario<'static> {
    scenario
        .setup(TENANTS)
        .webhook_with("account42", "/account42", |w| {
            w.filter.insert("account_id".into(), 42.into());
        })
        .webhook_with("europe", "/europe", |w| {
            w.filter
                .insert("region".into(), serde_json::json!(["eu", "uk"]));
        })
        .webhook_with("account42_eu", "/account42_eu", |w| {
            w.filter.insert("account_id".into(), 42.into());
            w.filter.insert("region".into(), "eu".into());
        })
        .webhook("everyone", "/everyone")
}

/// Four leads (score: account, region), then lead 1 moves out of account 42
/// (to 7, score 11) and lead 3 into it (score 13).
async fn tenants_and_a_move(db: &TestDb) {
    db.sql
        .batch_execute(
            "INSERT INTO leads (email, score, account_id, region) VALUES
                 ('a@example.com', 1, 42, 'eu'),
                 ('b@example.com', 2, 42, 'us'),
                 ('c@example.com', 3, 7, 'uk'),
                 ('d@example.com', 4, NULL, 'eu');
             UPDATE leads SET account_id = 7, score = 11 WHERE score = 1;
             UPDATE leads SET account_id = 42, score = 13 WHERE score = 3;",
        )
        .await
        .expect("insert tenants' leads");
}

async fn each_webhook_gets_only_its_tenants_leads(run: Running, notify: bool) {
    tenants_and_a_move(&run.db).await;
    wait_for_these_scores(
        &run.receiver,
        "/everyone",
        [1, 2, 3, 4, 11, 13],
        &run.sidecar,
    )
    .await;
    if notify {
        eventually(
            "every outbox row handled",
            || run.sidecar.log(),
            async || run.db.outbox_rows().await == 0,
        )
        .await;
    } else {
        run.db.wait_confirmed("every lead", &run.sidecar).await;
    }
    assert_eq!(
        arrived_scores(&run.receiver, "/account42"),
        vec![1, 2, 13],
        "the move out is not sent, the move in is"
    );
    assert_eq!(
        arrived_scores(&run.receiver, "/europe"),
        vec![1, 3, 4, 11, 13],
        "in eu or uk throughout"
    );
    assert_eq!(arrived_scores(&run.receiver, "/account42_eu"), vec![1]);
    let admin = run.sidecar.admin_url().await;
    let kept = metric(
        &admin,
        "leadhook_filtered_total",
        &[("webhook", "account42")],
    )
    .await;
    assert_eq!(kept, 3.0, "leads 3 and 4 and the move count as filtered");
}

#[tokio::test]
async fn filters_send_each_webhook_only_its_tenants_leads_when_streaming() {
    let run = filtered(Scenario::new("filters")).start(&leadhook()).await;
    each_webhook_gets_only_its_tenants_leads(run, false).await;
}

#[tokio::test]
async fn filters_send_each_webhook_only_its_tenants_leads_in_notify_mode() {
    let run = filtered(Scenario::new("filtersnotify").notify())
        .start(&leadhook())
        .await;
    each_webhook_gets_only_its_tenants_leads(run, true).await;
}

#[tokio::test]
async fn a_filter_on_a_column_the_table_does_not_have_is_refused_by_check_and_at_startup() {
    let db = TestDb::create(shared_cluster(), "filtercheck").await;
    let receiver = Receiver::start(0).await.expect("receiver");
    let mut hook = Webhook::to(&receiver, "tenant", "/t");
    hook.filter.insert("tenant_id".into(), 1.into());
    let config = db.config().webhook(hook).to_toml();
    let checked = leadhook().run(&config, &["check"], &[]);
    assert_eq!(checked.code, Some(1), "{}", checked.stdout);
    assert!(
        checked
            .stdout
            .contains("webhooks[0].filter: column \"tenant_id\" not found"),
        "{}",
        checked.stdout
    );
    let sidecar = leadhook().start(&config);
    let status = sidecar.wait_exit(WAIT).await;
    assert!(!status.success());
    assert!(sidecar.log().contains("tenant_id"), "{}", sidecar.log());
}
