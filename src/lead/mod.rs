//! Lead mapping: a row of the leads table becomes the `save_lead` payload.
//!
//! The payload is the documented shape and nothing else: eleven keys under
//! `data`, in order. `email` and `website` are strings (NULL → `""`), the
//! other text fields nullable strings (NULL → `null`), `score` an integer
//! (NULL → `0`). It is serialised once per change and shared by every webhook.
//!
//! - `crate::field` (beside this folder): the payload's fields, their names and kinds; every list of
//!   fields elsewhere (column mapping, outbox trigger, checks) derives from it.
//! - `payload`: field values to payload bytes, pure.
//! - `mapping`: where the fields are in the stream's tuples, and reading
//!   back the values a change did not carry.

mod mapping;
mod payload;

use std::sync::Arc;

use reqwest::header::HeaderValue;
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::change::{RowChange, SourceMessage};
use crate::delivery::{Dispatcher, Event};

pub(crate) use mapping::LeadMapping;
pub(crate) use payload::captured_payload;

/// Errors that stop the lead stage (and so the session, which reconnects).
#[derive(Debug, thiserror::Error)]
pub(crate) enum LeadError {
    #[error("a change arrived before the table's Relation message")]
    NoRelation,
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

/// The lead stage: turns each change into an event and dispatches it.
pub(crate) struct LeadStage {
    pub(crate) mapping: LeadMapping,
    /// For reading unchanged large values back.
    pub(crate) sql: Arc<Client>,
    pub(crate) dispatcher: Dispatcher,
}

impl LeadStage {
    /// Runs until the source goes away or a change cannot be mapped.
    pub(crate) async fn run(
        mut self,
        mut changes: mpsc::Receiver<SourceMessage>,
    ) -> Result<(), LeadError> {
        while let Some(message) = changes.recv().await {
            match message {
                SourceMessage::Relation(relation) => {
                    for warning in self.mapping.describe(&relation) {
                        tracing::warn!("{warning}");
                    }
                }
                SourceMessage::Change(change) => self.send(change).await?,
            }
        }
        Ok(())
    }

    async fn send(&mut self, change: RowChange) -> Result<(), LeadError> {
        let payload = self
            .mapping
            .payload(
                &change.new.values,
                change.old.as_ref(),
                change.xid,
                &self.sql,
            )
            .await?;
        let id = change.id.to_string();
        let id = HeaderValue::from_str(&id).map_err(|_| LeadError::WebhookId(id))?;
        let event = Event {
            id,
            payload,
            key: self.mapping.lead_key(&change.new.values),
            tx: change.tx,
            targets: change.targets,
            commit_time: change.commit_time,
        };
        self.dispatcher
            .dispatch(event)
            .await
            .map_err(|_| LeadError::Downstream)
    }
}

#[cfg(test)]
mod tests;
