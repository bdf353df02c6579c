//! Per-form token buckets: a platform that floods one form is slowed down
//! (429) without affecting the others.

use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

use crate::config::RateLimit;

/// One form's bucket.
#[derive(Debug)]
pub struct Bucket {
    limit: RateLimit,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            state: Mutex::new((f64::from(limit.burst), Instant::now())),
        }
    }

    /// Takes one token, or says how long until one is available.
    pub fn take(&self) -> Result<(), Duration> {
        let Ok(mut state) = self.state.lock() else {
            // A poisoned lock only means another request panicked mid-update.
            return Ok(());
        };
        let (tokens, last) = &mut *state;
        let now = Instant::now();
        let refill = now.duration_since(*last).as_secs_f64() * self.limit.per_second;
        *tokens = (*tokens + refill).min(f64::from(self.limit.burst));
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - *tokens) / self.limit.per_second;
            Err(Duration::from_secs_f64(wait.clamp(0.0, 3600.0)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill() {
        let bucket = Bucket::new(RateLimit {
            per_second: 2.0,
            burst: 3,
        });
        for _ in 0..3 {
            bucket.take().unwrap();
        }
        let wait = bucket.take().unwrap_err();
        assert!(wait <= Duration::from_millis(500) && wait > Duration::ZERO, "{wait:?}");
        tokio::time::advance(Duration::from_millis(500)).await;
        bucket.take().unwrap();
        assert!(bucket.take().is_err());
    }
}
