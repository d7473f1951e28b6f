//! Dead letters: changes a webhook did not accept within its attempts (or
//! answered with a status listed as final). They are kept in
//! `<schema>.dead_letters` in the same database, so the stream can move on
//! without losing them; `leadhook dead-letters` lists and replays them.

mod list;
mod store;
#[cfg(test)]
mod tests;

use std::time::SystemTime;

use bytes::Bytes;

use crate::database::DatabaseError;
pub(crate) use crate::setup::objects::dead_letter_table as table;

pub use list::list;
pub(crate) use list::{select, write_table};
pub(crate) use store::DeadLetterStore;

/// One change a webhook gave up on.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetter {
    pub(crate) webhook: String,
    pub(crate) webhook_id: String,
    /// Exactly the body that was sent (text, so key order survives).
    pub(crate) payload: Bytes,
    pub(crate) attempts: u32,
    pub(crate) last_status: Option<u16>,
    pub(crate) last_error: String,
    pub(crate) first_attempt: SystemTime,
    pub(crate) last_attempt: SystemTime,
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error("{0}")]
    Sql(#[from] tokio_postgres::Error),
    #[error("writing the output: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(
        "there is no dead-letter table {0} yet: `leadhook run` creates it at startup (or see sql/setup.sql)"
    )]
    NoTable(String),
}
