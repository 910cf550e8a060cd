//! The objects of an encrypted repository: a [`Backend`] that seals every object on its way in
//! and opens (authenticates, then decrypts) it on its way out, so the code above it reads and
//! writes plaintext and no plaintext reaches the store.
//!
//! Two kinds of object stay as they are: the repository's marker (it says the repository is
//! encrypted, and names its key's id) and the key slots under `keys/` (each holds the master key
//! wrapped by a passphrase). Everything else (manifests, chunks, leases, the archive's pieces,
//! bases and heartbeats) is sealed, each object under its own key and bound to its name.

use std::sync::Arc;

use kyrodb_backup_backend::{Backend, Entry, Error, Result, Written};
use kyrodb_backup_crypto::{head_len, plain_len, sealed_len, Sealer};

/// The folder of the key slots.
pub(crate) const KEYS_DIR: &str = "keys";

/// A backend whose objects are sealed (see the module doc).
pub(crate) struct SealedBackend {
    inner: Arc<dyn Backend>,
    sealer: Sealer,
    /// The marker's key, which is stored as it is.
    marker: &'static str,
}

impl std::fmt::Debug for SealedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedBackend")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl SealedBackend {
    pub(crate) fn new(inner: Arc<dyn Backend>, sealer: Sealer, marker: &'static str) -> Self {
        Self {
            inner,
            sealer,
            marker,
        }
    }

    /// Whether an object is stored as it is.
    fn plain(&self, key: &str) -> bool {
        key == self.marker
            || key
                .strip_prefix(KEYS_DIR)
                .is_some_and(|rest| rest.starts_with('/'))
    }

    fn damaged(&self, key: &str, e: &kyrodb_backup_crypto::Error) -> Error {
        let detail = match e {
            kyrodb_backup_crypto::Error::Damaged(d) => d.clone(),
            other => other.to_string(),
        };
        Error::Damaged {
            location: self.inner.location(),
            key: key.to_string(),
            detail,
        }
    }

    fn seal(&self, key: &str, bytes: &[u8]) -> Result<Vec<u8>> {
        self.sealer
            .seal(key, bytes)
            .map_err(|e| Error::Config(format!("cannot seal {key}: {e}")))
    }

    /// An entry with the size of its plaintext (0 for a size no sealed object has: such an
    /// object is damaged, and every size check above fails on it).
    fn entry(&self, mut e: Entry) -> Entry {
        if !self.plain(&e.key) {
            e.size = plain_len(e.size).unwrap_or(0);
        }
        e
    }
}

impl Backend for SealedBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn local_root(&self) -> Option<&std::path::Path> {
        self.inner.local_root()
    }

    fn read(&self, key: &str, limit: u64) -> Result<Vec<u8>> {
        if self.plain(key) {
            return self.inner.read(key, limit);
        }
        let sealed = self.inner.read(key, sealed_len(limit))?;
        let plain = self
            .sealer
            .open(key, &sealed)
            .map_err(|e| self.damaged(key, &e))?;
        if plain.len() as u64 > limit {
            return Err(Error::Damaged {
                location: self.inner.location(),
                key: key.to_string(),
                detail: format!("larger than the {limit} bytes an object of its kind may be"),
            });
        }
        Ok(plain)
    }

    fn read_head(&self, key: &str, len: u64) -> Result<(Vec<u8>, u64)> {
        if self.plain(key) {
            return self.inner.read_head(key, len);
        }
        let (prefix, total) = self
            .inner
            .read_head(key, if len == 0 { 0 } else { head_len(len) })?;
        let Some(size) = plain_len(total) else {
            return Err(Error::Damaged {
                location: self.inner.location(),
                key: key.to_string(),
                detail: format!("{total} bytes is no sealed object's length"),
            });
        };
        if len == 0 {
            // Existence and size only, as for a plain object: the bytes are checked when read.
            return Ok((Vec::new(), size));
        }
        let head = self
            .sealer
            .open_head(key, &prefix, total, len)
            .map_err(|e| self.damaged(key, &e))?;
        Ok((head, size))
    }

    fn write_new(&self, key: &str, bytes: &[u8]) -> Result<Written> {
        if self.plain(key) {
            return self.inner.write_new(key, bytes);
        }
        let sealed = self.seal(key, bytes)?;
        self.inner.write_new_owned(key, sealed)
    }

    fn write_new_owned(&self, key: &str, bytes: Vec<u8>) -> Result<Written> {
        if self.plain(key) {
            return self.inner.write_new_owned(key, bytes);
        }
        let sealed = self.seal(key, &bytes)?;
        drop(bytes);
        self.inner.write_new_owned(key, sealed)
    }

    fn write(&self, key: &str, bytes: &[u8]) -> Result<()> {
        if self.plain(key) {
            return self.inner.write(key, bytes);
        }
        let sealed = self.seal(key, bytes)?;
        self.inner.write(key, &sealed)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        Ok(self
            .inner
            .list(prefix)?
            .into_iter()
            .map(|e| self.entry(e))
            .collect())
    }

    fn list_folders(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.list_folders(prefix)
    }

    fn sync(&self) -> Result<()> {
        self.inner.sync()
    }

    fn requests(&self) -> Vec<(&'static str, u64)> {
        self.inner.requests()
    }
}
