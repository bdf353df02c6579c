//! Receiving a body before anyone is known: bounded in time, in count and
//! in bytes held, so that unauthenticated clients can neither starve
//! authentic submissions nor grow the gateway's memory.
//!
//! - A body is read only under one of `web.max_reading_bodies` reader
//!   permits (503 at once past it), far more than the publish slots: those
//!   are taken only after the signature is verified (see `submit`).
//! - Each chunk must come within `web.body_idle_timeout` of the previous
//!   one, and the whole body within `web.body_timeout` (408).
//! - Bytes held are reserved as they arrive (or up front from
//!   `Content-Length`) against global budgets: `web.max_buffered_bytes` in
//!   memory, `web.max_spooled_bytes` on disk. A reservation that does not
//!   fit is a 503 with `Retry-After` at once: never more memory.
//! - A body past `web.spool_threshold_bytes` goes to an unnamed temporary
//!   file in `web.spool_dir` (the MAC is computed as it arrives, so nothing
//!   needs it whole); the file vanishes when dropped, on every path, and
//!   even if the process is killed.
//! - Bodies past the threshold are read, all together, at most at
//!   `web.spool_bytes_per_second`: a reader waits for its turn before it
//!   reads on, so TCP flow control slows the senders down. Without it, a
//!   few clients streaming large bodies as fast as loopback allows take
//!   the CPU (MAC, copies, disk) from authentic submissions; small bodies
//!   are never paced.

use std::{
    path::PathBuf,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::{
    fs::File,
    io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt},
    sync::{Semaphore, SemaphorePermit},
    time::Instant,
};

use crate::{config::WebConfig, problem::Problem, signature::Verifier};

/// The shared bounds of body reading, one per adapter.
#[derive(Debug)]
pub struct Gate {
    /// Bodies being read (`web.max_reading_bodies`).
    readers: Semaphore,
    /// Body bytes in memory (`web.max_buffered_bytes`), one permit a byte.
    memory: Semaphore,
    /// Body bytes spooled to disk (`web.max_spooled_bytes`).
    spool: Semaphore,
    /// The pace of spooled bodies (`web.spool_bytes_per_second`).
    pace: Pace,
    max_bytes: usize,
    threshold: usize,
    idle: Duration,
    total: Duration,
    spool_dir: PathBuf,
}

/// A received body: in memory, or spooled to an unnamed file.
#[derive(Debug)]
pub enum Content {
    Memory(Bytes),
    /// The file is positioned at its start.
    File(File),
}

impl Content {
    /// The SHA-256 of the body. Computed only for authentic submissions
    /// that need it (no `Idempotency-Key`), not for every byte received.
    pub async fn sha256(&mut self) -> Result<[u8; 32], Problem> {
        match self {
            Content::Memory(bytes) => Ok(Sha256::digest(bytes).into()),
            Content::File(file) => {
                let mut hasher = Sha256::new();
                let mut buffer = vec![0u8; 64 * 1024];
                loop {
                    let n = file.read(&mut buffer).await.map_err(|e| disk_problem(&e))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buffer[..n]);
                }
                file.rewind().await.map_err(|e| disk_problem(&e))?;
                Ok(hasher.finalize().into())
            }
        }
    }
}

/// A shared pace in bytes per second (GCRA: each reservation moves a
/// theoretical time forward; one second's worth may go at once).
#[derive(Debug)]
struct Pace {
    next: Mutex<Option<Instant>>,
    per_second: f64,
    burst: Duration,
}

impl Pace {
    fn new(per_second: usize) -> Self {
        Self {
            next: Mutex::new(None),
            per_second: per_second.max(1) as f64,
            burst: Duration::from_secs(1),
        }
    }

    /// Takes `bytes`; returns when the reader may read on, if later than now.
    fn take(&self, bytes: usize) -> Option<Instant> {
        let now = Instant::now();
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let from = next.map_or(now, |n| n.max(now));
        let until = from + Duration::from_secs_f64(bytes as f64 / self.per_second);
        *next = Some(until);
        until.checked_sub(self.burst).filter(|&at| at > now)
    }
}

/// A spooled temporary file that has no name: removed by the system when
/// its last handle closes.
pub async fn spool_file(dir: PathBuf) -> Result<File, Problem> {
    match tokio::task::spawn_blocking(move || tempfile::tempfile_in(dir)).await {
        Ok(Ok(file)) => Ok(File::from_std(file)),
        Ok(Err(e)) => Err(disk_problem(&e)),
        Err(e) => {
            tracing::error!(error = %e, "spool file task failed");
            Err(Problem::unavailable())
        }
    }
}

/// A spool write or read failed: a full or broken disk is the operator's
/// problem, and the client may retry.
pub fn disk_problem(e: &std::io::Error) -> Problem {
    tracing::error!(error = %e, "body spool: disk error (check `web.spool_dir`)");
    Problem::unavailable()
}

/// A body that has arrived whole, with the reservations of what it holds:
/// released when it is dropped.
#[derive(Debug)]
pub struct Received<'a> {
    pub content: Content,
    /// Its length in bytes.
    pub len: u64,
    /// What the body holds of the budgets, until dropped.
    pub held: Reservation<'a>,
}

/// A body's share of the budgets; released when dropped.
#[derive(Debug)]
pub struct Reservation<'a>(#[allow(dead_code)] Held<'a>);

/// Reservations held against the gate's budgets.
#[derive(Debug)]
struct Held<'a> {
    gate: &'a Gate,
    memory: Option<SemaphorePermit<'a>>,
    spool: Option<SemaphorePermit<'a>>,
}

impl<'a> Held<'a> {
    /// Grows the memory reservation to `bytes` in all.
    fn memory(&mut self, bytes: usize) -> Result<(), Problem> {
        reserve(&self.gate.memory, &mut self.memory, bytes, "web.max_buffered_bytes")
    }

    /// Grows the spool reservation to `bytes` in all.
    fn spool(&mut self, bytes: usize) -> Result<(), Problem> {
        reserve(&self.gate.spool, &mut self.spool, bytes, "web.max_spooled_bytes")
    }
}

/// Grows `held` (permits of `budget`) to `bytes`, or 503 at once.
fn reserve<'a>(
    budget: &'a Semaphore,
    held: &mut Option<SemaphorePermit<'a>>,
    bytes: usize,
    key: &'static str,
) -> Result<(), Problem> {
    let have = held.as_ref().map_or(0, SemaphorePermit::num_permits);
    let Some(more) = bytes.checked_sub(have).filter(|&n| n > 0) else {
        return Ok(());
    };
    let permit = u32::try_from(more)
        .ok()
        .and_then(|more| budget.try_acquire_many(more).ok());
    let Some(permit) = permit else {
        metrics::counter!("guichet_web_budget_exhausted_total", "budget" => key).increment(1);
        tracing::warn!(budget = key, "body refused: the budget of body bytes is exhausted");
        return Err(Problem::unavailable());
    };
    match held {
        Some(h) => h.merge(permit),
        None => *held = Some(permit),
    }
    Ok(())
}

/// Where the bytes go as they arrive.
enum Sink {
    Memory(BytesMut),
    File(File),
}

impl Gate {
    pub fn new(config: &WebConfig) -> Self {
        Self {
            readers: Semaphore::new(config.max_reading_bodies),
            memory: Semaphore::new(config.max_buffered_bytes),
            spool: Semaphore::new(config.max_spooled_bytes),
            pace: Pace::new(config.spool_bytes_per_second),
            max_bytes: config.max_request_bytes,
            threshold: config.spool_threshold_bytes,
            idle: config.body_idle_timeout,
            total: config.body_timeout,
            spool_dir: config.spool_dir.clone().unwrap_or_else(std::env::temp_dir),
        }
    }

    /// The directory of spool files.
    pub fn spool_dir(&self) -> &std::path::Path {
        &self.spool_dir
    }

    /// The largest part kept in memory.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Reads `body` (`declared` bytes if the client said), feeding
    /// `verifier` as bytes arrive.
    pub async fn receive(
        &self,
        body: Body,
        declared: Option<u64>,
        mut verifier: Option<&mut Verifier>,
    ) -> Result<Received<'_>, Problem> {
        let Ok(_reader) = self.readers.try_acquire() else {
            metrics::counter!("guichet_web_budget_exhausted_total", "budget" => "web.max_reading_bodies").increment(1);
            tracing::warn!("body refused: too many bodies being read (`web.max_reading_bodies`)");
            return Err(Problem::unavailable());
        };
        let mut held = Held {
            gate: self,
            memory: None,
            spool: None,
        };
        // The declared length is reserved before the first byte: a client
        // that announces more than the budget is refused without reading.
        let declared = declared.and_then(|n| usize::try_from(n).ok());
        let mut sink = match declared {
            Some(n) if n > self.threshold => {
                held.spool(n)?;
                Sink::File(spool_file(self.spool_dir.clone()).await?)
            }
            Some(n) => {
                held.memory(n)?;
                Sink::Memory(BytesMut::with_capacity(n))
            }
            None => Sink::Memory(BytesMut::new()),
        };
        let mut len = 0usize;
        let deadline = Instant::now() + self.total;
        let mut stream = body.into_data_stream();
        loop {
            let wait = deadline.min(Instant::now() + self.idle);
            let Ok(next) = tokio::time::timeout_at(wait, stream.next()).await else {
                return Err(Problem::request_timeout());
            };
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|_| Problem::malformed("the body could not be read to its end"))?;
            len += chunk.len();
            if len > self.max_bytes {
                return Err(too_large(self.max_bytes));
            }
            if let Some(v) = verifier.as_deref_mut() {
                v.update(&chunk);
            }
            match &mut sink {
                Sink::Memory(buffer) if len <= self.threshold => {
                    held.memory(len)?;
                    buffer.extend_from_slice(&chunk);
                }
                Sink::Memory(buffer) => {
                    // Past the threshold: everything so far goes to disk.
                    held.spool(len)?;
                    let mut file = spool_file(self.spool_dir.clone()).await?;
                    write(&mut file, buffer).await?;
                    write(&mut file, &chunk).await?;
                    held.memory = None;
                    sink = Sink::File(file);
                }
                Sink::File(file) => {
                    held.spool(len)?;
                    write(file, &chunk).await?;
                }
            }
            if matches!(sink, Sink::File(_))
                && let Some(at) = self.pace.take(chunk.len())
            {
                // Waiting for the pace is not idleness: only the total
                // deadline bounds it.
                tokio::time::sleep_until(at.min(deadline)).await;
            }
        }
        let content = match sink {
            Sink::Memory(buffer) => Content::Memory(buffer.freeze()),
            Sink::File(mut file) => {
                file.flush().await.map_err(|e| disk_problem(&e))?;
                file.rewind().await.map_err(|e| disk_problem(&e))?;
                Content::File(file)
            }
        };
        Ok(Received {
            content,
            len: len as u64,
            held: Reservation(held),
        })
    }
}

async fn write(file: &mut File, bytes: &[u8]) -> Result<(), Problem> {
    file.write_all(bytes).await.map_err(|e| disk_problem(&e))
}

/// The body is over `limit` bytes.
pub fn too_large(limit: usize) -> Problem {
    Problem::too_large(format!("the body is larger than the limit of {limit} bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_lets_a_second_through_then_makes_readers_wait() {
        let pace = Pace::new(1_000_000);
        assert_eq!(pace.take(500_000), None);
        assert_eq!(pace.take(400_000), None);
        // Two seconds' worth taken: the reader waits about one second.
        let at = pace.take(1_100_000).expect("a wait");
        let wait = at - Instant::now();
        assert!(
            wait > Duration::from_millis(800) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
    }
}
