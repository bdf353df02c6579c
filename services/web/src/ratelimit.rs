//! A per-form token bucket: `burst` submissions at once, refilled at
//! `per_second`. One bucket per configured form (never per URL, so that
//! made-up form ids cannot grow memory).

use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

use crate::config::RateLimit;

#[derive(Debug)]
pub struct TokenBucket {
    limit: RateLimit,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            state: Mutex::new(State {
                tokens: f64::from(limit.burst),
                at: Instant::now(),
            }),
        }
    }

    /// Takes one token, or says how long until one is available.
    pub fn take(&self) -> Result<(), Duration> {
        let Ok(mut state) = self.state.lock() else {
            // A poisoned lock only means a panic elsewhere: do not refuse service for it.
            return Ok(());
        };
        let now = Instant::now();
        let elapsed = now.duration_since(state.at).as_secs_f64();
        state.tokens = (state.tokens + elapsed * self.limit.per_second).min(f64::from(self.limit.burst));
        state.at = now;
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - state.tokens) / self.limit.per_second;
            Err(Duration::from_secs_f64(wait.clamp(0.001, 3600.0)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill() {
        let bucket = TokenBucket::new(RateLimit {
            per_second: 2.0,
            burst: 3,
        });
        for _ in 0..3 {
            assert!(bucket.take().is_ok());
        }
        let wait = bucket.take().unwrap_err();
        assert!(wait <= Duration::from_millis(500) && wait > Duration::ZERO, "{wait:?}");
        tokio::time::advance(Duration::from_millis(510)).await;
        assert!(bucket.take().is_ok());
        assert!(bucket.take().is_err());
    }
}
