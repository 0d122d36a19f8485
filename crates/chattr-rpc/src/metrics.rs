//! gRPC metrics (docs/metrics.md): the time of every call on both sides, by method and
//! status code.

use std::time::Instant;

/// Server-side handling time, by `method` and `code`.
pub const SERVER_SECONDS: &str = "chattr_rpc_server_seconds";
/// Client-side call time (failover and network included), by `method` and `code`.
pub const CLIENT_SECONDS: &str = "chattr_rpc_client_seconds";

/// Describes the metrics.
pub fn describe() {
    use metrics::Unit::Seconds;
    metrics::describe_histogram!(SERVER_SECONDS, Seconds, "gRPC server handling time, by method and code");
    metrics::describe_histogram!(CLIENT_SECONDS, Seconds, "gRPC client call time, by method and code");
}

/// Times one call from its creation; records it with its code when finished, or as
/// `CANCELLED` when dropped before (a caller's deadline, a reset stream): the slowest calls
/// must not go missing from the histograms.
pub(crate) struct Timed {
    name: &'static str,
    method: &'static str,
    started: Instant,
    recorded: bool,
}

impl Timed {
    pub(crate) fn start(name: &'static str, method: &'static str) -> Self {
        Self { name, method, started: Instant::now(), recorded: false }
    }

    pub(crate) fn finish(mut self, code: tonic::Code) {
        self.record(code);
    }

    fn record(&mut self, code: tonic::Code) {
        self.recorded = true;
        metrics::histogram!(self.name, "method" => self.method, "code" => code_name(code))
            .record(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        if !self.recorded {
            self.record(tonic::Code::Cancelled);
        }
    }
}

/// Every method of the `chattr.v1` services: its gRPC path and its label (the service,
/// then the method in snake case, as the client stubs name it). A test checks it against
/// the `.proto` files.
const METHODS: &[(&str, &str)] = &[
    ("/chattr.v1.Auth/Signup", "auth.signup"),
    ("/chattr.v1.Auth/Login", "auth.login"),
    ("/chattr.v1.Auth/Refresh", "auth.refresh"),
    ("/chattr.v1.Auth/Logout", "auth.logout"),
    ("/chattr.v1.Auth/Authenticate", "auth.authenticate"),
    ("/chattr.v1.Auth/AuthenticateMany", "auth.authenticate_many"),
    ("/chattr.v1.Auth/CheckSession", "auth.check_session"),
    ("/chattr.v1.Auth/CheckSessions", "auth.check_sessions"),
    ("/chattr.v1.Auth/Touch", "auth.touch"),
    ("/chattr.v1.Auth/GetUser", "auth.get_user"),
    ("/chattr.v1.Auth/GetUsers", "auth.get_users"),
    ("/chattr.v1.Auth/Sessions", "auth.sessions"),
    ("/chattr.v1.Auth/RevokeSession", "auth.revoke_session"),
    ("/chattr.v1.Auth/RevokeOtherSessions", "auth.revoke_other_sessions"),
    ("/chattr.v1.Auth/SearchUsers", "auth.search_users"),
    ("/chattr.v1.Messaging/CreateConversation", "messaging.create_conversation"),
    ("/chattr.v1.Messaging/ListConversations", "messaging.list_conversations"),
    ("/chattr.v1.Messaging/GetConversation", "messaging.get_conversation"),
    ("/chattr.v1.Messaging/Rename", "messaging.rename"),
    ("/chattr.v1.Messaging/AddMember", "messaging.add_member"),
    ("/chattr.v1.Messaging/RemoveMember", "messaging.remove_member"),
    ("/chattr.v1.Messaging/Send", "messaging.send"),
    ("/chattr.v1.Messaging/History", "messaging.history"),
    ("/chattr.v1.Messaging/Edit", "messaging.edit"),
    ("/chattr.v1.Messaging/Delete", "messaging.delete"),
    ("/chattr.v1.Messaging/MarkRead", "messaging.mark_read"),
    ("/chattr.v1.Messaging/Typing", "messaging.typing"),
    ("/chattr.v1.Messaging/LatestSeqs", "messaging.latest_seqs"),
    ("/chattr.v1.Messaging/GetPresence", "messaging.get_presence"),
    ("/chattr.v1.Messaging/PresenceUp", "messaging.presence_up"),
    ("/chattr.v1.Messaging/PresenceDown", "messaging.presence_down"),
    ("/chattr.v1.Messaging/Heartbeat", "messaging.heartbeat"),
    ("/chattr.v1.Messaging/PresenceDownMany", "messaging.presence_down_many"),
    ("/chattr.v1.Video/IceServers", "video.ice_servers"),
    ("/chattr.v1.Video/CallsOf", "video.calls_of"),
    ("/chattr.v1.Video/Start", "video.start"),
    ("/chattr.v1.Video/Answer", "video.answer"),
    ("/chattr.v1.Video/Decline", "video.decline"),
    ("/chattr.v1.Video/Leave", "video.leave"),
    ("/chattr.v1.Video/Media", "video.media"),
    ("/chattr.v1.Video/Signal", "video.signal"),
    ("/chattr.v1.Video/Keepalive", "video.keepalive"),
    ("/chattr.v1.Video/Disconnected", "video.disconnected"),
];

/// The label of the gRPC path `/chattr.v1.Auth/Login` (`auth.login`); `unknown` for a path
/// that is not a Chattr method, so a caller cannot make up label values.
pub(crate) fn method_label(path: &str) -> &'static str {
    METHODS.iter().find(|(p, _)| *p == path).map_or("unknown", |(_, label)| label)
}

/// The label of a client call: `service` (`auth`) and the stub's `method` (`login`).
pub(crate) fn client_label(service: &str, method: &str) -> &'static str {
    METHODS
        .iter()
        .find(|(_, label)| label.split_once('.') == Some((service, method)))
        .map_or("unknown", |(_, label)| label)
}

/// The status code's canonical name.
pub(crate) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_the_client_labels() {
        assert_eq!(method_label("/chattr.v1.Auth/Login"), "auth.login");
        assert_eq!(method_label("/chattr.v1.Messaging/MarkRead"), "messaging.mark_read");
        assert_eq!(method_label("/chattr.v1.Video/IceServers"), "video.ice_servers");
        assert_eq!(client_label("messaging", "mark_read"), "messaging.mark_read");
        for made_up in ["nonsense", "/chattr.v1.Auth/Login2", "/x.Y/z", ""] {
            assert_eq!(method_label(made_up), "unknown", "{made_up:?}");
        }
    }

    #[test]
    fn every_method_of_the_protos_has_a_label() {
        let protos = [
            include_str!("../proto/chattr/v1/auth.proto"),
            include_str!("../proto/chattr/v1/messaging.proto"),
            include_str!("../proto/chattr/v1/video.proto"),
        ];
        let mut found = 0;
        for proto in protos {
            let mut service = "";
            for line in proto.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("service ") {
                    service = rest.split_whitespace().next().unwrap_or_default();
                } else if let Some(rest) = line.strip_prefix("rpc ") {
                    let method = rest.split('(').next().unwrap_or_default();
                    let path = format!("/chattr.v1.{service}/{method}");
                    assert_ne!(method_label(&path), "unknown", "{path} has no label");
                    found += 1;
                }
            }
        }
        assert_eq!(found, METHODS.len(), "METHODS lists a method the protos do not have");
    }
}
