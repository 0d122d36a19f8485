//! Typed errors across the hop. A service error becomes a gRPC status whose code is the
//! nearest gRPC code and whose metadata carries Chattr's stable code (`chattr-code`) and a
//! retry hint (`chattr-retry-after-ms`); the remote client turns it back into the same
//! error variant, so callers see exactly what they would see in one process.

use std::time::Duration;

use chattr_api::v1::codes;
use chattr_core::ValidationError;
use chattr_proto::auth::AuthError;
use chattr_proto::messaging::MessagingError;
use chattr_proto::video::VideoError;
use chattr_proto::ErrorInfo;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// Metadata key of the stable error code.
pub const CODE_KEY: &str = "chattr-code";
/// Metadata key of the retry hint, in milliseconds.
pub const RETRY_AFTER_KEY: &str = "chattr-retry-after-ms";

/// A service error as a status. Internal details stay in this process's log; the status
/// carries only what the edge may show (`public_message`).
pub fn to_status(err: &impl ErrorInfo) -> Status {
    let grpc = match err.http_status() {
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::AlreadyExists,
        429 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        _ => Code::Internal,
    };
    if grpc == Code::Internal {
        tracing::error!(error = %err, "service call failed");
    }
    let mut status = Status::new(grpc, err.public_message());
    let meta = status.metadata_mut();
    meta.insert(CODE_KEY, MetadataValue::from_static(err.code()));
    if let Some(after) = err.retry_after() {
        meta.insert(RETRY_AFTER_KEY, MetadataValue::from(after.as_millis() as u64));
    }
    status
}

/// What a status that came back from a remote service means.
#[derive(Debug)]
enum Remote<'a> {
    /// A Chattr error with its stable code and message.
    Chattr { code: &'static str, message: &'a str, retry_after: Option<Duration> },
    /// The call did not reach a healthy service, or timed out: retryable.
    Unavailable(String),
    /// Anything else (a bug, a protocol mismatch).
    Internal(String),
}

fn classify(status: &Status) -> Remote<'_> {
    let meta = status.metadata();
    let chattr_code = meta.get(CODE_KEY).and_then(|v| v.to_str().ok()).and_then(codes::known);
    match chattr_code {
        Some(code) => Remote::Chattr {
            code,
            message: status.message(),
            retry_after: meta
                .get(RETRY_AFTER_KEY)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .map(Duration::from_millis),
        },
        None => match status.code() {
            // Unknown without a Chattr code is tonic's word for a broken connection.
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                Remote::Unavailable(format!("{:?}: {}", status.code(), status.message()))
            }
            other => Remote::Internal(format!("{other:?}: {}", status.message())),
        },
    }
}

fn invalid(code: &'static str, message: &str) -> ValidationError {
    ValidationError { code, message: message.to_owned() }
}

/// A status from the auth service as the error the local service would have returned.
pub fn auth_error(status: &Status) -> AuthError {
    match classify(status) {
        Remote::Chattr { code, message, retry_after } => match code {
            codes::USERNAME_TAKEN => AuthError::UsernameTaken,
            codes::INVALID_CREDENTIALS => AuthError::InvalidCredentials,
            codes::UNAUTHORIZED => AuthError::Unauthorized,
            codes::INVALID_REFRESH_TOKEN => AuthError::InvalidRefreshToken,
            codes::NOT_FOUND => AuthError::NotFound,
            codes::RATE_LIMITED => AuthError::RateLimited { retry_after: retry_after.unwrap_or_default() },
            codes::UNAVAILABLE => AuthError::Unavailable(message.to_owned()),
            codes::INTERNAL => AuthError::Internal(format!("remote: {message}")),
            other => AuthError::Invalid(invalid(other, message)),
        },
        Remote::Unavailable(why) => AuthError::Unavailable(why),
        Remote::Internal(why) => AuthError::Internal(why),
    }
}

/// A status from the messaging service as the error the local service would have returned.
pub fn messaging_error(status: &Status) -> MessagingError {
    match classify(status) {
        Remote::Chattr { code, message, .. } => match code {
            codes::NOT_FOUND => MessagingError::NotFound,
            codes::FORBIDDEN => MessagingError::forbidden(message.to_owned()),
            codes::UNAVAILABLE => MessagingError::Unavailable(message.to_owned()),
            codes::INTERNAL => MessagingError::Internal(format!("remote: {message}")),
            other => MessagingError::Invalid(invalid(other, message)),
        },
        Remote::Unavailable(why) => MessagingError::Unavailable(why),
        Remote::Internal(why) => MessagingError::Internal(why),
    }
}

/// A status from the video service as the error the local service would have returned.
pub fn video_error(status: &Status) -> VideoError {
    match classify(status) {
        Remote::Chattr { code, message, retry_after } => match code {
            codes::RATE_LIMITED => VideoError::RateLimited { retry_after: retry_after.unwrap_or_default() },
            codes::NOT_FOUND => VideoError::NotFound,
            codes::FORBIDDEN => VideoError::Forbidden(message.to_owned()),
            codes::BUSY => VideoError::Busy,
            // The cap is in the message ("… (4 participants at most)").
            codes::CALL_FULL => VideoError::Full(
                message
                    .rsplit('(')
                    .next()
                    .and_then(|rest| rest.split(' ').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0),
            ),
            codes::UNAVAILABLE => VideoError::Unavailable(message.to_owned()),
            codes::INTERNAL => VideoError::Internal(format!("remote: {message}")),
            _ => VideoError::Invalid(message.to_owned()),
        },
        Remote::Unavailable(why) => VideoError::Unavailable(why),
        Remote::Internal(why) => VideoError::Internal(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_auth(err: AuthError) -> AuthError {
        auth_error(&to_status(&err))
    }

    fn round_trip_messaging(err: MessagingError) -> MessagingError {
        messaging_error(&to_status(&err))
    }

    #[test]
    fn auth_errors_keep_code_and_hint() {
        let cases: [fn() -> AuthError; 7] = [
            || AuthError::UsernameTaken,
            || AuthError::InvalidCredentials,
            || AuthError::Unauthorized,
            || AuthError::InvalidRefreshToken,
            || AuthError::NotFound,
            || AuthError::Invalid(invalid(codes::INVALID_USERNAME, "bad name")),
            || AuthError::Unavailable("x".into()),
        ];
        for make in cases {
            let (err, back) = (make(), round_trip_auth(make()));
            assert_eq!(back.code(), err.code());
            assert_eq!(back.http_status(), err.http_status());
        }
        let limited = round_trip_auth(AuthError::RateLimited { retry_after: Duration::from_millis(1500) });
        assert_eq!(limited.retry_after(), Some(Duration::from_millis(1500)));
        let invalid = round_trip_auth(AuthError::Invalid(invalid(codes::INVALID_PASSWORD, "too short")));
        assert_eq!(invalid.public_message(), "too short");
    }

    #[test]
    fn internal_details_do_not_cross() {
        let status = to_status(&AuthError::Internal("db password is hunter2".into()));
        assert!(!status.message().contains("hunter2"));
        assert_eq!(round_trip_auth(AuthError::Internal("x".into())).code(), codes::INTERNAL);
    }

    #[test]
    fn messaging_errors_keep_code_and_reason() {
        let back = round_trip_messaging(MessagingError::forbidden("only the group owner can do this"));
        assert_eq!(back.code(), codes::FORBIDDEN);
        assert_eq!(back.public_message(), "only the group owner can do this");
        assert_eq!(round_trip_messaging(MessagingError::NotFound).code(), codes::NOT_FOUND);
        let body = round_trip_messaging(MessagingError::Invalid(invalid(codes::INVALID_BODY, "empty")));
        assert_eq!(body.code(), codes::INVALID_BODY);
    }

    #[test]
    fn video_errors_keep_code_and_cap() {
        let full = video_error(&to_status(&VideoError::Full(4)));
        assert_eq!(full.public_message(), VideoError::Full(4).public_message());
        assert_eq!(video_error(&to_status(&VideoError::Busy)).code(), codes::BUSY);
        let limited =
            video_error(&to_status(&VideoError::RateLimited { retry_after: Duration::from_secs(7) }));
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(7)));
        let forbidden = video_error(&to_status(&VideoError::Forbidden("not in this call".into())));
        assert_eq!(
            (forbidden.code(), forbidden.public_message().as_str()),
            (codes::FORBIDDEN, "not in this call")
        );
        assert_eq!(
            video_error(&to_status(&VideoError::Invalid("sdp".into()))).code(),
            codes::INVALID_ARGUMENT
        );
    }

    #[test]
    fn transport_failures_are_unavailable() {
        assert_eq!(auth_error(&Status::unavailable("connection refused")).code(), codes::UNAVAILABLE);
        assert_eq!(messaging_error(&Status::deadline_exceeded("slow")).code(), codes::UNAVAILABLE);
        assert_eq!(messaging_error(&Status::unimplemented("old server")).code(), codes::INTERNAL);
    }
}
