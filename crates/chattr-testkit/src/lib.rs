//! Test support for Chattr: real backing services, started privately on free ports by the
//! tests themselves (never mocked, never skipped).
//!
//! - [`postgres::fresh_database_url`]: a new database on this process's PostgreSQL.
//! - [`redis::shared`] / [`redis::RedisServer`]: a private `redis-server`.
//! - [`kafka::shared`] / [`kafka::KafkaServer`]: a private `tansu` Kafka-protocol broker.
//! - [`coturn::TurnServer`]: a private coturn TURN server (TURN REST API mode).
//! - [`process::Supervised`]: the project's own binaries as supervised processes.

pub mod coturn;
pub mod kafka;
pub mod postgres;
pub mod process;
pub mod prometheus;
pub mod redis;
