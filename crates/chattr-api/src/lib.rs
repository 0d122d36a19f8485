//! Public wire types of Chattr: REST request/response bodies and WebSocket frames.
//!
//! This crate is a leaf (serde only) so the server and every client compile against the
//! same definitions; a protocol change that breaks clients fails to compile. Types are
//! versioned by module (`v1`).

pub mod v1;
