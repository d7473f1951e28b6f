//! The lead stage, where both modes meet: a change becomes the `save_lead`
//! payload and is handed to delivery.
//!
//! The payload is the documented shape and nothing else: eleven keys under
//! `data`, in order. `email` and `website` are strings (NULL → `""`), the
//! other text fields nullable strings (NULL → `null`), `score` an integer
//! (NULL → `0`). It is serialised once per change and shared by every webhook.
//!
//! - `payload`: field values to payload bytes, pure. Which fields there are,
//!   and their kinds, is `crate::field`'s: every list of fields derives from it.
//! - `mapping`: where the fields are in the stream's tuples, and reading
//!   back the values a change did not carry.

mod mapping;
mod payload;

use std::sync::Arc;

use reqwest::header::HeaderValue;
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::change::{CapturedLead, RowChange, SourceMessage};
use crate::delivery::{Dispatcher, Event};

pub(crate) use mapping::LeadMapping;
use payload::captured_payload;
pub(crate) use payload::sample_payload;

/// Errors that stop the lead stage (and so the session, which reconnects).
#[derive(Debug, thiserror::Error)]
pub(crate) enum LeadError {
    #[error("a change arrived before the table's Relation message")]
    NoRelation,
    /// A row change in notify mode, which has no stream to describe rows.
    #[error("a replication change reached notify mode's lead stage")]
    NotStreaming,
    #[error("a delivery worker stopped")]
    Downstream,
    /// Cannot happen (a change id is hex digits, `/` and `-`); if it did,
    /// the change could not be sent, and delivery is not to blame.
    #[error("change id {0} is not a valid webhook-id header value")]
    WebhookId(String),
    #[error(
        "an outbox row's lead is not what the capture trigger writes ({0}); re-run `leadhook setup --apply`"
    )]
    Captured(String),
    #[error("reading the current value of an unchanged large column: {0}")]
    Lookup(#[from] tokio_postgres::Error),
}

/// The lead stage: turns each change into an event and dispatches it. The
/// point where both modes meet, between their source and delivery.
pub(crate) struct LeadStage {
    /// Replication mode's row mapping; notify mode's rows come mapped.
    rows: Option<Rows>,
    dispatcher: Dispatcher,
}

/// What row changes of the stream need.
struct Rows {
    mapping: LeadMapping,
    /// For reading unchanged large values back.
    sql: Arc<Client>,
}

impl LeadStage {
    /// Replication mode: maps the stream's rows, reading back over `sql`.
    pub(crate) fn for_stream(
        mapping: LeadMapping,
        sql: Arc<Client>,
        dispatcher: Dispatcher,
    ) -> Self {
        LeadStage {
            rows: Some(Rows { mapping, sql }),
            dispatcher,
        }
    }

    /// Notify mode: the trigger captured the fields.
    pub(crate) fn for_outbox(dispatcher: Dispatcher) -> Self {
        LeadStage {
            rows: None,
            dispatcher,
        }
    }

    /// Runs until the source goes away or a change cannot be mapped.
    pub(crate) async fn run(
        mut self,
        mut changes: mpsc::Receiver<SourceMessage>,
    ) -> Result<(), LeadError> {
        while let Some(message) = changes.recv().await {
            match message {
                SourceMessage::Relation(relation) => {
                    let rows = self.rows.as_mut().ok_or(LeadError::NotStreaming)?;
                    for warning in rows.mapping.describe(&relation) {
                        tracing::warn!("{warning}");
                    }
                }
                SourceMessage::Change(change) => self.send(change).await?,
                SourceMessage::Captured(lead) => self.send_captured(lead).await?,
            }
        }
        Ok(())
    }

    async fn send(&mut self, change: RowChange) -> Result<(), LeadError> {
        let rows = self.rows.as_mut().ok_or(LeadError::NotStreaming)?;
        let payload = rows
            .mapping
            .payload(
                &change.new.values,
                change.old.as_ref(),
                change.xid,
                &rows.sql,
            )
            .await?;
        let mut memory = change.memory;
        memory.resize(payload.len());
        let event = Event {
            id: header_value(change.id.to_string())?,
            payload,
            memory,
            key: rows.mapping.lead_key(&change.new.values),
            tx: change.tx,
            position: (change.id.commit_lsn.0 as i64, change.id.index as i32),
            targets: change.targets,
            commit_time: change.commit_time,
        };
        self.dispatch(event).await
    }

    async fn send_captured(&mut self, lead: CapturedLead) -> Result<(), LeadError> {
        let payload = captured_payload(&lead.lead)?;
        let mut memory = lead.memory;
        memory.resize(payload.len());
        let event = Event {
            id: header_value(lead.id)?,
            payload,
            memory,
            key: lead.key,
            tx: lead.tx,
            position: (lead.seq, 0),
            targets: lead.targets,
            commit_time: lead.commit_time,
        };
        self.dispatch(event).await
    }

    async fn dispatch(&mut self, event: Event) -> Result<(), LeadError> {
        self.dispatcher
            .dispatch(event)
            .await
            .map_err(|_| LeadError::Downstream)
    }
}

/// A change id as `webhook-id`.
fn header_value(id: String) -> Result<HeaderValue, LeadError> {
    HeaderValue::from_str(&id).map_err(|_| LeadError::WebhookId(id))
}

#[cfg(test)]
mod tests;
