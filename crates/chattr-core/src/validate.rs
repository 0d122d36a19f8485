//! Values that can only be built through `parse`, so an invalid one cannot travel.

use chattr_api::v1::codes;

/// Why a value was rejected; `code` is the stable wire code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    /// Stable error code from [`chattr_api::v1::codes`].
    pub code: &'static str,
    /// Human-readable reason.
    pub message: String,
}

impl ValidationError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// A username: 3–32 characters of `[a-z0-9_.-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    /// Parses a username, rejecting anything outside `[a-z0-9_.-]{3,32}`.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let ok_len = (3..=32).contains(&raw.len());
        let ok_chars = raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
        if ok_len && ok_chars {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ValidationError::new(
                codes::INVALID_USERNAME,
                "username must be 3-32 characters of a-z, 0-9, '_', '.', '-'",
            ))
        }
    }

    /// The username as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password: at least 8 characters, at most 1024 bytes (hashing cost is bounded).
pub struct Password(String);

impl Password {
    /// Parses a password for signup.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        if raw.chars().count() < 8 {
            return Err(ValidationError::new(
                codes::INVALID_PASSWORD,
                "password must be at least 8 characters",
            ));
        }
        if raw.len() > 1024 {
            return Err(ValidationError::new(codes::INVALID_PASSWORD, "password must be at most 1024 bytes"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The password as text (only for hashing).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A message body: 1..=max characters, not only whitespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBody(String);

impl MessageBody {
    /// Parses a body against the configured maximum length in characters.
    pub fn parse(raw: &str, max_chars: usize) -> Result<Self, ValidationError> {
        if raw.trim().is_empty() {
            return Err(ValidationError::new(codes::INVALID_BODY, "message body must not be empty"));
        }
        // Count only as far as needed: a huge body costs no more than max_chars steps.
        if raw.chars().nth(max_chars).is_some() {
            return Err(ValidationError::new(
                codes::INVALID_BODY,
                format!("message body must be at most {max_chars} characters"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The body as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Takes the text out.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// The client's idempotency key for a send: 1–64 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMsgId(String);

impl ClientMsgId {
    /// Parses a client message id.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        if (1..=64).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ValidationError::new(
                codes::INVALID_ARGUMENT,
                "client_msg_id must be 1-64 printable ASCII characters",
            ))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A group title: 1–100 characters after trimming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title(String);

impl Title {
    /// Parses a title.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.chars().nth(100).is_some() {
            return Err(ValidationError::new(codes::INVALID_ARGUMENT, "title must be 1-100 characters"));
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The title as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(Username::parse("al").is_err());
        assert!(Username::parse("alice").is_ok());
        assert!(Username::parse("a.l_i-ce9").is_ok());
        assert!(Username::parse("Alice").is_err());
        assert!(Username::parse("ali ce").is_err());
        assert!(Username::parse("élan").is_err());
        assert!(Username::parse(&"a".repeat(32)).is_ok());
        assert!(Username::parse(&"a".repeat(33)).is_err());
    }

    #[test]
    fn passwords_and_bodies() {
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse("12345678").is_ok());
        assert_eq!(format!("{:?}", Password::parse("12345678").unwrap()), "Password(***)");
        assert!(MessageBody::parse("", 10).is_err());
        assert!(MessageBody::parse("  \n", 10).is_err());
        assert!(MessageBody::parse("héllo", 5).is_ok());
        assert!(MessageBody::parse("héllo!", 5).is_err());
        assert!(ClientMsgId::parse("").is_err());
        assert!(ClientMsgId::parse("abc-1").is_ok());
        assert!(ClientMsgId::parse(&"x".repeat(65)).is_err());
        assert!(Title::parse("  ").is_err());
        assert_eq!(Title::parse(" team ").unwrap().as_str(), "team");
    }
}
