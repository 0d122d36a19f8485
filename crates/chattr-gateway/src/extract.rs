//! Request extractors: the authenticated caller and where a request comes from.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{AUTHORIZATION, USER_AGENT};
use axum::http::request::Parts;
use chattr_proto::auth::ClientInfo;
use chattr_proto::Principal;

use crate::{ApiError, GatewayState};

/// The caller, authenticated by `Authorization: Bearer <access token>`.
pub struct Caller(pub Principal);

impl FromRequestParts<GatewayState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &GatewayState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(ApiError::unauthorized)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(ApiError::unauthorized)?;
        let who = state.auth.authenticate(token.trim()).await?;
        Ok(Caller(who))
    }
}

/// The client's user agent and IP, for sessions and rate limits.
pub struct Client(pub ClientInfo);

impl FromRequestParts<GatewayState> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &GatewayState) -> Result<Self, Self::Rejection> {
        let user_agent = parts.headers.get(USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let forwarded = state
            .settings
            .trust_forwarded_for
            .then(|| parts.headers.get("x-forwarded-for"))
            .flatten()
            .and_then(|v| v.to_str().ok())
            // The rightmost address is the one our proxy appended; anything left of it was
            // sent by the client and could be forged to dodge per-IP limits.
            .and_then(|v| v.rsplit(',').next())
            .and_then(|ip| ip.trim().parse::<IpAddr>().ok());
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        Ok(Client(ClientInfo { user_agent, ip: forwarded.or(peer) }))
    }
}
