//! leadhook: a sidecar that turns committed INSERTs and UPDATEs of a
//! PostgreSQL leads table into `save_lead` webhooks, at-least-once.
//!
//! # Layout
//!
//! Data flows one way, and so do the imports: each stage knows the one it
//! hands on to, never the one before it. Every stage reports to
//! `checkpoint`, the hub that decides which WAL position may be confirmed.
//!
//! ```text
//!   backfill ─┐
//!   source ──► change ──► lead ──► delivery ──► dead_letter
//!      │          │         │         └──► spool ──┘ (and back)
//!      └──────────┴─────────┴──────────┴──► checkpoint
//! ```
//!
//! The pipeline, in the order data passes through it:
//! - [`source`]: where changes come from. `source::replication` speaks the
//!   streaming protocol (`frame` is pure parsing; `transport`, `auth` and
//!   `connect` make the connection, as tokio-postgres splits it),
//!   `source::pgoutput` decodes the stream (pure, no I/O), `source::slot`
//!   creates, watches and re-creates the slot (and recovers a lost one's
//!   gap, and makes it a failover slot on PostgreSQL 17). Notify mode's
//!   `source::notify` reads the trigger outbox instead.
//! - [`backfill`]: existing leads, read in batches beside the stream and
//!   placed in it between watermarks (DBLog), so a backfilled state never
//!   follows a newer live change; `leadhook backfill` files the runs.
//! - `change`: what the sources hand on, with stable ids: row changes
//!   (and the row data in `change::row`), leads the trigger captured, or a
//!   backfill's batch and its watermarks (`change::backfill`).
//! - `lead`: the stage where both modes meet: a change becomes the
//!   `save_lead` payload (`mapping` finds the fields in a row and reads
//!   unchanged large values back; `payload` writes the bytes, pure;
//!   `window` drops backfilled rows a live change superseded).
//! - `delivery`: webhooks, HTTP, retries, signatures, ordered concurrency
//!   per webhook (`lanes`), the circuit breaker and adaptive concurrency
//!   (`gate`); `delivery::spool` parks a failing webhook's backlog in the
//!   database so the slot moves on, and drains it back;
//!   `delivery::transport` holds each webhook's own connections (hyper's
//!   `client::conn`, reqwest only behind a proxy); `delivery::replay` sends dead letters again; `delivery::probe` sends
//!   one test event (`leadhook webhooks test`), with the lead stage's sample
//!   payload: a command, not a stage, and the one import against the flow.
//! - [`dead_letter`]: changes a webhook gave up on, kept in the database.
//! - `checkpoint`: the hub above: which changes every webhook has handled.
//!
//! Beside the pipeline, what says where it delivers:
//! - [`registry`]: the webhooks wanted now, kept current while running:
//!   the config file again on SIGHUP, the `[registry]` table's rows
//!   (untrusted: checked, private networks refused by `delivery::guard`),
//!   the durable pauses, the status table, and `leadhook webhooks list`,
//!   `test`, `pause` and `resume`. The sidecar restarts its session when
//!   the webhooks change; a pause only switches a webhook to the spool.
//!
//! What the pipeline stands on (these import no stage):
//! - [`config`]: `sidecar.toml` and `LEADHOOK_…` overrides, strictly checked
//!   and parsed once into typed values.
//! - `field`: the eleven payload fields; every list of fields (column
//!   mapping, payload, outbox trigger, checks) derives from it.
//! - [`database`]: the database URL, TLS and the ordinary SQL connection.
//! - [`setup`]: the objects leadhook needs in the database, in one place:
//!   the prerequisites of both modes, the publication, leadhook's own tables
//!   (`setup::objects`), the outbox trigger, and the `leadhook setup` command.
//! - [`lsn`] and `history`: WAL positions, and which server history they
//!   belong to.
//! - `shutdown`: the stop request every loop of a session listens for.
//! - `memory`: the byte budget every stage's changes are held under.
//! - [`admin`]: the status page (`/`) and `/api/status`, from a snapshot
//!   the sidecar publishes; `/metrics`, `/healthz`, `/readyz`.
//!
//! And what runs it all:
//! - [`sidecar`]: wires one session of the pipeline and reconnects when it ends.
//! - [`check`] and `demo`: the `leadhook check` and `leadhook demo` commands.
//!   The demo runs on the `leadhook-testkit` crate (a private PostgreSQL and
//!   a receiver), behind the default `demo` feature.
//!
//! The binary (`src/main.rs`) is the command line: it parses arguments and
//! calls into these modules.

pub mod backfill;
mod source;

mod change;
mod checkpoint;
pub mod dead_letter;
mod delivery;
mod lead;

mod admin;
pub mod config;
mod database;
mod field;
mod history;
mod lsn;
mod memory;
pub mod registry;
pub mod setup;
mod shutdown;

pub mod check;
#[cfg(feature = "demo")]
pub mod demo;
/// The fuzz targets' entry points (`fuzz/`); not an API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod sidecar;

/// `leadhook webhooks test`: one test event, sent as deliveries are.
pub use delivery::probe;
/// `leadhook dead-letters replay`: re-delivery, so it lives with delivery.
pub use delivery::replay;
