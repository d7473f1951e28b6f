//! Every metric leadhook serves, with the help text Prometheus shows (and
//! `promtool check metrics` asks for): the one list, registered when the
//! recorder is installed. The README's metrics table says the same.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Registers the help text and unit of each metric, and serves the
/// counters of rare events from the start at 0, so that `increase()` over
/// them works before the first one (labelled series appear with their use).
pub(super) fn describe() {
    for rare in [
        "leadhook_slot_recreated_total",
        "leadhook_registry_invalid_rows_total",
    ] {
        metrics::counter!(rare).increment(0);
    }
    describe_counter!(
        "leadhook_changes_total",
        "Changes of the leads table decoded from the stream, by op (deletes and truncates are counted, never delivered)"
    );
    describe_counter!(
        "leadhook_delivery_attempts_total",
        "HTTP attempts, by webhook and result (success, http_error, timeout, connect_error)"
    );
    describe_counter!(
        "leadhook_deliveries_total",
        "Finished changes, by webhook and outcome (delivered, dead_lettered): one per change and webhook"
    );
    describe_histogram!(
        "leadhook_delivery_duration_seconds",
        Unit::Seconds,
        "Latency of each HTTP attempt, by webhook"
    );
    describe_histogram!(
        "leadhook_event_lag_seconds",
        Unit::Seconds,
        "From the commit in PostgreSQL to the successful delivery, by webhook"
    );
    describe_gauge!(
        "leadhook_in_flight",
        "Requests sent and not yet answered, by webhook"
    );
    describe_gauge!(
        "leadhook_webhook_state",
        "1 for the webhook's current state (healthy, failing, open, spooling), 0 for the others"
    );
    describe_gauge!(
        "leadhook_concurrency",
        "Requests the webhook may have in flight now: max_in_flight, less after 429/503, 1 while its circuit is open"
    );
    describe_counter!(
        "leadhook_circuit_skipped_attempts_total",
        "Attempts counted as failed without a request while the webhook's circuit was open"
    );
    describe_gauge!(
        "leadhook_spool_depth",
        "Changes waiting in the spool table for the webhook"
    );
    describe_gauge!(
        "leadhook_spool_oldest_seconds",
        Unit::Seconds,
        "How long ago the oldest change waiting in the spool was committed (0 when not spooling)"
    );
    describe_gauge!(
        "leadhook_memory_bytes",
        Unit::Bytes,
        "Change bytes held in memory under [delivery] memory"
    );
    describe_gauge!(
        "leadhook_replication_lag_bytes",
        Unit::Bytes,
        "The server's current WAL position minus the one leadhook confirmed"
    );
    describe_gauge!(
        "leadhook_source_connected",
        "1 while streaming (or delivering from the outbox), else 0"
    );
    describe_counter!(
        "leadhook_slot_recreated_total",
        "Lost replication slots re-created: each one is a data-loss event (see the DATA LOSS log line)"
    );
    describe_gauge!(
        "leadhook_slot_safe_wal_bytes",
        Unit::Bytes,
        "WAL the slot may still retain before max_slot_wal_keep_size invalidates it"
    );
    describe_counter!(
        "leadhook_filtered_total",
        "Changes a webhook's filter kept from it (counted as handled)"
    );
    describe_counter!(
        "leadhook_registry_invalid_rows_total",
        "Registry table rows found invalid and skipped"
    );
    describe_counter!(
        "leadhook_toast_reads_total",
        "Large unchanged values read back by primary key, by result (exact, newer, deleted)"
    );
    describe_counter!(
        "leadhook_backfill_rows_total",
        "Backfilled leads, by outcome: sent to delivery, or superseded by a live change during their batch"
    );
    describe_gauge!(
        "leadhook_backfill_remaining",
        "Leads left in the backfill run this instance is doing"
    );
}
