//! Files in the object store, addressed by content (`sha256/<hex>`), so
//! that the same attachment sent twice is stored once and a message only
//! ever carries an [`AttachmentRef`].

use sha2::{Digest, Sha256};

use super::Bus;
use crate::{Error, bus::subjects::ATTACHMENTS_STORE, proto::v1::AttachmentRef};

impl Bus {
    /// Stores `data` (if not already there) and returns its reference.
    pub async fn put_attachment(&self, data: &[u8], file_name: &str, media_type: &str) -> Result<AttachmentRef, Error> {
        let sha256 = hex::encode(Sha256::digest(data));
        let key = format!("sha256/{sha256}");
        let store = &self.inner.stores.attachments;
        let present = store.info(&key).await.is_ok();
        if !present {
            let mut reader = data;
            store
                .put(key.as_str(), &mut reader)
                .await
                .map_err(|e| Error::store(ATTACHMENTS_STORE, e))?;
        }
        Ok(AttachmentRef {
            key,
            file_name: sanitize_file_name(file_name),
            media_type: media_type.to_owned(),
            size: data.len() as u64,
            sha256,
        })
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

/// Keeps the last path component, drops control characters, caps length.
pub fn sanitize_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base.chars().filter(|c| !c.is_control()).take(200).collect();
    if cleaned.trim().is_empty() || cleaned == "." || cleaned == ".." {
        "attachment".to_owned()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn file_names_lose_paths_and_controls() {
        assert_eq!(super::sanitize_file_name("../../etc/passwd"), "passwd");
        assert_eq!(super::sanitize_file_name("C:\\Users\\x\\plan.pdf"), "plan.pdf");
        assert_eq!(super::sanitize_file_name("a\u{0}b.txt"), "ab.txt");
        assert_eq!(super::sanitize_file_name(""), "attachment");
    }
}
