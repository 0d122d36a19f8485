//! End-to-end tests: a whole Chattr server on port 0, driven through real sockets by the
//! Rust client. One test binary; modules by area.

mod cluster;
mod harness;

mod auth;
mod backends;
mod calls;
mod cli;
mod conversations;
mod delivery;
mod messages;
mod ops;
mod restart;
mod websocket;
