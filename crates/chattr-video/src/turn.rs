//! TURN credentials in the TURN REST API scheme (coturn's `use-auth-secret`): the server
//! shares a secret with us and accepts any username `<expiry unix time>:<anything>` whose
//! password is base64(HMAC-SHA1(secret, username)), until the expiry. Nothing is stored:
//! the credential proves itself, and dies by itself.

use base64::Engine;
use chattr_api::v1::IceServer;
use chattr_core::UserId;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha1::Sha1;

/// A minted TURN username and password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredentials {
    /// `<expiry>:<user id>`.
    pub username: String,
    /// base64 HMAC-SHA1 of the username.
    pub credential: String,
}

impl TurnCredentials {
    /// Credentials for `user`, valid until `expires_at` (unix seconds).
    pub fn mint(secret: &SecretString, user: UserId, expires_at: u64) -> Self {
        let username = format!("{expires_at}:{user}");
        Self { credential: sign(secret.expose_secret().as_bytes(), &username), username }
    }

    /// As an ICE server entry for `urls`.
    pub fn ice_server(self, urls: Vec<String>) -> IceServer {
        IceServer { urls, username: Some(self.username), credential: Some(self.credential) }
    }
}

fn sign(secret: &[u8], username: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha1>>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("hmac takes any key"));
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_rfc_2202_hmac_sha1_vector_and_the_username_format() {
        // RFC 2202 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(sign(b"Jefe", "what do ya want for nothing?"), "7/zfauXrL6LSdBbV8YTfnCWafHk=");
        let user = uuid::Uuid::nil();
        let minted = TurnCredentials::mint(&SecretString::from("s".to_owned()), user, 1_700_000_000);
        assert_eq!(minted.username, "1700000000:00000000-0000-0000-0000-000000000000");
        assert_ne!(minted, TurnCredentials::mint(&SecretString::from("t".to_owned()), user, 1_700_000_000));
    }
}
