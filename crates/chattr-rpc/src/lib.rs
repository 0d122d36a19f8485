//! Chattr's internal gRPC (tonic): the auth and messaging services served over the network
//! ([`server`]), and remote clients that implement the same service traits ([`remote`]), so
//! a gateway cannot tell a remote service from an in-process one. Errors keep their stable
//! codes across the hop ([`status`]). The `.proto` files in `proto/` are compiled by
//! protox at build time: no system `protoc` is needed.

pub mod convert;
pub mod metrics;
pub mod remote;
pub mod server;
pub mod status;

/// Generated protobuf messages and tonic stubs (package `chattr.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("chattr.v1");
}

pub use remote::{RemoteAuth, RemoteMessaging, RemoteSettings, RemoteVideo};
pub use server::{serve, Services};
