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

/// Records one call.
pub(crate) fn observe(name: &'static str, method: String, code: tonic::Code, started: Instant) {
    metrics::histogram!(name, "method" => method, "code" => code_name(code))
        .record(started.elapsed().as_secs_f64());
}

/// `auth.login` for the gRPC path `/chattr.v1.Auth/Login`: the same label the client side
/// uses (service, then the method in snake case).
pub(crate) fn method_label(path: &str) -> String {
    let (service, method) = path.trim_start_matches('/').rsplit_once('/').unwrap_or(("", path));
    let service = service.rsplit('.').next().unwrap_or(service).to_ascii_lowercase();
    let mut label = String::with_capacity(service.len() + method.len() + 4);
    label.push_str(&service);
    label.push('.');
    for (i, c) in method.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                label.push('_');
            }
            label.push(c.to_ascii_lowercase());
        } else {
            label.push(c);
        }
    }
    label
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
        assert_eq!(method_label("nonsense"), ".nonsense");
    }
}
