//! KyroDB's on-disk formats and the encodings of the `kyrodb_backup` repository.
//!
//! What it is for: reading and writing, byte for byte, everything in a KyroDB data directory
//! (the MANIFEST in both layouts, snapshots V1 to V4, WAL segments of W1 to W3 entries),
//! recovering a directory's state exactly as the engine does, and encoding the repository's
//! chunk files and backup manifests. Readers stream: a snapshot is decoded one document at a
//! time, a WAL one frame at a time, so memory does not grow with file size.
//! What it is not for: touching the file system beyond the reader a caller passes in (the
//! storage crate does I/O), or deciding anything about backups.
//!
//! ```
//! use kyrodb_backup_format::{WalEntry, WalLayout, WalOp, WalReader, WalWriter};
//!
//! let entry = WalEntry {
//!     op: WalOp::Insert,
//!     doc_id: 7,
//!     embedding: vec![0.6, 0.8],
//!     metadata: vec![("title".into(), "seven".into())],
//!     seq_no: 1,
//!     timestamp: 1_760_970_600,
//! };
//! let mut w = WalWriter::new(Vec::new())?;
//! w.append(&entry, WalLayout::W3)?;
//! let mut bytes = w.into_inner();
//! bytes.extend_from_slice(&[9, 0]); // a torn frame, as after a crash mid-append
//!
//! let mut r = WalReader::new(bytes.as_slice())?;
//! assert_eq!(r.next_frame()?.map(|f| f.entry), Some(entry));
//! assert!(r.next_frame()?.is_none());
//! assert!(r.torn());
//! assert_eq!(r.valid_len(), bytes.len() as u64 - 2);
//! # Ok::<(), kyrodb_backup_format::Error>(())
//! ```

mod error;
mod kyro_bincode;
mod kyro_manifest;
mod kyro_migrate;
mod kyro_recovery;
mod kyro_snapshot;
mod kyro_types;
mod kyro_wal;
mod repo;
mod snapshot_ids;

pub use error::{Error, Result};
pub use kyro_manifest::{is_snapshot_file_name, is_wal_file_name, DataDirManifest, ModernManifest};
pub use kyro_migrate::{choose_metric, survey_snapshot, write_migrated_snapshot, SnapshotSurvey};
pub use kyro_recovery::{
    recover, recover_from_snapshot_ids, DirSource, Document, FileSource, FullState, LiveIds,
    RecoveryOptions, RecoveryReport, SegmentReport, StateDigest, StateSink,
};
pub use kyro_snapshot::{
    write_v4_snapshot, Snapshot, SnapshotHeader, SnapshotInfo, SnapshotLayout, SnapshotReader,
    V4SnapshotOptions, SNAPSHOT_MAGIC,
};
pub use kyro_types::{AnnSearchMode, DistanceMetric, Metadata, WalOp};
pub use kyro_wal::{
    decode_entry, encode_entry, WalEntry, WalFrame, WalLayout, WalReader, WalWriter, MAX_WAL_ENTRY,
    WAL_MAGIC,
};
pub use repo::{
    chunk_header, decode_chunk, decode_manifest, encode_chunk, encode_manifest, is_backup_id,
    manifest_checksum, BackupManifest, BackupType, ChunkRef, ContentHash, EncodedChunk, FileEntry,
    FileKind, SkippedFile, SnapshotIds, SnapshotSummary, SourceStamp, WalIndex, WalSummary,
    CHUNK_HEADER_LEN, MAX_CHUNK_SIZE, MAX_MANIFEST_SIZE, REPOSITORY_VERSION,
};
pub use snapshot_ids::{read_id_list, SnapshotIdRecorder, MAX_ID_LIST_BYTES};
