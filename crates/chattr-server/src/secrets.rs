//! Secrets generated on first start and kept in the data directory.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use rand::RngCore;
use secrecy::SecretString;

/// Reads the secret at `path`, or creates it (64 random hex chars, mode 0600).
pub fn load_or_create(path: &Path) -> anyhow::Result<SecretString> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let text = text.trim().to_owned();
        if text.len() >= 32 {
            return Ok(SecretString::from(text));
        }
    }
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    Ok(SecretString::from(secret))
}
