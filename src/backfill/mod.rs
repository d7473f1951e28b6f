//! Backfill: existing leads delivered as `save_lead`, through the same
//! delivery as live changes (payload, retries, spool, dead letters,
//! signatures), without ever sending a lead's older state after a newer
//! live change of it.
//!
//! # How a backfill stays consistent with the stream
//!
//! The watermark technique of Netflix's DBLog. For each batch, the reader
//! (in the instance that holds the slot) writes a *low* watermark into the
//! WAL (`pg_logical_emit_message`, in a transaction of its own), reads the
//! batch, and writes a *high* watermark. The stream brings the watermarks
//! back in commit order. Between them, the lead stage notes every lead a
//! live change (or delete) touched; at the high watermark those leads'
//! rows are dropped (the live change carries a state at least as new) and
//! the others are handed on *at the high watermark's place in the stream*.
//! The batch was read after the low watermark committed and before the
//! high one did, so a remaining row is the lead's state at that place: any
//! later live change of the lead comes after it in stream order, and so
//! in the lead's delivery lane. No lock is taken, and the role needs only
//! SELECT on the table.
//!
//! A batch's progress is recorded once every webhook has handled it (the
//! confirmed position passed the high watermark's commit). After a crash,
//! the run goes on from the last recorded batch; watermarks streamed again
//! are ignored (their rows died with the process), and that batch is read
//! again: at-least-once, with the same `webhook-id`s, `backfill-<run>-<key>`.
//!
//! - `runs`: the `backfills` table: filing, progress, status.
//! - `query`: the SQL of a batch, and the rows' ids.
//! - `reader`: the session stage that runs them.
//! - `commands`: `leadhook backfill`, `status` and `cancel`.
//!
//! The batch itself, and the watermarks that place it in the stream, are
//! what a source hands on: `change::backfill`. The leads that changed
//! between the watermarks are the lead stage's: `lead::window`.

mod commands;
mod query;
pub(crate) use query::ChunkQuery;
pub(crate) mod reader;
pub(crate) mod runs;

pub use commands::{BackfillArgs, BackfillCommandError, cancel, file_and_follow, status};
