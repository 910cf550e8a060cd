//! Values shared by several commands: the clock, and the contract's backup object.

use std::time::{SystemTime, UNIX_EPOCH};

use kyrodb_backup_format::repo::BackupManifest;
use kyrodb_backup_storage::StoredBackup;
use serde::Serialize;

/// The moment a command runs at. Commands never read the clock: the caller passes this in, so
/// tests pin it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Now {
    /// Unix seconds.
    pub secs: u64,
    /// Nanoseconds within that second.
    pub nanos: u32,
}

impl Now {
    /// The Unix second `secs`, at its start.
    pub fn at(secs: u64) -> Self {
        Self { secs, nanos: 0 }
    }

    /// The moment `t` (before 1970 counts as 1970).
    pub fn from_system_time(t: SystemTime) -> Self {
        t.duration_since(UNIX_EPOCH).map_or(Self::at(0), |d| Self {
            secs: d.as_secs(),
            nanos: d.subsec_nanos(),
        })
    }

    /// This instant as a [`SystemTime`].
    pub fn system_time(self) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::new(self.secs, self.nanos)
    }
}

/// The contract's backup object: what `list` shows of each backup, and `create` of the new
/// one. Backups of the engine's built-in tool carry `"format": "builtin"` and no chain id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupSummary {
    /// Backup id.
    pub id: String,
    /// Unix second taken.
    pub timestamp: u64,
    /// `Full` or `Incremental`.
    pub backup_type: String,
    /// The backup an incremental was made against.
    pub parent_id: Option<String>,
    /// Id of the full backup its chain starts with (this tool's backups only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<String>,
    /// Operator's text.
    pub description: String,
    /// Bytes of data-dir files captured.
    pub size_bytes: u64,
    /// Bytes it added to the repository.
    pub stored_bytes: u64,
    /// Live documents its restore yields.
    pub vector_count: u64,
    /// Vector dimension, where known.
    pub dimension: Option<u64>,
    /// Distance metric, where the snapshot stores one.
    pub distance: Option<String>,
    /// Checksum of the backup's manifest (or the built-in tool's archive checksum).
    pub checksum: String,
    /// The captured snapshot.
    pub snapshot: Option<SnapshotRef>,
    /// The WAL entries captured.
    pub wal: Option<WalCoverage>,
    /// `builtin` for the engine's built-in tool's backups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<&'static str>,
    /// The golden queries recorded with it (`create --golden N`), if any.
    pub golden: Option<GoldenSummary>,
    /// The last restore drill of it, if any (`list` fills what the record's name says,
    /// `show` the figures too).
    pub last_drill: Option<LastDrill>,
    /// Nanoseconds within `timestamp` (orders backups of one second).
    #[serde(skip)]
    pub subsec_nanos: u32,
}

/// A captured snapshot, as the backup object names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotRef {
    /// File name.
    pub file: String,
    /// Payload version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// When the engine took it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    /// Last WAL sequence number it contains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_wal_seq: Option<u64>,
    /// Layout name (`V4`, `LegacyV2`, ...).
    #[serde(skip)]
    pub layout: Option<String>,
    /// Documents it holds.
    #[serde(skip)]
    pub doc_count: Option<u64>,
}

/// The WAL entries a backup captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WalCoverage {
    /// First sequence number.
    pub first_seq: u64,
    /// Last sequence number.
    pub last_seq: u64,
    /// Timestamp of the first entry.
    pub first_timestamp: u64,
    /// Timestamp of the last entry.
    pub last_timestamp: u64,
    /// Entries captured.
    #[serde(skip)]
    pub entries: u64,
}

impl BackupSummary {
    /// The summary of one of this tool's backups.
    pub fn of(b: &StoredBackup) -> Self {
        let m: &BackupManifest = &b.manifest;
        Self {
            id: m.id.clone(),
            timestamp: m.timestamp,
            backup_type: m.backup_type.to_string(),
            parent_id: m.parent_id.clone(),
            chain_id: Some(m.chain_id.clone()),
            description: m.description.clone(),
            size_bytes: m.size_bytes,
            stored_bytes: m.stored_bytes,
            vector_count: m.vector_count,
            dimension: m.dimension,
            distance: m.distance.map(|d| d.to_string()),
            checksum: b.checksum.to_hex(),
            snapshot: m.snapshot.as_ref().map(|s| SnapshotRef {
                file: s.file.clone(),
                version: Some(s.version),
                timestamp: Some(s.timestamp),
                last_wal_seq: Some(s.last_wal_seq),
                layout: Some(s.layout.clone()),
                doc_count: Some(s.doc_count),
            }),
            wal: m.wal.as_ref().map(|w| WalCoverage {
                first_seq: w.first_seq,
                last_seq: w.last_seq,
                first_timestamp: w.first_timestamp,
                last_timestamp: w.last_timestamp,
                entries: w.entries,
            }),
            format: None,
            golden: m.golden.as_ref().map(|g| GoldenSummary {
                queries: g.queries,
                k: g.k,
                searched: g.searched,
            }),
            last_drill: None,
            subsec_nanos: m.subsec_nanos,
        }
    }
}

/// The golden queries a backup records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GoldenSummary {
    /// Number of queries.
    pub queries: u64,
    /// Results per query.
    pub k: u64,
    /// Documents they searched (all live ones, or a sample).
    pub searched: u64,
}

/// The last restore drill of a backup.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastDrill {
    /// Unix second it ran.
    pub timestamp: u64,
    /// Whether it passed.
    pub passed: bool,
    /// Seconds its restore took (`show` only).
    pub restore_seconds: Option<f64>,
    /// Its restore throughput in MB/s (`show` only).
    pub restore_mb_per_s: Option<f64>,
    /// Golden queries it ran (`show` only).
    pub golden_queries: Option<u64>,
    /// What differed, when it failed (`show` only).
    pub problem: Option<String>,
}

impl LastDrill {
    /// What a record's name says.
    pub(crate) fn of_key(k: &kyrodb_backup_storage::DrillKey) -> Self {
        Self {
            timestamp: k.timestamp,
            passed: k.passed,
            restore_seconds: None,
            restore_mb_per_s: None,
            golden_queries: None,
            problem: None,
        }
    }

    /// A whole record.
    pub(crate) fn of_record(r: &kyrodb_backup_storage::DrillRecord) -> Self {
        Self {
            timestamp: r.timestamp,
            passed: r.passed,
            restore_seconds: Some(r.restore_seconds),
            restore_mb_per_s: Some(r.restore_mb_per_s),
            golden_queries: Some(r.golden_queries),
            problem: r.problem.clone(),
        }
    }
}

/// One backup of a chain, oldest first in [`crate::ShowReport::chain`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainLink {
    /// Backup id.
    pub id: String,
    /// Unix second taken.
    pub timestamp: u64,
    /// `Full` or `Incremental`.
    pub backup_type: String,
}

/// A file (written by a restore, or held in an archive) and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileSize {
    /// Its name (a data-dir file name).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}
