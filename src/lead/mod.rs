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
pub(crate) mod payload;
mod window;

use std::sync::Arc;

use reqwest::header::HeaderValue;
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::change::backfill::BackfillBatch;
use crate::change::{CapturedLead, RowChange, SourceMessage};
use crate::delivery::{Dispatcher, Event};
use crate::field::ColumnMap;

pub(crate) use mapping::LeadMapping;
use payload::captured_payload;
pub(crate) use payload::sample_payload;
use window::Window;

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
    /// Notify mode: which column each captured field came from (filters
    /// name columns, the capture names fields).
    captured_columns: ColumnMap,
    dispatcher: Dispatcher,
    /// Open between a backfill chunk's watermarks.
    window: Option<Window>,
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
            captured_columns: ColumnMap::default(),
            dispatcher,
            window: None,
        }
    }

    /// Notify mode: the trigger captured the fields (mapped from `columns`).
    pub(crate) fn for_outbox(dispatcher: Dispatcher, columns: ColumnMap) -> Self {
        LeadStage {
            rows: None,
            captured_columns: columns,
            dispatcher,
            window: None,
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
                SourceMessage::Captured(lead) => {
                    let position = (lead.seq, 0);
                    self.send_captured(lead, position).await?
                }
                SourceMessage::Window(chunk) => self.window = Some(Window::open(chunk)),
                SourceMessage::Deleted(old) => {
                    let rows = self.rows.as_ref().ok_or(LeadError::NotStreaming)?;
                    let key = rows.mapping.lead_key(&old.tuple().values);
                    if let Some(window) = &mut self.window {
                        window.saw(key);
                    }
                }
                SourceMessage::Truncated => {
                    if let Some(window) = &mut self.window {
                        window.saw_truncate();
                    }
                }
                SourceMessage::Backfill(batch) => self.merge(batch).await?,
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
        let key = rows.mapping.lead_key(&change.new.values);
        if let Some(window) = &mut self.window {
            window.saw(key);
            // A changed primary key: the lead under its old key changed too.
            if let Some(old) = &change.old {
                window.saw(rows.mapping.lead_key(&old.tuple().values));
            }
        }
        let event = Event {
            id: header_value(change.id.text())?,
            payload,
            memory,
            key,
            tx: change.tx,
            position: (change.id.commit_lsn.0 as i64, change.id.index as i32),
            targets: change.targets,
            commit_time: change.commit_time,
        };
        let mapping = &rows.mapping;
        let column = |name: &str| mapping.column_text(&change.new.values, name);
        self.dispatcher
            .dispatch(event, column)
            .await
            .map_err(|_| LeadError::Downstream)
    }

    /// A backfill chunk's rows at its high watermark: those of leads that
    /// changed since the low one are superseded (handled, not sent); the
    /// others go out here, in the stream's order. Without the chunk's
    /// window (cannot happen in one session) none can be ordered: all are
    /// dropped and the reader reads the batch again.
    async fn merge(&mut self, batch: BackfillBatch) -> Result<(), LeadError> {
        let window = self.window.take().filter(|w| w.is_for(&batch.chunk));
        batch.chunk.set_merged(window.is_some());
        let sent = metrics::counter!("leadhook_backfill_rows_total", "outcome" => "sent");
        let superseded =
            metrics::counter!("leadhook_backfill_rows_total", "outcome" => "superseded");
        for (index, (row, targets)) in batch.rows.into_iter().enumerate() {
            if window.as_ref().is_none_or(|w| w.supersedes(row.key)) {
                self.dispatcher.skip(&targets, batch.tx);
                superseded.increment(1);
                continue;
            }
            let lead = CapturedLead {
                id: row.id,
                seq: 0,
                tx: batch.tx,
                targets,
                commit_time: batch.commit_time,
                key: row.key,
                lead: row.lead,
                other_columns: row.other_columns,
                memory: row.memory,
            };
            let position = (
                batch.commit_lsn.0 as i64,
                i32::try_from(index).unwrap_or(i32::MAX),
            );
            self.send_captured(lead, position).await?;
            sent.increment(1);
        }
        Ok(())
    }

    /// `position`: where the lead is in the stream (see `Event::position`).
    async fn send_captured(
        &mut self,
        lead: CapturedLead,
        position: (i64, i32),
    ) -> Result<(), LeadError> {
        let payload = captured_payload(&lead.lead)?;
        let columns = match self.dispatcher.reads_columns() {
            true => CapturedColumns::parse(&lead)?,
            false => CapturedColumns::default(),
        };
        let mut memory = lead.memory;
        memory.resize(payload.len());
        let event = Event {
            id: header_value(lead.id)?,
            payload,
            memory,
            key: lead.key,
            tx: lead.tx,
            position,
            targets: lead.targets,
            commit_time: lead.commit_time,
        };
        let mapped = &self.captured_columns;
        let column = |name: &str| columns.get(mapped, name);
        self.dispatcher
            .dispatch(event, column)
            .await
            .map_err(|_| LeadError::Downstream)
    }
}

/// A captured lead's columns, read only when some webhook has a filter.
#[derive(Default)]
struct CapturedColumns {
    /// By payload field: the mapped columns.
    fields: serde_json::Map<String, serde_json::Value>,
    /// By column name: the others.
    others: serde_json::Map<String, serde_json::Value>,
}

impl CapturedColumns {
    fn parse(lead: &CapturedLead) -> Result<Self, LeadError> {
        let object = |text: &str| match serde_json::from_str(text) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            _ => Err(LeadError::Captured("not a JSON object".into())),
        };
        Ok(CapturedColumns {
            fields: object(&lead.lead)?,
            others: match &lead.other_columns {
                Some(text) => object(text)?,
                None => serde_json::Map::new(),
            },
        })
    }

    /// Column `name` as text, `None` for NULL or a column not captured.
    fn get(&self, mapped: &ColumnMap, name: &str) -> Option<&str> {
        let by_field = mapped.iter().find(|(_, column)| *column == Some(name));
        let value = match by_field {
            Some((field, _)) => self.fields.get(field.name()),
            None => self.others.get(name),
        };
        value?.as_str()
    }
}

/// A change id as `webhook-id`.
fn header_value(id: String) -> Result<HeaderValue, LeadError> {
    HeaderValue::from_str(&id).map_err(|_| LeadError::WebhookId(id))
}

#[cfg(test)]
mod tests;
