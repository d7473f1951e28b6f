//! leadhook: a sidecar that turns committed INSERTs and UPDATEs of a
//! PostgreSQL leads table into `save_lead` webhooks, at-least-once.
//!
//! # Layout
//!
//! Data flows one way: source → changes → lead payload → delivery → checkpoint.
//!
//! - [`config`]: `sidecar.toml` and `LEADHOOK_…` overrides, strictly checked
//!   and parsed once into typed values.
//! - [`database`]: the database URL, TLS and the ordinary SQL connection.
//! - [`source`]: the replication stream. `source::replication` speaks the
//!   protocol, `source::pgoutput` decodes it (pure, no I/O),
//!   `source::prerequisites` checks and prepares the database and
//!   `source::slot` creates, watches and re-creates the slot. Notify mode:
//!   `source::outbox` (the trigger outbox as SQL) and `source::notify` (reading it).
//! - `change`: the row changes the source hands on, with their stable ids.
//! - `lead`: a row becomes the `save_lead` payload. `lead::field` is the one
//!   list of payload fields that the column mapping, the outbox trigger and
//!   the checks derive from.
//! - `delivery`: webhooks, HTTP, retries, signatures, ordered concurrency.
//! - [`dead_letter`]: changes a webhook gave up on, kept in the database.
//! - `checkpoint`: which WAL position may be confirmed to the server.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`sidecar`]: wires one session of the above and reconnects when it ends.
//! - `shutdown`: the stop request every loop of a session listens for.
//! - [`check`], [`setup`] and `demo`: the `leadhook check`, `leadhook setup` and
//!   `leadhook demo` commands. The demo runs on the `leadhook-testkit` crate
//!   (a private PostgreSQL and a receiver), behind the default `demo` feature.

pub mod admin;
pub mod check;
pub mod config;
pub mod database;
pub mod dead_letter;
#[cfg(feature = "demo")]
pub mod demo;
pub mod lsn;
pub mod setup;
pub mod sidecar;
pub mod source;

mod change;
mod checkpoint;
mod delivery;
mod field;
mod history;

/// `leadhook dead-letters replay`: re-delivery, so it lives with delivery.
pub use delivery::replay;
mod lead;
mod shutdown;
