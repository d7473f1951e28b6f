//! Lead mapping: a row of the leads table becomes the `save_lead` payload.
//!
//! The payload is the documented shape and nothing else: eleven keys under
//! `data`, in order. `email` and `website` are strings (NULL → `""`), the
//! other text fields nullable strings (NULL → `null`), `score` an integer
//! (NULL → `0`). It is serialised once per change and shared by every webhook.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use reqwest::header::HeaderValue;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::change::{RowChange, SourceMessage};
use crate::delivery::{Dispatcher, Event};

use crate::config::ColumnsConfig;
use crate::source::pgoutput::{OldTuple, Relation, Value};
use crate::source::prerequisites::KeyColumn;
use crate::source::replication::quote_identifier;

/// Payload fields in payload order.
const FIELDS: [&str; 11] = [
    "email",
    "company",
    "first_name",
    "last_name",
    "phone",
    "website",
    "position",
    "twitter",
    "linkedin",
    "notes",
    "score",
];
const SCORE: usize = 10;
/// Integer types `score` accepts: smallint, integer, bigint.
pub(crate) const INTEGER_TYPES: [u32; 3] = [21, 23, 20];

/// Errors that stop the lead stage (and so the session, which reconnects).
#[derive(Debug, thiserror::Error)]
pub(crate) enum LeadError {
    #[error("a change arrived before the table's Relation message")]
    NoRelation,
    #[error("a delivery worker stopped")]
    Downstream,
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
        // Digits, `/` and `-` only: always a valid header value.
        let id =
            HeaderValue::from_str(&change.id.to_string()).map_err(|_| LeadError::Downstream)?;
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

/// How the configured fields land on the table as the stream last described it.
#[derive(Debug)]
pub(crate) struct LeadMapping {
    /// Column name per payload field; `None` = declared absent.
    names: [Option<String>; 11],
    /// Primary key, from the catalog (pgoutput's key flags mean "replica
    /// identity", which is every column under REPLICA IDENTITY FULL).
    key: Vec<KeyColumn>,
    /// Position in the tuple per field, from the latest Relation message.
    positions: [Option<usize>; 11],
    /// Position in the tuple of each primary-key column.
    key_positions: Vec<Option<usize>>,
    /// Quoted, ready for SQL.
    table: String,
    described: bool,
}

impl LeadMapping {
    pub(crate) fn new(columns: &ColumnsConfig, key: Vec<KeyColumn>, table: String) -> Self {
        let names = columns
            .resolve()
            .map(|(_, column)| column.map(str::to_owned));
        LeadMapping {
            names,
            key,
            positions: [None; 11],
            key_positions: Vec::new(),
            table,
            described: false,
        }
    }

    /// Follows a Relation message. A mapped column that has gone (dropped
    /// mid-stream) is sent as its NULL value rather than stopping the
    /// stream; the warnings say so.
    pub(crate) fn describe(&mut self, relation: &Relation) -> Vec<String> {
        let position = |name: &str| relation.columns.iter().position(|c| c.name == name);
        let mut warnings = Vec::new();
        for (i, name) in self.names.iter().enumerate() {
            self.positions[i] = name.as_deref().and_then(|name| {
                let found = position(name);
                if found.is_none() {
                    warnings.push(format!(
                        "column {name:?} (payload field {}) is no longer in {}; sending it as its NULL value",
                        FIELDS[i], self.table
                    ));
                }
                found
            });
        }
        if let Some(at) = self.positions[SCORE] {
            let type_oid = relation.columns[at].type_oid;
            if !INTEGER_TYPES.contains(&type_oid) {
                warnings.push(format!(
                    "column {:?} (score) now has type oid {type_oid}, not an integer; values that do not parse as integers are sent as 0",
                    relation.columns[at].name
                ));
            }
        }
        self.key_positions = self.key.iter().map(|k| position(&k.name)).collect();
        self.described = true;
        warnings
    }

    /// The payload of a change made by transaction `xid`. Unchanged large
    /// values (`u` in the stream) are taken from the old tuple when the table
    /// has REPLICA IDENTITY FULL, else read from the table by primary key.
    pub(crate) async fn payload(
        &self,
        new: &[Value],
        old: Option<&OldTuple>,
        xid: u32,
        sql: &Client,
    ) -> Result<Bytes, LeadError> {
        if !self.described {
            return Err(LeadError::NoRelation);
        }
        let mut values: [FieldValue<'_>; 11] = std::array::from_fn(|i| self.value(i, new, old));
        let missing: Vec<usize> = (0..11)
            .filter(|&i| matches!(values[i], FieldValue::Unchanged))
            .collect();
        let fetched = if missing.is_empty() {
            Vec::new()
        } else {
            self.fetch_current(&missing, new, xid, sql).await?
        };
        for (&i, value) in missing.iter().zip(&fetched) {
            values[i] = match value {
                Some(text) => FieldValue::Text(Cow::Borrowed(text.as_bytes())),
                None => FieldValue::Null,
            };
        }
        Ok(render(&values))
    }

    fn value<'a>(
        &self,
        field: usize,
        new: &'a [Value],
        old: Option<&'a OldTuple>,
    ) -> FieldValue<'a> {
        let Some(at) = self.positions[field] else {
            return FieldValue::Null;
        };
        match new.get(at) {
            None | Some(Value::Null) => FieldValue::Null,
            Some(Value::Text(bytes) | Value::Binary(bytes)) => {
                FieldValue::Text(Cow::Borrowed(bytes))
            }
            Some(Value::UnchangedToast) => match old {
                Some(OldTuple::Full(tuple)) => match tuple.values.get(at) {
                    Some(Value::Text(bytes) | Value::Binary(bytes)) => {
                        FieldValue::Text(Cow::Borrowed(bytes))
                    }
                    Some(Value::Null) => FieldValue::Null,
                    _ => FieldValue::Unchanged,
                },
                _ => FieldValue::Unchanged,
            },
        }
    }

    /// Identifies the lead for ordering: a hash of its primary-key values
    /// (text form, as streamed). Changes of one lead share it.
    pub(crate) fn lead_key(&self, new: &[Value]) -> u64 {
        let mut hasher = std::hash::DefaultHasher::new();
        for position in &self.key_positions {
            match position.and_then(|at| new.get(at)) {
                Some(Value::Text(bytes) | Value::Binary(bytes)) => bytes.hash(&mut hasher),
                _ => 0u8.hash(&mut hasher),
            }
        }
        hasher.finish()
    }

    /// Reads the current values of `fields` for the row that transaction
    /// `xid` changed. The row may have changed again since: its current
    /// values are all there is to read. `leadhook_toast_reads_total` says
    /// which happened: `exact` (the row is still the version `xid` wrote),
    /// `newer` (a later transaction changed it), `deleted` (it is gone, so
    /// the fields are sent as NULL and a warning says so).
    async fn fetch_current(
        &self,
        fields: &[usize],
        new: &[Value],
        xid: u32,
        sql: &Client,
    ) -> Result<Vec<Option<String>>, LeadError> {
        let mut key_values = Vec::with_capacity(self.key.len());
        for position in &self.key_positions {
            match position.and_then(|at| new.get(at)) {
                Some(Value::Text(bytes)) => {
                    key_values.push(String::from_utf8_lossy(bytes).into_owned())
                }
                _ => {
                    tracing::warn!(table = %self.table, "cannot read unchanged large values: the primary key is not in the change");
                    return Ok(vec![None; fields.len()]);
                }
            }
        }
        let query = self.lookup_query(fields);
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = key_values
            .iter()
            .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let toast_reads = |result: &'static str| {
            metrics::counter!("leadhook_toast_reads_total", "result" => result).increment(1)
        };
        match sql.query_opt(&query, &params).await? {
            Some(row) => {
                let version: String = row.get(0);
                toast_reads(if version == xid.to_string() {
                    "exact"
                } else {
                    "newer"
                });
                Ok((1..=fields.len())
                    .map(|i| row.get::<_, Option<String>>(i))
                    .collect())
            }
            None => {
                toast_reads("deleted");
                tracing::warn!(table = %self.table, "row was deleted before its unchanged large values could be read; sending them as NULL");
                Ok(vec![None; fields.len()])
            }
        }
    }

    fn lookup_query(&self, fields: &[usize]) -> String {
        let columns: Vec<String> = fields
            .iter()
            .filter_map(|&i| self.names[i].as_deref())
            .map(|name| format!("{}::text", quote_identifier(name)))
            .collect();
        let conditions: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(i, k)| {
                format!(
                    "{} = ${}::text::{}",
                    quote_identifier(&k.name),
                    i + 1,
                    k.type_name
                )
            })
            .collect();
        format!(
            "SELECT xmin::text, {} FROM {} WHERE {}",
            columns.join(", "),
            self.table,
            conditions.join(" AND ")
        )
    }
}

/// A lead as notify mode's trigger captured it: payload field → the column's
/// text, exactly as the replication stream would carry it.
#[derive(Debug, serde::Deserialize)]
struct CapturedLead {
    email: Option<String>,
    company: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    phone: Option<String>,
    website: Option<String>,
    position: Option<String>,
    twitter: Option<String>,
    linkedin: Option<String>,
    notes: Option<String>,
    score: Option<String>,
}

/// The payload of an outbox row's `lead` (JSON). Same rendering as the
/// stream, so the same row gives byte-identical payloads in both modes.
pub(crate) fn captured_payload(lead: &str) -> Result<Bytes, LeadError> {
    let lead: CapturedLead =
        serde_json::from_str(lead).map_err(|e| LeadError::Captured(e.to_string()))?;
    let fields = [
        lead.email,
        lead.company,
        lead.first_name,
        lead.last_name,
        lead.phone,
        lead.website,
        lead.position,
        lead.twitter,
        lead.linkedin,
        lead.notes,
        lead.score,
    ];
    let values = fields.map(|field| match field {
        Some(text) => FieldValue::Text(Cow::Owned(text.into_bytes())),
        None => FieldValue::Null,
    });
    Ok(render(&values))
}

/// A field's value before it is rendered.
#[derive(Debug)]
enum FieldValue<'a> {
    Null,
    Text(Cow<'a, [u8]>),
    /// Not in the stream (unchanged TOAST); filled in before rendering.
    Unchanged,
}

impl FieldValue<'_> {
    fn text(&self) -> Option<Cow<'_, str>> {
        match self {
            FieldValue::Text(bytes) => Some(String::from_utf8_lossy(bytes)),
            FieldValue::Null | FieldValue::Unchanged => None,
        }
    }
}

#[derive(Serialize)]
struct Payload<'a> {
    data: Lead<'a>,
}

/// Field order here is the payload's key order.
#[derive(Serialize)]
struct Lead<'a> {
    email: Cow<'a, str>,
    company: Option<Cow<'a, str>>,
    first_name: Option<Cow<'a, str>>,
    last_name: Option<Cow<'a, str>>,
    phone: Option<Cow<'a, str>>,
    website: Cow<'a, str>,
    position: Option<Cow<'a, str>>,
    twitter: Option<Cow<'a, str>>,
    linkedin: Option<Cow<'a, str>>,
    notes: Option<Cow<'a, str>>,
    score: i64,
}

fn render(values: &[FieldValue<'_>; 11]) -> Bytes {
    let text = |i: usize| values[i].text();
    let lead = Lead {
        email: text(0).unwrap_or_default(),
        company: text(1),
        first_name: text(2),
        last_name: text(3),
        phone: text(4),
        website: text(5).unwrap_or_default(),
        position: text(6),
        twitter: text(7),
        linkedin: text(8),
        notes: text(9),
        score: text(SCORE).and_then(|s| s.trim().parse().ok()).unwrap_or(0),
    };
    let mut out = Vec::with_capacity(256);
    // Serialising borrowed strings and integers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, &Payload { data: lead });
    Bytes::from(out)
}

#[cfg(test)]
mod tests;
