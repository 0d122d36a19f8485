//! `/v1/calls/…`: what clients need for WebRTC.

use axum::extract::State;
use axum::Json;
use chattr_api::v1::{ErrorBody, IceServerList};

use crate::extract::Caller;
use crate::{ApiError, GatewayState};

/// ICE servers for `RTCPeerConnection`, with TURN credentials minted for the caller and
/// valid for `ttl_secs`. Empty when the deployment has no TURN server.
#[utoipa::path(get, path = "/v1/calls/ice-servers", tag = "calls", security(("bearer" = [])),
    responses((status = 200, body = IceServerList), (status = 401, body = ErrorBody)))]
pub async fn ice_servers(
    State(state): State<GatewayState>,
    Caller(who): Caller,
) -> Result<Json<IceServerList>, ApiError> {
    Ok(Json(state.video.ice_servers(who).await?))
}
