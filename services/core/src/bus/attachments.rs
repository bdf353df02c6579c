//! Files in the object store, addressed by content (`sha256/<hex>`), so
//! that the same attachment sent twice is stored once and a message only
//! ever carries an [`AttachmentRef`].
//!
//! Small files are stored from memory ([`Bus::put_attachment`]); large ones
//! are streamed from a reader ([`Bus::put_attachment_stream`]) and never
//! held whole.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use super::Bus;
use async_nats::jetstream::object_store::ObjectInfo;

use crate::{Error, bus::subjects::ATTACHMENTS_STORE, config::ATTACHMENTS_REFRESH_AFTER, proto::v1::AttachmentRef};

/// The reference a file of this content will have once stored, known
/// before it is: an adapter can build (and size-check) the contact that
/// carries it first, and store nothing for a submission it then refuses.
pub fn attachment_ref(sha256: [u8; 32], size: u64, file_name: &str, media_type: &str) -> AttachmentRef {
    let sha256 = hex::encode(sha256);
    AttachmentRef {
        key: attachment_key(&sha256),
        file_name: sanitize_file_name(file_name),
        media_type: media_type.to_owned(),
        size,
        sha256,
    }
}

/// The object-store key of content whose hex SHA-256 is `sha256`.
pub fn attachment_key(sha256: &str) -> String {
    format!("sha256/{sha256}")
}

impl Bus {
    /// Stores `data` (if not already there) and returns its reference.
    pub async fn put_attachment(&self, data: &[u8], file_name: &str, media_type: &str) -> Result<AttachmentRef, Error> {
        let reference = attachment_ref(Sha256::digest(data).into(), data.len() as u64, file_name, media_type);
        let key = reference.key.clone();
        let store = &self.inner.stores.attachments;
        if !self.is_current(&key).await {
            let mut reader = data;
            store
                .put(key.as_str(), &mut reader)
                .await
                .map_err(|e| Error::store(ATTACHMENTS_STORE, e))?;
        }
        Ok(reference)
    }

    /// Stores what `reader` yields under `sha256/<sha256>` (if not already
    /// there), `sha256` being the SHA-256 of that content, computed by the
    /// caller beforehand; the content is hashed again as it streams and an
    /// object whose content does not match is deleted and refused.
    ///
    /// Why the digest comes first: the key is the content's hash, and the
    /// object store cannot rename. Streaming under a temporary name and
    /// copying under the final key would send every large file twice to
    /// the broker (and leave orphans when interrupted); the callers have
    /// the content on local disk already (the web adapter spools large
    /// parts, hashing them as they arrive), so knowing the key first costs
    /// nothing, and a file already stored is not sent at all.
    pub async fn put_attachment_stream<R>(
        &self,
        reader: &mut R,
        sha256: [u8; 32],
        file_name: &str,
        media_type: &str,
    ) -> Result<AttachmentRef, Error>
    where
        R: AsyncRead + Unpin,
    {
        let digest = sha256;
        let sha256 = hex::encode(digest);
        let key = attachment_key(&sha256);
        let store = &self.inner.stores.attachments;
        let size = match store.info(&key).await {
            Ok(info) if is_fresh(&info) => info.size as u64,
            _ => {
                let mut hashing = Hashing::new(reader);
                store
                    .put(key.as_str(), &mut hashing)
                    .await
                    .map_err(|e| Error::store(ATTACHMENTS_STORE, e))?;
                let (digest, size) = hashing.finish();
                if hex::encode(digest) != sha256 {
                    // The source changed under us: never leave content
                    // under a key that does not address it.
                    if let Err(e) = store.delete(&key).await {
                        tracing::warn!(error = %e, %key, "mismatched attachment not deleted");
                    }
                    return Err(Error::store(
                        ATTACHMENTS_STORE,
                        format!("{key}: the content streamed does not have the announced SHA-256"),
                    ));
                }
                size
            }
        };
        Ok(attachment_ref(digest, size, file_name, media_type))
    }

    /// Whether `key` is stored, not deleted, and recent enough to outlive
    /// a contact published now (see [`ATTACHMENTS_REFRESH_AFTER`]): if not,
    /// the caller writes it (again).
    async fn is_current(&self, key: &str) -> bool {
        self.inner
            .stores
            .attachments
            .info(key)
            .await
            .is_ok_and(|info| is_fresh(&info))
    }

    /// Reads an attachment back.
    pub async fn get_attachment(&self, key: &str) -> Result<Vec<u8>, Error> {
        use tokio::io::AsyncReadExt;
        let mut object = self
            .inner
            .stores
            .attachments
            .get(key)
            .await
            .map_err(|e| Error::store(ATTACHMENTS_STORE, e))?;
        let mut out = Vec::new();
        object
            .read_to_end(&mut out)
            .await
            .map_err(|e| Error::store(ATTACHMENTS_STORE, e))?;
        Ok(out)
    }
}

/// Stored, not deleted, and written less than [`ATTACHMENTS_REFRESH_AFTER`]
/// ago. Why the age: the object store expires a file by the age of its
/// copy, not of the last contact that brought it (see
/// [`crate::config::TopologyConfig::attachments_max_age`]).
fn is_fresh(info: &ObjectInfo) -> bool {
    let written = info.modified.map_or(0, |m| m.unix_timestamp());
    let age = chrono::Utc::now().timestamp().saturating_sub(written);
    // A copy dated in the future (another host's clock) counts as fresh.
    !info.deleted && age < i64::try_from(ATTACHMENTS_REFRESH_AFTER.as_secs()).unwrap_or(i64::MAX)
}

/// A reader that hashes (SHA-256) and counts what passes through it.
struct Hashing<'a, R> {
    inner: &'a mut R,
    hasher: Sha256,
    size: u64,
}

impl<'a, R> Hashing<'a, R> {
    fn new(inner: &'a mut R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    fn finish(self) -> ([u8; 32], u64) {
        (self.hasher.finalize().into(), self.size)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Hashing<'_, R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut *self.inner).poll_read(cx, buf))?;
        let this = &mut *self;
        let read = &buf.filled()[before..];
        this.hasher.update(read);
        this.size += read.len() as u64;
        Poll::Ready(Ok(()))
    }
}

/// Keeps the last path component, drops control and format characters
/// (a U+202E RIGHT-TO-LEFT OVERRIDE shows `facture_fdp.exe` as
/// `facture_exe.pdf` to the agent who opens it), caps length.
pub fn sanitize_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control() && !is_format(*c))
        .take(200)
        .collect();
    if cleaned.trim().is_empty() || cleaned == "." || cleaned == ".." {
        "attachment".to_owned()
    } else {
        cleaned
    }
}

/// Unicode's format characters (general category Cf) that can change how
/// a name is shown: bidirectional controls, zero-width characters, the
/// soft hyphen, the byte-order mark.
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn file_names_lose_paths_and_controls() {
        assert_eq!(super::sanitize_file_name("../../etc/passwd"), "passwd");
        assert_eq!(super::sanitize_file_name("C:\\Users\\x\\plan.pdf"), "plan.pdf");
        assert_eq!(super::sanitize_file_name("a\u{0}b.txt"), "ab.txt");
        assert_eq!(super::sanitize_file_name(""), "attachment");
        assert_eq!(super::sanitize_file_name("facture_\u{202E}fdp.exe"), "facture_fdp.exe");
        assert_eq!(super::sanitize_file_name("a\u{200B}b\u{2066}c\u{FEFF}.pdf"), "abc.pdf");
        assert_eq!(super::sanitize_file_name("\u{202E}"), "attachment");
    }
}
