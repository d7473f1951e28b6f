pub mod config;
pub mod lsn;
