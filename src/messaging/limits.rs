//! Send rate limits: a sliding minute per user and per channel (`MESSAGE_RATE_PER_MINUTE`).

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

const WINDOW: Duration = Duration::from_secs(60);
/// Keys kept before idle ones are swept.
const SWEEP_AT: usize = 10_000;

/// Sends in the last minute, per key.
#[derive(Debug)]
pub struct RateLimits {
    per_minute: usize,
    sent: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimits {
    /// At most `per_minute` sends per key in any minute.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1) as usize,
            sent: Mutex::default(),
        }
    }

    /// Takes one send for every key, or none: `Err(wait)` when a key is at its limit.
    pub fn take(&self, keys: &[&str]) -> Result<(), Duration> {
        self.take_at(keys, Instant::now())
    }

    fn take_at(&self, keys: &[&str], now: Instant) -> Result<(), Duration> {
        let mut sent = self.sent.lock().expect("not poisoned");
        if sent.len() > SWEEP_AT {
            sent.retain(|_, times| times.back().is_some_and(|t| now - *t < WINDOW));
        }
        let mut wait = Duration::ZERO;
        for key in keys {
            if let Some(times) = sent.get_mut(*key) {
                while times.front().is_some_and(|t| now - *t >= WINDOW) {
                    times.pop_front();
                }
                if times.len() >= self.per_minute {
                    let oldest = *times.front().expect("at the limit, so not empty");
                    wait = wait.max(WINDOW - (now - oldest));
                }
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        for key in keys {
            sent.entry((*key).to_owned()).or_default().push_back(now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key_and_frees_after_a_minute() {
        let limits = RateLimits::new(2);
        let t0 = Instant::now();
        assert!(limits.take_at(&["u:a", "c:x"], t0).is_ok());
        assert!(
            limits
                .take_at(&["u:a", "c:x"], t0 + Duration::from_secs(10))
                .is_ok()
        );
        let wait = limits
            .take_at(&["u:a", "c:y"], t0 + Duration::from_secs(20))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(40));
        assert!(
            limits
                .take_at(&["u:b", "c:y"], t0 + Duration::from_secs(20))
                .is_ok(),
            "a refused send takes nothing from the other keys"
        );
        assert!(
            limits
                .take_at(&["u:b", "c:x"], t0 + Duration::from_secs(20))
                .is_err()
        );
        assert!(
            limits
                .take_at(&["u:a"], t0 + Duration::from_secs(61))
                .is_ok()
        );
    }
}
