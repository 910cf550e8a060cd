//! The crate's one error type.

use std::path::PathBuf;

use kyrodb_backup_format::engine::DistanceMetric;

/// Everything that can go wrong acting on a data directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system step failed.
    #[error(transparent)]
    Io(#[from] kyrodb_backup_durable::Error),
    /// A KyroDB file of the directory does not decode.
    #[error(transparent)]
    Format(#[from] kyrodb_backup_format::Error),
    /// The directory is not a KyroDB data directory, or its state cannot be read or written
    /// consistently.
    #[error("{0}")]
    DataDir(String),
    /// A restore target holds files and replacing them was not allowed.
    #[error("{} is not empty", .0.display())]
    TargetNotEmpty(PathBuf),
    /// A process holds files of the directory open.
    #[error("{} is in use by process {pid} ({command})", path.display())]
    InUse {
        /// The data directory.
        path: PathBuf,
        /// The process id.
        pid: u32,
        /// The process's command name.
        command: String,
    },
    /// The directory cannot be swapped atomically (a mount point, say).
    #[error("{} cannot be swapped atomically ({detail}): is it a mount point? restore into a directory inside it", path.display())]
    Unswappable {
        /// The directory.
        path: PathBuf,
        /// The operating system's answer.
        detail: String,
    },
    /// A requested metric contradicts the one the snapshot stores.
    #[error("the snapshot stores the metric {stored}; {requested} contradicts it")]
    MetricConflict {
        /// The snapshot's metric.
        stored: DistanceMetric,
        /// The metric asked for.
        requested: DistanceMetric,
    },
    /// A legacy snapshot stores no metric, and none was given to migrate it with.
    #[error("legacy snapshot {} ({}, {} documents, taken at {}) stores no distance metric", .0.snapshot, .0.layout, .0.documents, .0.timestamp)]
    NoStoredMetric(Box<crate::migrate::MetricEvidence>),
    /// The directory records no distance metric and none was given.
    #[error("the data dir records no distance metric")]
    NoMetric,
    /// Nothing to query.
    #[error("the data dir holds no vectors")]
    Empty,
    /// Golden queries of one dimension against vectors of another.
    #[error("the golden file has dimension {file}, the data dir {dir}")]
    Dimension {
        /// The golden file's.
        file: u64,
        /// The data dir's.
        dir: u64,
    },
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
