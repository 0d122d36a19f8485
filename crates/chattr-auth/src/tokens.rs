//! Access tokens (HS256 JWTs carrying user and session) and opaque refresh tokens
//! (`<session id>.<random secret>`, stored only as a SHA-256 hash).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chattr_core::{SessionId, UserId};
use chattr_proto::Principal;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// JWT claims of an access token.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: UserId,
    sid: SessionId,
    iat: i64,
    exp: i64,
    /// Token type, so a different kind of JWT signed with the same key is never accepted.
    typ: String,
}

const ACCESS_TYP: &str = "chattr.access";

/// Signing and verification keys for access tokens.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenKeys {
    /// Keys from a secret (at least 32 bytes recommended).
    pub fn new(secret: &SecretString) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
        }
    }

    /// Signs an access token valid for `ttl_secs` from `now`.
    pub fn issue(&self, who: Principal, now: i64, ttl_secs: u64) -> String {
        let claims = Claims {
            sub: who.user_id,
            sid: who.session_id,
            iat: now,
            exp: now + ttl_secs as i64,
            typ: ACCESS_TYP.to_owned(),
        };
        // Encoding fixed claims with HS256 cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).unwrap_or_default()
    }

    /// Verifies signature, expiry and type; returns the principal.
    pub fn verify(&self, token: &str) -> Option<Principal> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        (data.claims.typ == ACCESS_TYP)
            .then_some(Principal { user_id: data.claims.sub, session_id: data.claims.sid })
    }
}

/// A fresh refresh token for a session and the hash to store.
pub fn new_refresh_token(session: SessionId) -> (String, String) {
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    let secret = URL_SAFE_NO_PAD.encode(secret);
    let hash = hash_secret(&secret);
    (format!("{session}.{secret}"), hash)
}

/// Splits a presented refresh token into its session and the hash of its secret.
pub fn parse_refresh_token(token: &str) -> Option<(SessionId, String)> {
    let (session, secret) = token.split_once('.')?;
    if secret.is_empty() || secret.len() > 128 {
        return None;
    }
    Some((session.parse().ok()?, hash_secret(secret)))
}

fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str) -> TokenKeys {
        TokenKeys::new(&SecretString::from(secret.to_owned()))
    }

    #[test]
    fn access_tokens_verify_and_reject_tampering_and_expiry() {
        let who = Principal { user_id: uuid::Uuid::now_v7(), session_id: uuid::Uuid::now_v7() };
        let now = chrono::Utc::now().timestamp();
        let k = keys("0123456789abcdef0123456789abcdef");
        let token = k.issue(who, now, 60);
        assert_eq!(k.verify(&token), Some(who));
        assert_eq!(keys("another-secret-another-secret-xx").verify(&token), None);
        let mut tampered = token.clone();
        tampered.insert(tampered.len() / 2, 'x');
        assert_eq!(k.verify(&tampered), None);
        assert_eq!(k.verify(&k.issue(who, now - 120, 60)), None);
        assert_eq!(k.verify("garbage"), None);
    }

    #[test]
    fn refresh_tokens_round_trip() {
        let session = uuid::Uuid::now_v7();
        let (token, hash) = new_refresh_token(session);
        assert_eq!(parse_refresh_token(&token), Some((session, hash)));
        assert_eq!(parse_refresh_token("nonsense"), None);
        assert_eq!(parse_refresh_token(&format!("{session}.")), None);
    }
}
