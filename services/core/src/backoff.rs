//! A doubling delay between retries, capped: the one backoff of the code
//! base's retry loops (connecting, putting the topology in place …).

use std::time::Duration;

/// `first`, `2 × first`, `4 × first` … up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            next: first,
            max: max.max(first),
        }
    }

    /// The delay to wait now; the next one is twice as long (at most `max`).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    /// The delay [`Self::next_delay`] will return, without moving on.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Back to `first` (after a success, or a run long enough to be healthy).
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(100), ms(350));
        let delays: Vec<_> = (0..4).map(|_| backoff.next_delay()).collect();
        assert_eq!(delays, [ms(100), ms(200), ms(350), ms(350)]);
        backoff.reset();
        assert_eq!(backoff.peek(), ms(100));
        assert_eq!(
            Backoff::new(ms(10), ms(1)).next_delay(),
            ms(10),
            "a cap below `first` is `first`"
        );
    }
}
