//! Where a `kyrodb_backup` repository's objects live: a directory on a local disk, or a bucket
//! (and prefix) on S3 or an S3-compatible store. Both hold exactly the same keys, so a
//! repository copied from one to the other with any tool stays a repository.
//!
//! What it is for: the handful of object operations a repository needs ([`Backend`]): read an
//! object (whole, or its first bytes), write one atomically (create-only or replacing), delete
//! one, list a prefix, and make what was written durable. [`LocalBackend`] writes through a
//! temporary file, `fsync` and a rename (create-only: a hard link, which fails if the name
//! exists); [`S3Backend`] uses single PUTs (create-only: `If-None-Match: *`), retries with
//! backoff and jitter, and never asks an instance-metadata service for credentials.
//! What it is not for: knowing what the keys mean (that is `kyrodb-backup-storage`), or reading
//! the environment: [`S3Config`] is filled by the caller.
//!
//! ```
//! use kyrodb_backup_backend::{Backend, LocalBackend, Written};
//!
//! let dir = tempfile::tempdir()?;
//! let local = LocalBackend::new(dir.path().to_path_buf());
//! assert_eq!(local.write_new("a/b", b"first")?, Written::Created);
//! assert_eq!(local.write_new("a/b", b"second")?, Written::Existed);
//! assert_eq!(local.read("a/b", 1024)?, b"first");
//! local.sync()?;
//! assert_eq!(local.list("a/")?.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod local;
mod s3;

use std::time::SystemTime;

pub use local::LocalBackend;
pub use s3::{S3Backend, S3Config};

/// What went wrong with an object operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object does not exist.
    #[error("{location}: {key} does not exist")]
    NotFound {
        /// The repository's location.
        location: String,
        /// The object's key.
        key: String,
    },
    /// The credentials may not do this.
    #[error("{location}: {operation} of {key} was denied: {detail}")]
    Denied {
        /// The repository's location.
        location: String,
        /// What was tried (`read`, `write`, `delete`, `list`).
        operation: &'static str,
        /// The object's key.
        key: String,
        /// What the store said.
        detail: String,
    },
    /// The bucket does not exist.
    #[error("{location}: the bucket does not exist")]
    NoBucket {
        /// The repository's location.
        location: String,
    },
    /// The store could not be reached, or kept failing after the retries.
    #[error("{location}: {operation} of {key} failed: {detail}")]
    Unavailable {
        /// The repository's location.
        location: String,
        /// What was tried.
        operation: &'static str,
        /// The object's key.
        key: String,
        /// The last failure.
        detail: String,
    },
    /// An object is not what a repository object can be (a symlink, not a regular file,
    /// larger than its kind allows).
    #[error("{location}: {key}: {detail}")]
    Damaged {
        /// The repository's location.
        location: String,
        /// The object's key.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// A local file-system step failed.
    #[error(transparent)]
    Io(#[from] kyrodb_backup_durable::Error),
    /// The location or the settings cannot describe a store.
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// Whether the object was missing.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

/// The result of an object operation.
pub type Result<T> = std::result::Result<T, Error>;

/// What a create-only write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The object did not exist; it now holds the bytes given.
    Created,
    /// An object of that key existed; it was left as it was.
    Existed,
}

/// One object found by a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The object's key, relative to the repository.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, by the store's clock.
    pub modified: SystemTime,
}

/// The object operations a repository is made of. Keys are relative, `/`-separated, without
/// empty, `.` or `..` components.
///
/// Every write is atomic: a reader sees the old object, or none, or the whole new one. A
/// listing is only ever used to discover what exists; nothing's correctness depends on it
/// showing a write made an instant before.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// How to name the repository to a person (`/srv/backups`, `s3://bucket/prefix`).
    fn location(&self) -> String;

    /// The local directory, for a local backend.
    fn local_root(&self) -> Option<&std::path::Path> {
        None
    }

    /// The whole object; [`Error::Damaged`] when it is larger than `limit` bytes.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when it does not exist, and as the store fails.
    fn read(&self, key: &str, limit: u64) -> Result<Vec<u8>>;

    /// The object's first `len` bytes (fewer when it is shorter) and its whole size.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when it does not exist, and as the store fails.
    fn read_head(&self, key: &str, len: u64) -> Result<(Vec<u8>, u64)>;

    /// Writes an object unless one of that key exists.
    ///
    /// # Errors
    ///
    /// As the store fails.
    fn write_new(&self, key: &str, bytes: &[u8]) -> Result<Written>;

    /// [`Backend::write_new`] of bytes the caller gives up (an object store sends them
    /// without a copy).
    ///
    /// # Errors
    ///
    /// As the store fails.
    fn write_new_owned(&self, key: &str, bytes: Vec<u8>) -> Result<Written> {
        self.write_new(key, &bytes)
    }

    /// Writes an object, replacing any of that key.
    ///
    /// # Errors
    ///
    /// As the store fails.
    fn write(&self, key: &str, bytes: &[u8]) -> Result<()>;

    /// Deletes an object; one that does not exist is no error.
    ///
    /// # Errors
    ///
    /// As the store fails ([`Error::Denied`] for credentials that may not delete).
    fn delete(&self, key: &str) -> Result<()>;

    /// Every object whose key starts with `prefix` (a `/`-terminated folder, or empty for
    /// all), in key order.
    ///
    /// # Errors
    ///
    /// As the store fails.
    fn list(&self, prefix: &str) -> Result<Vec<Entry>>;

    /// The names of the folders directly under `prefix` (a `/`-terminated folder or empty).
    ///
    /// # Errors
    ///
    /// As the store fails.
    fn list_folders(&self, prefix: &str) -> Result<Vec<String>>;

    /// Makes every write and delete made so far durable (a local backend syncs the
    /// directories it changed; an object store's writes are durable when acknowledged).
    ///
    /// # Errors
    ///
    /// As the store fails.
    fn sync(&self) -> Result<()>;

    /// How many requests of each kind this backend sent (`GET`, `PUT`, `HEAD`, `DELETE`,
    /// `LIST`); empty for a local one.
    fn requests(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// Checks a key: relative, `/`-separated, no empty, `.` or `..` components.
pub(crate) fn check_key(location: &str, key: &str) -> Result<()> {
    if key.is_empty()
        || key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(Error::Damaged {
            location: location.to_string(),
            key: key.to_string(),
            detail: "not a repository key".into(),
        });
    }
    Ok(())
}

/// Checks a listing prefix: empty, or a key followed by `/`.
pub(crate) fn check_prefix(location: &str, prefix: &str) -> Result<()> {
    match prefix.strip_suffix('/') {
        None if prefix.is_empty() => Ok(()),
        Some(p) => check_key(location, p),
        None => Err(Error::Damaged {
            location: location.to_string(),
            key: prefix.to_string(),
            detail: "a listing prefix ends with /".into(),
        }),
    }
}

/// The object of a local path or an `s3://bucket/prefix` location.
///
/// # Errors
///
/// [`Error::Config`] for an `s3://` location without a bucket, and as [`S3Backend::new`].
pub fn open(location: &Location) -> Result<std::sync::Arc<dyn Backend>> {
    Ok(match location {
        Location::Local(path) => std::sync::Arc::new(LocalBackend::new(path.clone())),
        Location::S3(config) => std::sync::Arc::new(S3Backend::new(config.clone())?),
    })
}

/// Where a repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// A directory.
    Local(std::path::PathBuf),
    /// A bucket and prefix on S3 or an S3-compatible store.
    S3(S3Config),
}

impl Location {
    /// A local directory.
    pub fn local(path: impl Into<std::path::PathBuf>) -> Self {
        Location::Local(path.into())
    }

    /// How to name it to a person.
    pub fn display(&self) -> String {
        match self {
            Location::Local(p) => p.display().to_string(),
            Location::S3(c) => c.url(),
        }
    }

    /// The directory, for a local repository.
    pub fn as_local(&self) -> Option<&std::path::Path> {
        match self {
            Location::Local(p) => Some(p),
            Location::S3(_) => None,
        }
    }
}

impl From<&std::path::Path> for Location {
    fn from(p: &std::path::Path) -> Self {
        Location::Local(p.to_path_buf())
    }
}

impl From<&std::path::PathBuf> for Location {
    fn from(p: &std::path::PathBuf) -> Self {
        Location::Local(p.clone())
    }
}

impl From<&Location> for Location {
    fn from(l: &Location) -> Self {
        l.clone()
    }
}

impl From<std::path::PathBuf> for Location {
    fn from(p: std::path::PathBuf) -> Self {
        Location::Local(p)
    }
}

/// Splits `s3://bucket/prefix` into bucket and prefix (without slashes at either end);
/// `None` for anything that is not an `s3://` URL.
///
/// # Errors
///
/// [`Error::Config`] for an `s3://` URL without a bucket.
pub fn parse_s3_url(url: &str) -> Result<Option<(String, String)>> {
    let Some(rest) = url.strip_prefix("s3://") else {
        return Ok(None);
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(Error::Config(format!("{url}: no bucket named")));
    }
    let prefix = prefix.trim_matches('/');
    if !prefix.is_empty() {
        check_key(url, prefix)?;
    }
    Ok(Some((bucket.to_string(), prefix.to_string())))
}
