//! The leads table as the catalog describes it, beyond what config says:
//! its primary key, which reading a row back and the outbox trigger use.

/// A primary-key column: reading a row back needs its name and SQL type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyColumn {
    pub(crate) name: String,
    pub(crate) type_name: String,
}
