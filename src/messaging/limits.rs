//! Rate limits of the API's writes and searches: a sliding minute per key (a user, a user
//! in a channel, a channel, for each kind of action), each key with its own limit. Counted
//! per instance.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

const WINDOW: Duration = Duration::from_secs(60);
/// Keys kept before idle ones are swept.
const SWEEP_AT: usize = 10_000;

/// Actions in the last minute, per key.
#[derive(Debug)]
pub struct RateLimits {
    per_minute: u32,
    sent: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimits {
    /// At most `per_minute` actions per key in any minute, for keys taken with
    /// [`RateLimits::take`]; [`RateLimits::take_each`] names each key's own limit.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            sent: Mutex::default(),
        }
    }

    /// Takes one action for every key at the limit given to [`RateLimits::new`], or none:
    /// `Err(wait)` when a key is at its limit.
    pub fn take(&self, keys: &[&str]) -> Result<(), Duration> {
        let keys: Vec<(&str, u32)> = keys.iter().map(|k| (*k, self.per_minute)).collect();
        self.take_each(&keys)
    }

    /// Takes one action for every `(key, per_minute)`, or none: `Err(wait)` when a key is
    /// at its limit (the longest wait of those that are).
    pub fn take_each(&self, keys: &[(&str, u32)]) -> Result<(), Duration> {
        self.take_at(keys, Instant::now())
    }

    fn take_at(&self, keys: &[(&str, u32)], now: Instant) -> Result<(), Duration> {
        let mut sent = self.sent.lock().expect("not poisoned");
        if sent.len() > SWEEP_AT {
            sent.retain(|_, times| times.back().is_some_and(|t| now - *t < WINDOW));
        }
        let mut wait = Duration::ZERO;
        for (key, per_minute) in keys {
            let limit = (*per_minute).max(1) as usize;
            if let Some(times) = sent.get_mut(*key) {
                while times.front().is_some_and(|t| now - *t >= WINDOW) {
                    times.pop_front();
                }
                if times.len() >= limit {
                    // The oldest of the last `limit` must leave the window first.
                    let oldest = times[times.len() - limit];
                    wait = wait.max(WINDOW - (now - oldest));
                }
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        for (key, _) in keys {
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
        let take = |keys: &[&str], at: Duration| {
            let keys: Vec<(&str, u32)> = keys.iter().map(|k| (*k, 2)).collect();
            limits.take_at(&keys, t0 + at)
        };
        assert!(take(&["u:a", "c:x"], Duration::ZERO).is_ok());
        assert!(take(&["u:a", "c:x"], Duration::from_secs(10)).is_ok());
        let wait = take(&["u:a", "c:y"], Duration::from_secs(20)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(40));
        assert!(
            take(&["u:b", "c:y"], Duration::from_secs(20)).is_ok(),
            "a refused send takes nothing from the other keys"
        );
        assert!(take(&["u:b", "c:x"], Duration::from_secs(20)).is_err());
        assert!(take(&["u:a"], Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn each_key_has_its_own_limit() {
        let limits = RateLimits::new(1);
        let t0 = Instant::now();
        for n in 0..3 {
            let user = format!("u:{n}");
            assert!(
                limits
                    .take_at(&[(user.as_str(), 1), ("c:x", 3)], t0)
                    .is_ok()
            );
        }
        assert!(limits.take_at(&[("u:9", 1), ("c:x", 3)], t0).is_err());
        assert!(limits.take_at(&[("u:0", 1)], t0).is_err());
        assert!(limits.take(&["u:new"]).is_ok());
        assert!(
            limits.take(&["u:new"]).is_err(),
            "new's limit is the default"
        );
    }
}
