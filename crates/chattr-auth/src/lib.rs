//! The auth service: signup, login, token refresh with rotation and reuse detection,
//! sessions per device, login rate limits. Implements [`chattr_proto::auth::AuthService`].

pub mod metrics;
mod password;
mod service;
mod settings;
mod tokens;

pub use service::Auth;
pub use settings::AuthSettings;
pub use tokens::TokenKeys;
