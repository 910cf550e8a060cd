//! The commands of `kyrodb_backup` as a library: one call per command, each taking an
//! `*Options` value, the repository's [`Location`] (a directory, or an [`S3Config`] bucket and
//! prefix; a `&Path` converts), and (where time matters) the moment [`Now`], and returning a
//! typed `*Report` that serializes to the command's JSON.
//!
//! What it is for: everything the command line can do, for another KyroDB crate or a test:
//! [`create()`], [`list()`], [`show()`], [`restore()`] (a backup, a point in time from backups
//! and the continuous archive, or a backup of the engine's built-in tool), [`verify()`],
//! [`prune()`], [`check()`], [`copy()`] (between any two repositories), [`archive()`] (follows
//! a live data dir until stopped; it takes a [`Clock`] instead of a [`Now`]), [`migrate()`],
//! [`golden_create_file`] and [`golden_check_file`], [`drill()`] (a restore rehearsal into a
//! scratch directory, checked with the golden queries [`create()`] records when asked, and
//! recorded in the repository, which [`check()`] watches) and [`config()`]. Repository backups and the built-in
//! tool's backups beside them are found through one catalog, so ids of either kind work
//! everywhere. Failures are one [`Error`] whose [`Error::kind`] tells refusals for safety
//! from damage from plain failures.
//! What it is not for: parsing arguments, printing, or hints that name flags (the `cli`
//! crate), and reading the clock or the environment: the caller passes [`Now`], every
//! permission (such as replacing a non-empty data dir) in the options, and the S3 endpoint and
//! credentials in [`S3Config`].
//!
//! ```
//! use kyrodb_backup_format::engine::{DataDirManifest, WalEntry, WalLayout, WalOp, WalWriter};
//! use kyrodb_backup_ops::{create, restore, CreateOptions, NoProgress, Now, RestoreOptions, RestoreSource};
//!
//! // A data dir the way the engine writes one: a WAL segment and a MANIFEST naming it.
//! let tmp = tempfile::tempdir()?;
//! let data = tmp.path().join("data");
//! std::fs::create_dir(&data)?;
//! let mut wal = WalWriter::new(Vec::new())?;
//! for seq in 1..=3 {
//!     let entry = WalEntry {
//!         op: WalOp::Insert,
//!         doc_id: seq,
//!         embedding: vec![0.6, 0.8],
//!         metadata: vec![],
//!         seq_no: seq,
//!         timestamp: 1_760_970_600 + seq * 60, // one write a minute
//!     };
//!     wal.append(&entry, WalLayout::W3)?;
//! }
//! std::fs::write(data.join("wal_1760970600000000.wal"), wal.into_inner())?;
//! let manifest = DataDirManifest::modern(None, None, vec!["wal_1760970600000000.wal".into()], 1_760_970_600);
//! std::fs::write(data.join("MANIFEST"), manifest.to_bytes())?;
//!
//! // Back it up, then bring back the state as of the second write.
//! let backups = tmp.path().join("backups");
//! let taken = create(&backups, &CreateOptions::new(&data), Now::at(1_760_971_000), &NoProgress)?;
//! assert_eq!(taken.backup.vector_count, 3);
//! let source = RestoreSource::PointInTime { at: 1_760_970_720, nearest: false };
//! let restored = restore(&backups, &RestoreOptions::new(tmp.path().join("restored"), source), Now::at(1_760_971_100), &NoProgress)?;
//! assert_eq!((restored.vector_count, restored.recovered_to), (2, 1_760_970_720));
//!
//! // An off-site copy: every chunk checked on the way, the manifest written last.
//! let copied = kyrodb_backup_ops::copy(&backups, tmp.path().join("off-site"), &kyrodb_backup_ops::CopyOptions::all(), Now::at(1_760_971_200))?;
//! assert_eq!(copied.backups.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod access;
mod archive;
mod catalog;
mod check;
mod config;
mod copy;
mod create;
mod drill;
mod error;
mod golden;
mod keys;
mod list;
mod migrate;
mod model;
mod prune;
mod restore;
mod verify;

pub use access::RepoRef;
pub use archive::{
    archive, ArchiveEvent, ArchiveGap, ArchiveOptions, ArchiveReport, ArchiveStatus, Clock,
};
pub use catalog::BuiltinBackup;
pub use check::{check, ArchiveCheck, CheckOptions, CheckReport, DrillCheck};
pub use config::{config, ConfigOptions, ConfigReport};
pub use copy::{copy, CopiedBackup, CopyOptions, CopyReport};
pub use create::{
    create, CreateOptions, CreateReport, Reference, GOLDEN_BUDGET_BYTES, GOLDEN_K,
    MAX_GOLDEN_QUERIES,
};
pub use drill::{drill, DrillGolden, DrillOptions, DrillPhases, DrillReport};
pub use error::{Error, ErrorKind, Result};
pub use golden::{
    golden_check_file, golden_create_file, GoldenCheckReport, GoldenCreateOptions,
    GoldenCreateReport,
};
pub use keys::{
    init, key_add, key_list, key_passwd, key_remove, key_unlock, InitOptions, InitReport,
    KeyChangeReport, KeyListReport,
};
pub use list::{
    list, show, BuiltinShowReport, ListReport, ShowReport, Shown, ShownFile, TimelineBase,
    TimelineReport, Windows,
};
pub use migrate::{migrate, MigrateOptions, MigrateReport, MigratedSnapshot};
pub use model::{
    BackupSummary, ChainLink, FileSize, GoldenSummary, LastDrill, Now, SnapshotRef, WalCoverage,
};
pub use prune::{prune, ChainNotCollected, KeptBackup, PruneOptions, PruneReport};
pub use restore::{restore, Migrated, RestoreOptions, RestoreReport, RestoreSource};
pub use verify::{verify, BuiltinCheck, TimelineCheck, Unreadable, VerifyOptions, VerifyReport};

/// Types that appear in options and reports, from the crates underneath.
pub mod types {
    pub use kyrodb_backup_chain::{Error as PointInTimeError, Window};
    pub use kyrodb_backup_datadir::golden::{GoldenReport, Mismatch};
    pub use kyrodb_backup_datadir::migrate::{MetricEvidence, MetricSource};
    pub use kyrodb_backup_format::engine::DistanceMetric;
    pub use kyrodb_backup_format::repo::{ContentHash, FileKind, SkippedFile};
    pub use kyrodb_backup_retention::RetentionPolicy;
    pub use kyrodb_backup_storage::StoreStats;
    pub use kyrodb_backup_verify::{BackupCheck, CurrentEngine, Problem};
}

pub use kyrodb_backup_storage::backend::{parse_s3_url, Location, S3Config};
pub use kyrodb_backup_storage::crypto::{KdfParams, Secret};
pub use kyrodb_backup_storage::{
    KeySlotInfo, KeySource, NoProgress, Passphrase, Progress, Unlocker,
};
