//! The row data a change carries, as the decoder produces it and the lead
//! stage reads it: a table's description and its rows' values.

use bytes::Bytes;

/// Schema of a table; sent before its first change in a session and again
/// whenever it changes, so row messages only carry the relation id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relation {
    pub(crate) id: u32,
    /// Empty for `pg_catalog`.
    pub(crate) namespace: String,
    pub(crate) name: String,
    /// `relreplident`: `d`efault, `n`othing, `f`ull or `i`ndex.
    pub(crate) replica_identity: u8,
    pub(crate) columns: Vec<Column>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    /// Part of the replica identity (every column under `REPLICA IDENTITY FULL`).
    pub(crate) is_key: bool,
    pub(crate) name: String,
    pub(crate) type_oid: u32,
    /// `atttypmod`; -1 when the type has none.
    pub(crate) type_modifier: i32,
}

/// The old row image; which one depends on the table's replica identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OldTuple {
    /// `K`: only the replica identity columns are meaningful, the rest are `Null`.
    Key(Tuple),
    /// `O`: the whole old row (`REPLICA IDENTITY FULL`).
    Full(Tuple),
}

impl OldTuple {
    /// The values, one per column (either image has the key's).
    pub(crate) fn tuple(&self) -> &Tuple {
        match self {
            OldTuple::Key(tuple) | OldTuple::Full(tuple) => tuple,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tuple {
    /// One per column of the relation, in column order.
    pub(crate) values: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Null,
    /// A TOASTed value the change did not touch: the server does not resend
    /// it, so the caller must keep the previous value or skip the column.
    UnchangedToast,
    /// Text output format; left as bytes because the caller decides about UTF-8.
    Text(Bytes),
    /// Binary format, only sent when the `binary` option is on.
    Binary(Bytes),
}
