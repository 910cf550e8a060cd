//! The KyroDB engine's own files, byte for byte: the data directory's MANIFEST (JSON and the
//! legacy text layout), snapshots V1 to V4, WAL segments of W1 to W3 entries, recovery as the
//! engine does it, the rewrite of legacy snapshots, and the built-in backup tool's archives.

pub(crate) mod bincode;
mod builtin;
mod manifest;
mod migrate;
mod recovery;
mod snapshot;
mod types;
mod wal;

pub use builtin::{builtin_meta_id, read_members, BuiltinMeta, Member, MAX_MEMBERS};
pub use manifest::{is_snapshot_file_name, is_wal_file_name, DataDirManifest, ModernManifest};
pub use migrate::{choose_metric, survey_snapshot, write_migrated_snapshot, SnapshotSurvey};
pub use recovery::{
    recover, recover_with_snapshot_loader, DirSource, Document, FileSource, FullState, LiveIds,
    RecoveryOptions, RecoveryReport, SegmentReport, StateDigest, StateSink,
};
pub use snapshot::{
    write_v4_snapshot, Snapshot, SnapshotHeader, SnapshotInfo, SnapshotLayout, SnapshotReader,
    V4SnapshotOptions, SNAPSHOT_MAGIC,
};
pub use types::{AnnSearchMode, DistanceMetric, Metadata, WalOp};
pub use wal::{
    decode_entry, encode_entry, WalEntry, WalFrame, WalLayout, WalReader, WalWriter, MAX_WAL_ENTRY,
    WAL_MAGIC,
};
