//! KyroDB's on-disk formats ([`engine`]) and the encodings of the `kyrodb_backup` repository
//! ([`repo`]).
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
//! use kyrodb_backup_format::engine::{WalEntry, WalLayout, WalOp, WalReader, WalWriter};
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

pub mod engine;
mod error;
mod ids;
pub mod repo;

pub use error::{Error, Result};

// The items the two halves share, reachable from the crate root inside the crate.
pub(crate) use engine::{
    is_snapshot_file_name, is_wal_file_name, AnnSearchMode, DataDirManifest, DistanceMetric,
    Metadata, SnapshotInfo, SnapshotReader, StateSink, WalOp, WalReader, SNAPSHOT_MAGIC,
};
