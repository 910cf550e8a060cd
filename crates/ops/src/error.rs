//! The one error type of the commands, and the kinds that exit codes are decided from.

use std::path::PathBuf;

use kyrodb_backup_format::engine::DistanceMetric;

/// How a failed command failed, for whoever decides exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// It could not be done: I/O, bad input, not found.
    Failed,
    /// Stored data is damaged.
    Integrity,
    /// Refused for safety: a non-empty or busy target, a locked repository, a point in time
    /// that cannot be rebuilt exactly.
    Refused,
}

/// Everything a command can fail with. Messages name no command-line flag or environment
/// variable: front ends add their own hints.
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
    /// A KyroDB file or repository encoding does not decode.
    #[error(transparent)]
    Format(kyrodb_backup_format::Error),
    /// Stored data is missing or damaged.
    #[error("{0}")]
    Damaged(String),
    /// The backup directory holds no repository.
    #[error("{0} is not a kyrodb_backup repository")]
    NotARepository(String),
    /// The repository was written by a newer tool.
    #[error("repository format {found} is newer than this kyrodb_backup supports ({supported})")]
    UnsupportedRepository {
        /// Version found.
        found: u32,
        /// Highest version this build reads.
        supported: u32,
    },
    /// Another run holds the repository lock.
    #[error("{0}")]
    Locked(String),
    /// The store refused the credentials, or they may not do this (delete, say).
    #[error("{0}")]
    Denied(String),
    /// The bucket does not exist.
    #[error("{0}")]
    NoBucket(String),
    /// The store could not be reached, or kept failing after the retries.
    #[error("{0}")]
    Unavailable(String),
    /// No backup has this id or prefix.
    #[error("no backup matches {0:?}")]
    NotFound(String),
    /// A prefix matches several backups.
    #[error("backup id prefix {prefix:?} is ambiguous: it matches {}", matches.join(", "))]
    Ambiguous {
        /// The prefix.
        prefix: String,
        /// What it matches.
        matches: Vec<String>,
    },
    /// A prefix shorter than 8 characters.
    #[error("backup id prefix {0:?} is too short: give at least 8 characters")]
    PrefixTooShort(String),
    /// An incremental asked to build on the newest backup of an empty repository.
    #[error("the repository has no backup yet")]
    NoBackupYet,
    /// An incremental's reference cannot be used.
    #[error("reference {reference}: {source}")]
    Reference {
        /// The reference asked for.
        reference: String,
        /// Why it cannot be used.
        source: Box<Error>,
    },
    /// The data directory is not a KyroDB data directory, or its state cannot be captured,
    /// rewritten or swapped.
    #[error("{0}")]
    DataDir(String),
    /// A restore target holds files, and replacing them was not allowed.
    #[error("{} is not empty", .0.display())]
    TargetNotEmpty(PathBuf),
    /// A process holds files of the data directory open.
    #[error("{} is in use by process {pid} ({command})", path.display())]
    InUse {
        /// The data directory.
        path: PathBuf,
        /// The process id.
        pid: u32,
        /// The process's command name.
        command: String,
    },
    /// A requested metric contradicts the one a snapshot stores.
    #[error("the metric {requested} contradicts the metric {stored} stored in the {}snapshot", if *.in_backup { "backup's " } else { "" })]
    MetricConflict {
        /// The snapshot's metric.
        stored: DistanceMetric,
        /// The metric asked for.
        requested: DistanceMetric,
        /// Whether the snapshot is a backup's (a restore) or the data dir's (a migration).
        in_backup: bool,
    },
    /// A legacy snapshot stores no metric, and none was given: the current engine cannot
    /// start on it as it is, and migrating it needs a metric someone chose.
    #[error("legacy snapshot {} ({}, {} documents, taken at {}) stores no distance metric; {:.1}% of its vectors have unit norm: {}", .0.snapshot, .0.layout, .0.documents, .0.timestamp, .0.unit_norm_share * 100.0, .0.suggestion)]
    NeedsMetric(Box<kyrodb_backup_datadir::migrate::MetricEvidence>),
    /// A data directory records no metric, and none was given.
    #[error("{} records no distance metric", .0.display())]
    NoMetric(PathBuf),
    /// Golden queries could not be made or checked.
    #[error("{}: {detail}", data_dir.display())]
    Golden {
        /// The data directory.
        data_dir: PathBuf,
        /// Why.
        detail: String,
    },
    /// A golden file cannot be read.
    #[error("{0}")]
    GoldenFile(String),
    /// An option is out of range.
    #[error("{0}")]
    InvalidOptions(String),
    /// A point in time cannot be rebuilt, or the backups cannot be searched for one.
    #[error(transparent)]
    PointInTime(kyrodb_backup_chain::Error),
    /// The file system of `path` ran out of space (or quota); what the operation had written
    /// was removed.
    #[error("no space left on the file system of {}: up to {needed} bytes were needed, {free} are free", path.display())]
    NoSpace {
        /// The repository, or the data dir being restored.
        path: PathBuf,
        /// Bytes the operation needed at most.
        needed: u64,
        /// Bytes free when it failed.
        free: u64,
    },
    /// A backup was deleted (by a prune) while this command read it.
    #[error(
        "backup {0} was deleted by a prune while this ran; nothing was restored or judged damaged"
    )]
    Vanished(String),
    /// The repository is encrypted and no passphrase was given for it.
    #[error("{location} is encrypted and no passphrase was given ({why})")]
    KeyRequired {
        /// The repository.
        location: String,
        /// Why there is none.
        why: String,
    },
    /// The passphrase opens none of the repository's key slots (not damage: another
    /// passphrase may).
    #[error("the passphrase opens none of the {slots} key slot(s) of {location}")]
    WrongPassphrase {
        /// The repository.
        location: String,
        /// How many intact slots were tried.
        slots: usize,
    },
    /// A repository exists where a new one was asked for.
    #[error("{0}")]
    AlreadyExists(String),
    /// A key operation that would leave the repository worse off, or that does not apply.
    #[error("{0}")]
    KeyRefused(String),
    /// Anything else, as its message.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// The kind of failure: [`ErrorKind::Refused`] for safety refusals,
    /// [`ErrorKind::Integrity`] for damaged stored data, [`ErrorKind::Failed`] otherwise.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Locked(_)
            | Error::TargetNotEmpty(_)
            | Error::InUse { .. }
            | Error::NeedsMetric(_)
            | Error::PointInTime(kyrodb_backup_chain::Error::NotRecoverable { .. }) => {
                ErrorKind::Refused
            }
            Error::Damaged(_) | Error::Format(_) => ErrorKind::Integrity,
            Error::Reference { source, .. } => match source.kind() {
                ErrorKind::Refused => ErrorKind::Refused,
                _ => ErrorKind::Failed,
            },
            _ => ErrorKind::Failed,
        }
    }
}

impl From<kyrodb_backup_format::Error> for Error {
    fn from(e: kyrodb_backup_format::Error) -> Self {
        Error::Format(e)
    }
}

impl From<kyrodb_backup_durable::Error> for Error {
    fn from(e: kyrodb_backup_durable::Error) -> Self {
        match e {
            kyrodb_backup_durable::Error::Io { path, source } => Error::Io { path, source },
            other => Error::Other(other.to_string()),
        }
    }
}

impl From<kyrodb_backup_datadir::Error> for Error {
    fn from(e: kyrodb_backup_datadir::Error) -> Self {
        use kyrodb_backup_datadir::Error as D;
        match e {
            D::Io(io) => io.into(),
            D::Format(f) => Error::Format(f),
            D::TargetNotEmpty(p) => Error::TargetNotEmpty(p),
            D::NoStoredMetric(evidence) => Error::NeedsMetric(evidence),
            D::InUse { path, pid, command } => Error::InUse { path, pid, command },
            D::MetricConflict { stored, requested } => Error::MetricConflict {
                stored,
                requested,
                in_backup: false,
            },
            other => Error::DataDir(other.to_string()),
        }
    }
}

impl From<kyrodb_backup_storage::Error> for Error {
    fn from(e: kyrodb_backup_storage::Error) -> Self {
        use kyrodb_backup_storage::Error as S;
        match e {
            S::Io { path, source } => Error::Io { path, source },
            S::Format(f) => Error::Format(f),
            S::DataDir(d) => d.into(),
            S::Capture(s) => Error::DataDir(s),
            S::NotARepository(p) => Error::NotARepository(p),
            S::UnsupportedVersion { found, supported } => {
                Error::UnsupportedRepository { found, supported }
            }
            S::Locked(p) => Error::Locked(p),
            S::NotFound(s) => Error::NotFound(s),
            S::Ambiguous { prefix, matches } => Error::Ambiguous { prefix, matches },
            S::PrefixTooShort(s) => Error::PrefixTooShort(s),
            S::Damaged(s) => Error::Damaged(s),
            S::NoSpace { path, needed, free } => Error::NoSpace { path, needed, free },
            S::Backend(b) => b.into(),
            S::StoreFailed(m) => Error::Unavailable(m),
            S::KeyRequired { location, why } => Error::KeyRequired { location, why },
            S::WrongPassphrase { location, slots } => Error::WrongPassphrase { location, slots },
            S::AlreadyExists(m) => Error::AlreadyExists(m),
            S::KeyRefused(m) => Error::KeyRefused(m),
            other => Error::Other(other.to_string()),
        }
    }
}

impl From<kyrodb_backup_storage::backend::Error> for Error {
    fn from(e: kyrodb_backup_storage::backend::Error) -> Self {
        use kyrodb_backup_storage::backend::Error as B;
        match e {
            B::Denied { .. } => Error::Denied(e.to_string()),
            B::NoBucket { .. } => Error::NoBucket(e.to_string()),
            B::Unavailable { .. } => Error::Unavailable(e.to_string()),
            B::Damaged { .. } | B::NotFound { .. } => Error::Damaged(e.to_string()),
            B::Io(io) => io.into(),
            other => Error::Other(other.to_string()),
        }
    }
}

impl From<kyrodb_backup_chain::Error> for Error {
    fn from(e: kyrodb_backup_chain::Error) -> Self {
        Error::PointInTime(e)
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
