//! The data directory's MANIFEST, modern (JSON) and plain-text legacy, and KyroDB file names.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A data directory's MANIFEST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDirManifest {
    /// The JSON layout.
    Modern(ModernManifest),
    /// The plain-text layout `snapshot_number: N`: snapshot file `snapshot_N`, and every
    /// `wal_*.wal` in the directory, in id order.
    Legacy {
        /// N.
        snapshot_number: u64,
    },
}

/// The JSON MANIFEST's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModernManifest {
    /// Layout version (1).
    pub version: u64,
    /// The live snapshot's file name, or none yet.
    pub latest_snapshot: Option<String>,
    /// Highest WAL sequence number the live snapshot contains (absent in older manifests).
    #[serde(default)]
    pub latest_snapshot_wal_seq: Option<u64>,
    /// WAL segments in replay order.
    pub wal_segments: Vec<String>,
    /// Unix seconds of the last rewrite.
    pub last_updated: u64,
}

fn numeric_id(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether `name` is a snapshot file name: `snapshot_<digits>.snap`, or the legacy
/// `snapshot_<digits>`. Paths and anything else are refused.
pub fn is_snapshot_file_name(name: &str) -> bool {
    numeric_id(name, "snapshot_", ".snap").is_some() || numeric_id(name, "snapshot_", "").is_some()
}

/// Whether `name` is a WAL segment name: `wal_<digits>.wal`.
pub fn is_wal_file_name(name: &str) -> bool {
    numeric_id(name, "wal_", ".wal").is_some()
}

impl DataDirManifest {
    /// Parses either layout.
    ///
    /// # Errors
    ///
    /// [`Error::Manifest`](crate::Error::Manifest) when the bytes are neither layout.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let text =
            std::str::from_utf8(bytes).map_err(|_| Error::Manifest("not UTF-8 text".into()))?;
        let trimmed = text.trim();
        if let Some(n) = trimmed.strip_prefix("snapshot_number:") {
            let n = n.trim();
            return n
                .parse()
                .map(|snapshot_number| DataDirManifest::Legacy { snapshot_number })
                .map_err(|_| Error::Manifest(format!("snapshot_number {n:?} is not a number")));
        }
        let m: ModernManifest =
            serde_json::from_str(text).map_err(|e| Error::Manifest(e.to_string()))?;
        if let Some(s) = &m.latest_snapshot {
            if !is_snapshot_file_name(s) {
                return Err(Error::Manifest(format!(
                    "latest_snapshot {s:?} is not a snapshot file name"
                )));
            }
        }
        for w in &m.wal_segments {
            if !is_wal_file_name(w) {
                return Err(Error::Manifest(format!(
                    "wal segment {w:?} is not a WAL file name"
                )));
            }
        }
        Ok(DataDirManifest::Modern(m))
    }

    /// A modern MANIFEST.
    pub fn modern(
        latest_snapshot: Option<String>,
        latest_snapshot_wal_seq: Option<u64>,
        wal_segments: Vec<String>,
        last_updated: u64,
    ) -> Self {
        DataDirManifest::Modern(ModernManifest {
            version: 1,
            latest_snapshot,
            latest_snapshot_wal_seq,
            wal_segments,
            last_updated,
        })
    }

    /// The snapshot file the state starts from.
    pub fn snapshot_file(&self) -> Option<String> {
        match self {
            DataDirManifest::Modern(m) => m.latest_snapshot.clone(),
            DataDirManifest::Legacy { snapshot_number } => {
                Some(format!("snapshot_{snapshot_number}"))
            }
        }
    }

    /// `latest_snapshot_wal_seq`, where recorded.
    pub fn latest_snapshot_wal_seq(&self) -> Option<u64> {
        match self {
            DataDirManifest::Modern(m) => m.latest_snapshot_wal_seq,
            DataDirManifest::Legacy { .. } => None,
        }
    }

    /// The WAL segments to replay, in order. The legacy layout takes every `wal_*.wal` of the
    /// directory listing, in id order.
    pub fn wal_segments(&self, dir_listing: &[String]) -> Vec<String> {
        match self {
            DataDirManifest::Modern(m) => m.wal_segments.clone(),
            DataDirManifest::Legacy { .. } => {
                let mut w: Vec<(u64, String)> = dir_listing
                    .iter()
                    .filter_map(|n| numeric_id(n, "wal_", ".wal").map(|id| (id, n.clone())))
                    .collect();
                w.sort();
                w.into_iter().map(|(_, n)| n).collect()
            }
        }
    }

    /// Encodes the MANIFEST as the engine writes it (pretty JSON, two-space indent, no
    /// trailing newline; or the one plain-text line).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            DataDirManifest::Modern(m) => {
                serde_json::to_vec_pretty(m).expect("manifest serializes")
            }
            DataDirManifest::Legacy { snapshot_number } => {
                format!("snapshot_number: {snapshot_number}\n").into_bytes()
            }
        }
    }
}
