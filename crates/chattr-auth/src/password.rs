//! Argon2id password hashing, always off the async runtime (it is CPU-heavy by design).

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use chattr_proto::auth::AuthError;

/// Hashes and verifies passwords with fixed Argon2id parameters.
#[derive(Clone)]
pub struct Hasher {
    params: Params,
    /// At most this many hashes run at once: each takes `memory_kib` of memory and a core,
    /// so a storm of logins queues here instead of taking the memory of hundreds of
    /// blocking threads at once.
    running: std::sync::Arc<tokio::sync::Semaphore>,
    /// A hash of a random password, verified against when the username is unknown, so a
    /// login for a missing user costs the same time as for an existing one.
    dummy_hash: String,
}

impl Hasher {
    /// Builds a hasher with the given cost.
    pub fn new(memory_kib: u32, iterations: u32) -> Result<Self, AuthError> {
        let params = Params::new(memory_kib, iterations, 1, None)
            .map_err(|e| AuthError::Internal(format!("argon2 params: {e}")))?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let running = std::sync::Arc::new(tokio::sync::Semaphore::new(cores));
        let mut hasher = Self { params, running, dummy_hash: String::new() };
        hasher.dummy_hash = hasher.hash_blocking("chattr-dummy-password-for-timing")?;
        Ok(hasher)
    }

    /// Waits for a free hashing slot.
    async fn turn(&self) -> Result<tokio::sync::SemaphorePermit<'_>, AuthError> {
        self.running.acquire().await.map_err(|_| AuthError::Internal("hasher closed".to_owned()))
    }

    fn argon(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    fn hash_blocking(&self, password: &str) -> Result<String, AuthError> {
        let salt = SaltString::generate(&mut OsRng);
        self.argon()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| AuthError::Internal(format!("argon2 hash: {e}")))
    }

    /// Hashes a password on the blocking pool; returns the PHC string.
    pub async fn hash(&self, password: String) -> Result<String, AuthError> {
        let _turn = self.turn().await?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let out = this.hash_blocking(&password);
            metrics::histogram!(crate::metrics::PASSWORD_HASH_SECONDS, "op" => "hash")
                .record(started.elapsed().as_secs_f64());
            out
        })
        .await
        .map_err(|e| AuthError::Internal(format!("hash task: {e}")))?
    }

    /// Verifies a password against a PHC string (or the dummy hash when `None`) on the
    /// blocking pool. Always false for `None`.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, AuthError> {
        let _turn = self.turn().await?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let known = phc.is_some();
            let phc = phc.unwrap_or_else(|| this.dummy_hash.clone());
            let parsed = PasswordHash::new(&phc)
                .map_err(|e| AuthError::Internal(format!("stored hash unreadable: {e}")))?;
            let ok = this.argon().verify_password(password.as_bytes(), &parsed).is_ok();
            metrics::histogram!(crate::metrics::PASSWORD_HASH_SECONDS, "op" => "verify")
                .record(started.elapsed().as_secs_f64());
            Ok(known && ok)
        })
        .await
        .map_err(|e| AuthError::Internal(format!("verify task: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let hasher = Hasher::new(1024, 1).unwrap();
        let phc = hasher.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(hasher.verify("correct horse".into(), Some(phc.clone())).await.unwrap());
        assert!(!hasher.verify("wrong horse".into(), Some(phc)).await.unwrap());
        assert!(!hasher.verify("chattr-dummy-password-for-timing".into(), None).await.unwrap());
    }
}
