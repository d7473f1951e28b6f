//! End-to-end tests: the real `leadhook` binary against a real PostgreSQL and
//! a real HTTP receiver. One test binary, so the tests that can share one
//! cluster do (each with its own database, slot and publication).

mod support;

mod backfill;
mod check;
mod circuit;
mod config_errors;
mod dead_letters;
mod delivery;
mod demo;
mod engine;
mod failover;
mod filters;
mod histories;
mod http2;
mod memory;
mod notify;
mod observability;
mod operations;
mod partitions;
mod pauses;
mod payload;
mod recovery;
mod registry;
mod reload;
mod scale;
mod shards;
mod slots;
mod spool;
mod status_page;
mod tls;
mod transport;
mod webhooks_test;
