//! A per-socket token bucket for incoming frames (local: no backend round trip per frame).

use std::time::Instant;

/// Token bucket: `burst` tokens, refilled at `rate` per second.
pub struct FrameLimiter {
    tokens: f64,
    burst: f64,
    rate: f64,
    last: Instant,
    /// Consecutive refused frames; a long run means a flood.
    pub refused_in_a_row: u32,
}

impl FrameLimiter {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            rate: f64::from(rate),
            last: Instant::now(),
            refused_in_a_row: 0,
        }
    }

    /// Takes a token if there is one.
    pub fn allow(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_a_row = 0;
            true
        } else {
            self.refused_in_a_row += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_burst_then_refuses() {
        let mut l = FrameLimiter::new(1, 3);
        assert!(l.allow() && l.allow() && l.allow());
        assert!(!l.allow());
        assert_eq!(l.refused_in_a_row, 1);
    }
}
