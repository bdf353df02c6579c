//! Clients that are not platforms: unauthenticated connections that send
//! their headers and then trickle the body a byte at a time, and chunked
//! bodies (no `Content-Length`) that go on past `web.max_request_bytes`.
//! They run beside the signed load, whose submissions must still be stored
//! exactly once (and, once the web service is hardened, keep their 202s).

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

use crate::web_load::FORM;

/// Bytes a chunked over-limit body sends at most: past the default
/// 20 MiB `web.max_request_bytes`.
const OVERSIZED_BYTES: usize = 21 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// What the hostile clients do.
#[derive(Debug, Clone)]
pub struct Hostile {
    pub web: SocketAddr,
    /// Connections trickling one byte a second.
    pub slow: usize,
    /// Chunked bodies sent past the limit.
    pub oversized: usize,
    /// How long a slow connection trickles at most.
    pub hold: Duration,
}

impl Hostile {
    /// Runs every client to its end; returns how they were answered
    /// (`"408"`, `"413"`, `"closed"` …) and how many.
    pub async fn run(self) -> BTreeMap<String, usize> {
        let mut tasks = Vec::with_capacity(self.slow + self.oversized);
        for n in 0..self.slow {
            tasks.push(tokio::spawn(slow(self.web, n % 2 == 0, self.hold)));
        }
        for _ in 0..self.oversized {
            tasks.push(tokio::spawn(oversized(self.web)));
        }
        let mut answers = BTreeMap::new();
        for task in tasks {
            let answer = task.await.unwrap_or_else(|_| "panicked".into());
            *answers.entry(answer).or_insert(0) += 1;
        }
        answers
    }
}

fn head(web: SocketAddr, framing: &str) -> String {
    format!(
        "POST /v1/forms/{FORM}/submissions HTTP/1.1\r\nHost: {web}\r\nContent-Type: application/json\r\n\
         X-Guichet-Signature: t=0,v2=00\r\nIdempotency-Key: hostile\r\n{framing}\r\n"
    )
}

/// Headers, then one byte a second (`Content-Length` or chunked) until
/// `hold` ends or the server answers or closes.
async fn slow(web: SocketAddr, chunked: bool, hold: Duration) -> String {
    let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(web)).await else {
        return "connect failed".into();
    };
    let framing = if chunked {
        "Transfer-Encoding: chunked\r\n".to_owned()
    } else {
        "Content-Length: 100000\r\n".to_owned()
    };
    if stream.write_all(head(web, &framing).as_bytes()).await.is_err() {
        return "closed".into();
    }
    let end = Instant::now() + hold;
    let byte: &[u8] = if chunked { b"1\r\n{\r\n" } else { b"{" };
    let mut buffer = [0_u8; 512];
    while Instant::now() < end {
        // A second of waiting for the server to answer, then one more byte.
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return "closed".into(),
            Ok(Ok(n)) => return status(&buffer[..n]),
            Err(_) => {}
        }
        if stream.write_all(byte).await.is_err() {
            return "closed".into();
        }
    }
    "held to the end".into()
}

/// A chunked body sent as fast as the server takes it, past the limit.
async fn oversized(web: SocketAddr) -> String {
    let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(web)).await else {
        return "connect failed".into();
    };
    if stream
        .write_all(head(web, "Transfer-Encoding: chunked\r\n").as_bytes())
        .await
        .is_err()
    {
        return "closed".into();
    }
    let mut chunk = format!("{CHUNK:x}\r\n").into_bytes();
    chunk.extend(std::iter::repeat_n(b'a', CHUNK));
    chunk.extend_from_slice(b"\r\n");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sent = 0;
    while sent < OVERSIZED_BYTES && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), stream.write_all(&chunk)).await {
            Ok(Ok(())) => sent += CHUNK,
            // Refused mid-body (the 413 is usually waiting to be read).
            _ => break,
        }
    }
    if sent >= OVERSIZED_BYTES {
        let _ = stream.write_all(b"0\r\n\r\n").await;
    }
    let mut buffer = [0_u8; 512];
    match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await {
        Ok(Ok(n)) if n > 0 => status(&buffer[..n]),
        Ok(_) => "closed".into(),
        Err(_) => "no answer".into(),
    }
}

/// The status code of an HTTP response's first bytes.
fn status(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .split_whitespace()
        .nth(1)
        .unwrap_or("garbage")
        .to_owned()
}
