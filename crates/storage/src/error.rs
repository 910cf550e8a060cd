use std::path::PathBuf;

/// Everything that can go wrong in the repository or while capturing or restoring a data dir.
///
/// The binary maps variants to exit codes: [`Error::is_refusal`] (4) and
/// [`Error::is_integrity`] (3); every other variant is a plain failure (1).
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
    /// The backup directory holds no `kyrodb_backup` repository.
    #[error("{} is not a kyrodb_backup repository", .0.display())]
    NotARepository(PathBuf),
    /// The repository was written by a newer tool.
    #[error("repository format {found} is newer than this kyrodb_backup supports ({supported})")]
    UnsupportedVersion {
        /// Version found in the repository.
        found: u32,
        /// Highest version this build reads.
        supported: u32,
    },
    /// Another run holds the repository lock.
    #[error("repository {} is locked by another kyrodb_backup run", .0.display())]
    Locked(PathBuf),
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
    /// A prefix is shorter than the 8 characters the contract requires.
    #[error("backup id prefix {0:?} is too short: give at least 8 characters")]
    PrefixTooShort(String),
    /// The data directory is not a KyroDB data directory or cannot be captured consistently.
    #[error("{0}")]
    DataDir(String),
    /// Stored data is missing or damaged.
    #[error("{0}")]
    Damaged(String),
    /// A restore target holds files and clearing was not allowed.
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
    /// A requested metric contradicts the one the data stores.
    #[error("{0}")]
    MetricConflict(String),
    /// A restore target that cannot be swapped atomically (a mount point, say).
    #[error("{0}")]
    Unswappable(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether the operation was refused for safety (exit code 4 in the contract).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Error::Locked(_) | Error::TargetNotEmpty(_) | Error::InUse { .. }
        )
    }

    /// Whether stored data was found damaged (exit code 3 for commands that check integrity).
    pub fn is_integrity(&self) -> bool {
        matches!(self, Error::Damaged(_) | Error::Format(_))
    }

    /// A one-line hint for the operator, where there is a useful one.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::NotARepository(_) => {
                "check --backup-dir, or run `kyrodb_backup create` to start a repository there"
                    .into()
            }
            Error::UnsupportedVersion { .. } => "upgrade kyrodb_backup".into(),
            Error::Locked(_) => {
                "wait for the other run to finish (prune, create and restore take the lock)".into()
            }
            Error::NotFound(_) | Error::Ambiguous { .. } | Error::PrefixTooShort(_) => {
                "run `kyrodb_backup list` to see backup ids".into()
            }
            Error::TargetNotEmpty(p) => format!(
                "set BACKUP_ALLOW_CLEAR=true to replace the contents of {}",
                p.display()
            ),
            Error::InUse { .. } => "stop the KyroDB server before restoring".into(),
            Error::Damaged(_) | Error::Format(_) => {
                "run `kyrodb_backup verify --all`, and restore an older backup if this one is damaged"
                    .into()
            }
            Error::DataDir(_) => "check --data-dir points at a KyroDB data directory".into(),
            Error::MetricConflict(_) => {
                "leave out --distance: a snapshot that stores its metric keeps it".into()
            }
            _ => return None,
        })
    }
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
