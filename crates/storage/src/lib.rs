//! The `kyrodb_backup` repository (on a local disk or in an S3 bucket, through
//! `kyrodb-backup-backend`), and the two operations that move bytes between it
//! and a KyroDB data directory: capturing a consistent state and restoring one.
//!
//! What it is for: the chunk store of each chain (content-defined chunks named by their
//! XXH3-128, LZ4 where it helps), backup manifests, the leases that let creates run beside each other and beside readers while prunes exclude
//! them chain by chain, deleting backups and
//! the chunks nobody needs, the continuous archive's objects (timelines of WAL pieces and
//! bases, [`Repository::archive_timelines`], [`prune_archive`]), and the two pipelines between
//! a data dir and the repository:
//! [`create_backup`] (through `kyrodb-backup-datadir`'s consistent capture) and [`restore`]
//! (into its staging directory, checked, then swapped in).
//! What it is not for: acting on a live data dir by itself (`kyrodb-backup-datadir`), deciding
//! what to keep (`kyrodb-backup-retention`), which backup rebuilds a point in time
//! (`kyrodb-backup-chain`), deep checks (`kyrodb-backup-verify`), or composing these into
//! commands (`kyrodb-backup-ops`). It never reads the clock or the environment: ids, times and
//! permissions come in through options.
//!
//! ```
//! use kyrodb_backup_storage::{lease_for_prune, Repository};
//!
//! let dir = tempfile::tempdir()?;
//! let repo = Repository::open_or_init(&dir.path().join("backups"))?;
//! let _prune = lease_for_prune(repo.backend(), 1_760_970_600)?;
//! assert!(matches!(
//!     lease_for_prune(repo.backend(), 1_760_970_600),
//!     Err(kyrodb_backup_storage::Error::Locked(_))
//! ));
//! assert!(repo.list()?.backups.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod archive;
mod capture;
mod cdc;
mod chunkstore;
mod error;
mod golden;
mod keys;
mod lease;
mod progress;
mod prune;
mod records;
mod repository;
mod restore;
mod sealed;

pub use archive::{
    plan_archive_prune, prune_archive, ArchivePrunePlan, ArchivePruneReport, ArchivedBase,
    ArchivedPiece, ArchivedTimeline, ObservedRecord, ARCHIVE_DIR,
};
pub use capture::{create_backup, wal_summary, CreateOptions, CreateReport, GoldenOutcome};
pub use chunkstore::{
    store_failure, ChainStore, FileReader, SharedChunk, StoreStats, AVG_CHUNK, MAX_CHUNK, MIN_CHUNK,
};
pub use error::{Error, Result};
pub use golden::{read_golden, MAX_GOLDEN_BYTES};
pub use keys::{
    init_encrypted, init_plain, InitOptions, KeySlotInfo, KeySource, Passphrase, Unlocker,
};
pub use kyrodb_backup_backend as backend;
pub use kyrodb_backup_crypto as crypto;
pub use lease::{
    archive_holder, lease_for_archive, lease_for_create, lease_for_prune, wait_for_prune,
    ArchiveHolder, Lease, LEASE_TTL, PRUNE_WAIT,
};
pub use progress::{NoProgress, Progress, ProgressWriter};
pub use prune::{prune_backups, PruneReport};
pub use records::{DrillKey, DrillRecord, Settings, DRILLS_PREFIX, SETTINGS_KEY};
pub use repository::{
    parallel_map, Listing, Repository, StoredBackup, ENCRYPTED_REPOSITORY_VERSION, LEFTOVER_AGE,
};
pub use restore::{
    restore, restore_backup, Expectation, PlannedContent, PlannedFile, RestoreOptions,
    RestoreReport, RestoreSet,
};
