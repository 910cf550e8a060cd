//! The `kyrodb_backup` repository on disk, and the two operations that move bytes between it
//! and a KyroDB data directory: capturing a consistent state and restoring one.
//!
//! What it is for: the chunk store of each chain (content-defined chunks named by their
//! XXH3-128, LZ4 where it helps), backup manifests, the repository lock, atomic and durable
//! writes, and restores that build beside the target and swap it in atomically.
//! What it is not for: deciding what to keep (`kyrodb-backup-retention`), which backup rebuilds
//! a point in time (`kyrodb-backup-chain`), or deep checks (`kyrodb-backup-verify`). It never
//! reads the clock or the environment: ids, times and permissions come in through options.
//!
//! ```
//! use kyrodb_backup_storage::{LockMode, Repository};
//!
//! let dir = tempfile::tempdir()?;
//! let repo = Repository::open_or_init(&dir.path().join("backups"))?;
//! let _lock = repo.lock(LockMode::Exclusive)?;
//! assert!(matches!(repo.lock(LockMode::Shared), Err(kyrodb_backup_storage::Error::Locked(_))));
//! assert!(repo.list()?.backups.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod builtin;
mod capture;
mod chunkstore;
mod error;
mod fsutil;
mod migrate;
mod prune;
mod repository;
mod restore;

pub use builtin::{
    archive_members, builtin_chain, check_builtin, extracted, list_builtin, member_reader,
    BuiltinBackup, BuiltinMeta, Member,
};
pub use capture::{
    create_backup, wal_summary, CreateOptions, CreateReport, PrefixReader, MAX_CAPTURE_ATTEMPTS,
};
pub use chunkstore::{
    ChainStore, FileReader, SharedChunk, StoreStats, AVG_CHUNK, MAX_CHUNK, MIN_CHUNK,
};
pub use error::{Error, Result};
pub use fsutil::{
    atomic_write, fsync_dir, NoProgress, Progress, ProgressWriter, DIR_MODE, FILE_MODE,
};
pub use migrate::{migrate_data_dir, MetricSource, MigrateOptions, MigrateReport};
pub use prune::{prune_backups, PruneReport};
pub use repository::{Listing, LockMode, RepoLock, Repository, StoredBackup};
pub use restore::{
    process_using, restore, restore_backup, target_is_empty, Expectation, PlannedContent,
    PlannedFile, RestoreOptions, RestoreReport, RestoreSet,
};
