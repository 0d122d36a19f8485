//! Test support for Chattr: real backing services, started privately on free ports by the
//! tests themselves (never mocked, never skipped).
//!
//! - [`postgres::fresh_database_url`]: a new database on this process's PostgreSQL.
//! - [`redis::shared`] / [`redis::RedisServer`]: a private `redis-server`.
//! - [`process::Supervised`]: the project's own binaries as supervised processes.

pub mod postgres;
pub mod process;
pub mod redis;
