//! Why connections failed, counted by reason, so a report that says "1,765 failed" also
//! says what the server answered (a close code, an error code, a refused connect, a
//! timeout) and a failed run can be diagnosed from its report alone.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chattr_client::ClientError;
use serde::{Deserialize, Serialize};

/// Reasons are cut to this many characters (a transport error can carry a long chain).
const REASON_CHARS: usize = 120;

/// Counts by reason.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Failures(BTreeMap<String, u64>);

impl Failures {
    /// Counts one failure for `reason`.
    pub fn add(&mut self, reason: &str) {
        let reason: String = reason.chars().take(REASON_CHARS).collect();
        *self.0.entry(reason).or_default() += 1;
    }

    /// Adds another set of counts (a worker's).
    pub fn merge(&mut self, other: &Failures) {
        for (reason, n) in &other.0 {
            *self.0.entry(reason.clone()).or_default() += n;
        }
    }

    /// All failures counted.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// The counts, by reason.
    pub fn counts(&self) -> &BTreeMap<String, u64> {
        &self.0
    }
}

/// Failures counted from many tasks.
#[derive(Debug, Default)]
pub struct Shared(Mutex<Failures>);

impl Shared {
    pub fn add(&self, reason: &str) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).add(reason);
    }

    pub fn snapshot(&self) -> Failures {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// A short, stable reason for a client error: the close code and reason, the error code,
/// or the transport error's text.
pub fn reason(e: &ClientError) -> String {
    match e {
        ClientError::Closed { code, reason } => format!("closed {code}: {reason}"),
        ClientError::Api { status, code, .. } => format!("error {status} {code}"),
        ClientError::Transport(text) => format!("transport: {text}"),
        ClientError::NotSignedIn => "not signed in".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason_and_merges() {
        let mut a = Failures::default();
        a.add(&reason(&ClientError::Closed { code: 1013, reason: "try again later".into() }));
        a.add(&reason(&ClientError::Closed { code: 1013, reason: "try again later".into() }));
        a.add(&"x".repeat(500));
        let mut b = Failures::default();
        b.add("timed out");
        b.add(&reason(&ClientError::Closed { code: 1013, reason: "try again later".into() }));
        a.merge(&b);
        assert_eq!(a.total(), 5);
        assert_eq!(a.counts()["closed 1013: try again later"], 3);
        assert_eq!(a.counts()["timed out"], 1);
        assert!(a.counts().keys().all(|k| k.chars().count() <= REASON_CHARS));
        let json = serde_json::to_string(&a).expect("json");
        assert_eq!(serde_json::from_str::<Failures>(&json).expect("parse"), a);
    }
}
