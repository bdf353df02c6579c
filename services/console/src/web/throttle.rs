//! Login throttling: failed logins are counted per client address, and an
//! address past `login_failures` in `login_window` is refused (429) until
//! its window passes. The table is bounded (`login_tracked_clients`); when
//! it is full of live entries, addresses not in it are refused too, so an
//! attacker spraying addresses cannot make it grow. Password checks
//! (argon2, deliberately costly) run a few at a time; past that the
//! answer is 503, so a flood of logins cannot take every core.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use tokio::sync::{Semaphore, SemaphorePermit};

/// Password checks running at once, at most.
pub const CONCURRENT_CHECKS: usize = 2;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    since: Instant,
}

/// Why a login may not be tried now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many failures from this address (or the table is full): retry
    /// after this long.
    TooMany(Duration),
    /// Too many password checks running: retry in a second.
    Busy,
}

#[derive(Debug)]
pub struct Throttle {
    max_failures: u32,
    window: Duration,
    capacity: usize,
    table: Mutex<HashMap<IpAddr, Entry>>,
    checks: Semaphore,
}

impl Throttle {
    pub fn new(max_failures: u32, window: Duration, capacity: usize) -> Self {
        Self {
            max_failures,
            window,
            capacity,
            table: Mutex::new(HashMap::new()),
            checks: Semaphore::new(CONCURRENT_CHECKS),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `ip` may try a password now; if so, the permit to run the
    /// check (dropped when it is done).
    pub fn admit(&self, ip: IpAddr) -> Result<SemaphorePermit<'_>, Refusal> {
        let now = Instant::now();
        {
            let mut table = self.table();
            match table.get(&ip) {
                Some(e) if now.duration_since(e.since) >= self.window => {
                    table.remove(&ip);
                }
                Some(e) if e.failures >= self.max_failures => {
                    return Err(Refusal::TooMany(self.window - now.duration_since(e.since)));
                }
                Some(_) => {}
                None if table.len() >= self.capacity => {
                    let window = self.window;
                    table.retain(|_, e| now.duration_since(e.since) < window);
                    if table.len() >= self.capacity {
                        return Err(Refusal::TooMany(self.window));
                    }
                }
                None => {}
            }
        }
        self.checks.try_acquire().map_err(|_| Refusal::Busy)
    }

    /// Records a failed login from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut table = self.table();
        if table.len() >= self.capacity && !table.contains_key(&ip) {
            // Full of live entries (admit checked): nothing to record, and
            // this address is refused on its next try anyway.
            return;
        }
        let entry = table.entry(ip).or_insert(Entry {
            failures: 0,
            since: now,
        });
        entry.failures += 1;
    }

    /// A successful login clears the address's failures.
    pub fn succeeded(&self, ip: IpAddr) {
        self.table().remove(&ip);
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.table().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn an_address_is_refused_after_its_failures_and_others_are_not() {
        let t = Throttle::new(3, Duration::from_secs(60), 10);
        for _ in 0..3 {
            drop(t.admit(ip(1)).unwrap());
            t.failed(ip(1));
        }
        assert!(matches!(t.admit(ip(1)), Err(Refusal::TooMany(d)) if d <= Duration::from_secs(60)));
        assert!(t.admit(ip(2)).is_ok());
    }

    #[test]
    fn the_table_stays_bounded_and_refuses_new_addresses_when_full() {
        let t = Throttle::new(3, Duration::from_secs(60), 4);
        for n in 0..50 {
            if let Ok(p) = t.admit(ip(n)) {
                drop(p);
                t.failed(ip(n));
            }
        }
        assert_eq!(t.tracked(), 4);
        assert!(matches!(t.admit(ip(200)), Err(Refusal::TooMany(_))));
        // A tracked address below its limit may still try.
        assert!(t.admit(ip(0)).is_ok());
    }

    #[test]
    fn expired_failures_are_forgotten() {
        let t = Throttle::new(1, Duration::from_millis(30), 1);
        t.failed(ip(1));
        assert!(t.admit(ip(1)).is_err());
        std::thread::sleep(Duration::from_millis(40));
        assert!(t.admit(ip(1)).is_ok());
        assert!(t.admit(ip(2)).is_ok(), "the expired entry made room");
    }

    #[test]
    fn password_checks_are_bounded() {
        let t = Throttle::new(5, Duration::from_secs(60), 10);
        let held: Vec<_> = (0..CONCURRENT_CHECKS).map(|n| t.admit(ip(n as u8)).unwrap()).collect();
        assert_eq!(t.admit(ip(9)).err(), Some(Refusal::Busy));
        drop(held);
        assert!(t.admit(ip(9)).is_ok());
    }
}
