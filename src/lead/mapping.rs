//! How the configured fields land on the table, and reading back the
//! values a change did not carry (unchanged TOAST).

use std::borrow::Cow;

use bytes::Bytes;
use tokio_postgres::Client;

use super::LeadError;
use super::payload::{FieldValue, render};
use crate::change::row::{OldTuple, Relation, Value};
use crate::field::{ColumnMap, Field, FieldMap};
use crate::setup::table::KeyColumn;
use postgres_protocol::escape::escape_identifier;

/// How the configured fields land on the table as the stream last described it.
#[derive(Debug)]
pub(crate) struct LeadMapping {
    /// Where each field is read from.
    columns: ColumnMap,
    /// Primary key, from the catalog (pgoutput's key flags mean "replica
    /// identity", which is every column under REPLICA IDENTITY FULL).
    key: Vec<KeyColumn>,
    /// Position in the tuple per field, from the latest Relation message.
    positions: FieldMap<Option<usize>>,
    /// Position in the tuple of each primary-key column.
    key_positions: Vec<Option<usize>>,
    /// Every column's name, in tuple order: what webhook filters read.
    names: Vec<String>,
    /// Quoted, ready for SQL.
    table: String,
    described: bool,
}

impl LeadMapping {
    pub(crate) fn new(columns: &ColumnMap, key: Vec<KeyColumn>, table: String) -> Self {
        LeadMapping {
            columns: columns.clone(),
            key,
            positions: FieldMap::from_fn(|_| None),
            key_positions: Vec::new(),
            names: Vec::new(),
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
        for (field, name) in self.columns.iter() {
            self.positions[field] = name.and_then(|name| {
                let found = position(name);
                if found.is_none() {
                    warnings.push(format!(
                        "column {name:?} (payload field {field}) is no longer in {}; sending it as its NULL value",
                        self.table
                    ));
                }
                found
            });
        }
        for (field, at) in self.positions.iter() {
            let Some(column) = at.and_then(|at| relation.columns.get(at)) else {
                continue;
            };
            // Only an integer field can refuse a type.
            if !field.kind().accepts(column.type_oid) {
                warnings.push(format!(
                    "column {:?} ({field}) now has type oid {}, not an integer; values that do not parse as integers are sent as 0",
                    column.name, column.type_oid
                ));
            }
        }
        self.key_positions = self.key.iter().map(|k| position(&k.name)).collect();
        self.names = relation.columns.iter().map(|c| c.name.clone()).collect();
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
        let mut values = FieldMap::from_fn(|field| self.value(field, new, old));
        let missing: Vec<Field> = values
            .iter()
            .filter(|(_, value)| matches!(value, FieldValue::Unchanged))
            .map(|(field, _)| field)
            .collect();
        let fetched = if missing.is_empty() {
            Vec::new()
        } else {
            self.fetch_current(&missing, new, xid, sql).await?
        };
        for (&field, value) in missing.iter().zip(&fetched) {
            values[field] = match value {
                Some(text) => FieldValue::Text(Cow::Borrowed(text.as_bytes())),
                None => FieldValue::Null,
            };
        }
        Ok(render(&values))
    }

    pub(super) fn value<'a>(
        &self,
        field: Field,
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

    /// Column `name` of a new row as text, for webhook filters: `None` for
    /// NULL, a column the table does not have, and a large value the change
    /// did not carry (unchanged TOAST; filter columns are small in practice).
    pub(crate) fn column_text<'a>(&self, new: &'a [Value], name: &str) -> Option<&'a str> {
        let at = self.names.iter().position(|n| n == name)?;
        match new.get(at)? {
            Value::Text(bytes) => std::str::from_utf8(bytes).ok(),
            _ => None,
        }
    }

    /// Identifies the lead for ordering: a hash of its primary-key values
    /// (text form, as streamed). Changes of one lead share it.
    pub(crate) fn lead_key(&self, new: &[Value]) -> u64 {
        crate::change::lead_key(self.key_positions.iter().map(|position| {
            match position.and_then(|at| new.get(at)) {
                Some(Value::Text(bytes) | Value::Binary(bytes)) => Some(bytes.as_ref()),
                _ => None,
            }
        }))
    }

    /// Reads the current values of `fields` for the row that transaction
    /// `xid` changed. The row may have changed again since: its current
    /// values are all there is to read. `leadhook_toast_reads_total` says
    /// which happened: `exact` (the row is still the version `xid` wrote),
    /// `newer` (a later transaction changed it), `deleted` (it is gone, so
    /// the fields are sent as NULL and a warning says so).
    async fn fetch_current(
        &self,
        fields: &[Field],
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

    pub(super) fn lookup_query(&self, fields: &[Field]) -> String {
        let columns: Vec<String> = fields
            .iter()
            .filter_map(|&field| self.columns.column(field))
            .map(|name| format!("{}::text", escape_identifier(name)))
            .collect();
        let conditions: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(i, k)| {
                format!(
                    "{} = ${}::text::{}",
                    escape_identifier(&k.name),
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
