//! Loopback addresses of a test's own.
//!
//! All of 127.0.0.0/8 is loopback (Linux answers on every address of it),
//! and an address drawn at random there is one that no other test binds:
//! a port found free on it stays free until the test binds it, and a port
//! closed on it stays closed, so that a check such as "the port is closed
//! after shutdown" cannot see another test's listener that took the same
//! port number on 127.0.0.1 meanwhile.

use std::{
    hash::{BuildHasher, Hasher},
    net::{Ipv4Addr, SocketAddr, TcpListener},
    sync::atomic::{AtomicU64, Ordering},
};

/// A loopback address no other test uses (127.x.y.z, z neither 0 nor 255).
pub fn own_ip() -> Ipv4Addr {
    static DRAWN: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(DRAWN.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    let [x, y, z, ..] = hasher.finish().to_le_bytes();
    Ipv4Addr::new(127, x, y, z % 254 + 1)
}

/// A listener on a port of an address of the test's own (non-blocking, as
/// `guichet::run` expects).
pub fn listener() -> TcpListener {
    let listener = TcpListener::bind((own_ip(), 0)).expect("bind an own loopback address");
    listener.set_nonblocking(true).expect("non-blocking listener");
    listener
}

/// A port of `ip` where nothing listens a moment ago: for a server
/// given an address of [`own_ip`] (no other test binds there).
pub fn free_port_on(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an own loopback address")
}

/// An address of the test's own where nothing listens: free for the test
/// to give a server, or closed for a test that needs a dead end.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind((own_ip(), 0))
        .and_then(|l| l.local_addr())
        .expect("bind an own loopback address")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_loopback_and_drawn_apart() {
        let a = own_ip();
        let b = own_ip();
        assert!(a.is_loopback() && b.is_loopback());
        assert_ne!(a, b);
        let addr = free_addr();
        assert!(std::net::TcpStream::connect(addr).is_err(), "nothing listens at {addr}");
        let listener = listener();
        let bound = listener.local_addr().unwrap();
        assert!(bound.ip().is_loopback() && bound.ip() != std::net::IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
}
