//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the repository, or while capturing a data dir into it or
/// restoring one from it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on a path failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path operated on.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A KyroDB file or repository encoding could not be decoded.
    #[error(transparent)]
    Format(#[from] kyrodb_backup_format::Error),
    /// The data directory refused or failed a step (target checks, staging, swap, capture).
    #[error(transparent)]
    DataDir(#[from] kyrodb_backup_datadir::Error),
    /// The data directory's state could not be captured.
    #[error("{0}")]
    Capture(String),
    /// The backup directory holds no `kyrodb_backup` repository.
    #[error("{0} is not a kyrodb_backup repository")]
    NotARepository(String),
    /// The repository was written by a newer tool.
    #[error("repository format {found} is newer than this kyrodb_backup supports ({supported})")]
    UnsupportedVersion {
        /// Version found in the repository.
        found: u32,
        /// Highest version this build reads.
        supported: u32,
    },
    /// Another run holds the repository lock.
    #[error("{0}")]
    Locked(String),
    /// A create's lease was not renewed in time: a prune elsewhere may have collected chunks
    /// it counted on, so it committed nothing.
    #[error("{0}; nothing was committed")]
    LeaseLost(String),
    /// An incremental's reference was deleted by a prune before this create could announce
    /// itself.
    #[error("reference backup {0} was pruned while this create started; nothing was committed")]
    ParentGone(String),
    /// The store failed while a stored file was being read (not damage: it may work later).
    #[error("{0}")]
    StoreFailed(String),
    /// The store holding the repository failed (denied, unreachable, missing bucket).
    #[error(transparent)]
    Backend(kyrodb_backup_backend::Error),
    /// No backup has this id or prefix.
    #[error("no backup matches {0:?}")]
    NotFound(String),
    /// A prefix matches several backups.
    #[error("backup id prefix {prefix:?} is ambiguous: it matches {}", matches.join(", "))]
    Ambiguous {
        /// The prefix given.
        prefix: String,
        /// The ids it matches.
        matches: Vec<String>,
    },
    /// A prefix is shorter than the 8 characters ids may be shortened to.
    #[error("backup id prefix {0:?} is too short: give at least 8 characters")]
    PrefixTooShort(String),
    /// Stored data is missing or damaged.
    #[error("{0}")]
    Damaged(String),
    /// The repository is encrypted and no passphrase was given for it.
    #[error("{location} is encrypted and no passphrase was given ({why})")]
    KeyRequired {
        /// The repository's location.
        location: String,
        /// Why there is none (what the key source said).
        why: String,
    },
    /// The passphrase given opens none of the repository's key slots.
    #[error("the passphrase opens none of the {slots} key slot(s) of {location}")]
    WrongPassphrase {
        /// The repository's location.
        location: String,
        /// How many intact slots were tried.
        slots: usize,
    },
    /// The location already holds a repository (or other objects) where a new one was asked for.
    #[error("{0}")]
    AlreadyExists(String),
    /// A key operation that would leave the repository worse off (removing its last key slot,
    /// a slot that does not exist, a key operation on a plain repository).
    #[error("{0}")]
    KeyRefused(String),
    /// The file system ran out of space (or quota) while writing; what was written for the
    /// operation has been removed.
    #[error("no space left on the file system of {}: the operation needed up to {needed} bytes, {free} are free", path.display())]
    NoSpace {
        /// The directory written to (the repository, or the data dir's parent).
        path: PathBuf,
        /// Bytes the operation needed at most.
        needed: u64,
        /// Bytes free for this user on that file system when it failed.
        free: u64,
    },
}

impl Error {
    /// Whether this is the file system running out of space or quota (`ENOSPC`, `EDQUOT`).
    pub fn is_no_space(&self) -> bool {
        let io = match self {
            Error::NoSpace { .. } => return true,
            Error::Io { source, .. } => Some(source),
            Error::DataDir(kyrodb_backup_datadir::Error::Io(e))
            | Error::Backend(kyrodb_backup_backend::Error::Io(e)) => Some(e.io_error()),
            Error::Format(kyrodb_backup_format::Error::Io(e)) => Some(e),
            _ => None,
        };
        io.and_then(std::io::Error::raw_os_error).is_some_and(|c| {
            c == rustix::io::Errno::NOSPC.raw_os_error()
                || c == rustix::io::Errno::DQUOT.raw_os_error()
        })
    }

    /// `self`, or [`Error::NoSpace`] when it is the file system of `path` running out of
    /// space: with what the operation `needed` and what is free now.
    pub(crate) fn or_no_space(self, path: &std::path::Path, needed: u64) -> Self {
        if !self.is_no_space() || matches!(self, Error::NoSpace { .. }) {
            return self;
        }
        Error::NoSpace {
            path: path.to_path_buf(),
            needed,
            free: free_bytes(path),
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<kyrodb_backup_durable::Error> for Error {
    fn from(e: kyrodb_backup_durable::Error) -> Self {
        match e {
            kyrodb_backup_durable::Error::Io { path, source } => Error::Io { path, source },
            other => Error::Io {
                path: other.path().to_path_buf(),
                source: std::io::Error::new(other.io_error().kind(), other.to_string()),
            },
        }
    }
}

impl From<kyrodb_backup_backend::Error> for Error {
    fn from(e: kyrodb_backup_backend::Error) -> Self {
        match e {
            kyrodb_backup_backend::Error::Io(io) => io.into(),
            kyrodb_backup_backend::Error::Damaged {
                location,
                key,
                detail,
            } => Error::Damaged(format!("{location}/{key}: {detail}")),
            other => Error::Backend(other),
        }
    }
}

/// Bytes an unprivileged writer may still use on the file system of `path` (0 when unknown).
pub(crate) fn free_bytes(path: &std::path::Path) -> u64 {
    let mut p = path;
    // The nearest existing ancestor (a staging dir may be gone already).
    while !p.exists() {
        match p.parent() {
            Some(parent) => p = parent,
            None => return 0,
        }
    }
    rustix::fs::statvfs(p).map_or(0, |s| s.f_bavail.saturating_mul(s.f_frsize))
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds a path to I/O errors.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
