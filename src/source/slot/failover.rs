//! Failover slots (PostgreSQL 17 and later): a slot created with
//! `FAILOVER` is synchronised to standbys that ask for it, so after a
//! promotion the sidecar resumes on the new primary from the synchronised
//! slot instead of losing the gap. Whether it is wanted, and what the
//! standby needs, is `setup::prerequisites::failover`'s.

use tokio_postgres::Client;

use super::SlotError;
use crate::config::Config;
pub(crate) use crate::setup::prerequisites::failover::{server_version, wanted};
use crate::source::replication::ReplicationConnection;

/// Makes an existing slot a failover slot when it is to be one and is
/// not (it was created before, or by hand): `ALTER_REPLICATION_SLOT`, on
/// the replication connection, is the only way to change it.
pub(crate) async fn ensure(
    sql: &Client,
    conn: &mut ReplicationConnection,
    config: &Config,
) -> Result<(), SlotError> {
    if !wanted(config, server_version(sql).await?) {
        return Ok(());
    }
    let name = &config.source.slot;
    let row = sql
        .query_opt(
            "SELECT coalesce((to_jsonb(s) ->> 'failover')::boolean, false)
             FROM pg_replication_slots s WHERE slot_name = $1",
            &[name],
        )
        .await?;
    if row.is_some_and(|r| !r.get::<_, bool>(0)) {
        let command = format!(
            "ALTER_REPLICATION_SLOT {} (FAILOVER true)",
            postgres_protocol::escape::escape_identifier(name)
        );
        conn.simple_query(&command)
            .await
            .map_err(|e| SlotError::Failover(e.to_string()))?;
        tracing::info!(slot = %name, "made the replication slot a failover slot: standbys with sync_replication_slots = on keep a copy of it");
    }
    Ok(())
}
