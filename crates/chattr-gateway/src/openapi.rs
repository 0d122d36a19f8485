//! The OpenAPI document of the REST API, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{auth, calls, conversations, messages, users};

#[derive(OpenApi)]
#[openapi(
    info(title = "Chattr API", version = "1", description = "REST API of Chattr. Real-time events use the WebSocket at /v1/ws; see docs/protocol.md."),
    paths(
        auth::signup, auth::login, auth::refresh, auth::logout, auth::sessions, auth::revoke_session,
        auth::revoke_other_sessions, users::search, users::presence, conversations::create, conversations::list,
        conversations::get, conversations::rename, conversations::add_member, conversations::remove_member,
        messages::history, messages::send, messages::edit, messages::delete, messages::mark_read, messages::typing,
        calls::ice_servers,
    ),
    components(schemas(
        chattr_api::v1::ClientFrame, chattr_api::v1::ServerFrame, chattr_api::v1::ConversationCursor,
        chattr_api::v1::Call, chattr_api::v1::CallParticipant, chattr_api::v1::Signal,
    )),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build(),
            ),
        );
    }
}

/// The OpenAPI document as JSON text.
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_else(|_| "{}".to_owned())
}
