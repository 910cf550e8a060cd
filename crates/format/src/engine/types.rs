//! Small types shared by snapshots and WAL entries.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Key/value metadata of a document, in the order the file stores it (so re-encoding a decoded
/// file reproduces its bytes).
pub type Metadata = Vec<(String, String)>;

/// The distance metric of an index, as the engine encodes it (variant index 0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DistanceMetric {
    /// `max(0, 1 - dot(q, v))` on L2-normalised vectors.
    Cosine,
    /// `sqrt(sum((q_i - v_i)^2))`.
    Euclidean,
    /// `max(0, 1 - dot(q, v))`.
    InnerProduct,
}

impl DistanceMetric {
    /// The bincode variant index.
    pub fn index(self) -> u32 {
        match self {
            DistanceMetric::Cosine => 0,
            DistanceMetric::Euclidean => 1,
            DistanceMetric::InnerProduct => 2,
        }
    }

    /// The metric with this bincode variant index.
    pub fn from_index(i: u32) -> Option<Self> {
        Some(match i {
            0 => DistanceMetric::Cosine,
            1 => DistanceMetric::Euclidean,
            2 => DistanceMetric::InnerProduct,
            _ => return None,
        })
    }
}

impl fmt::Display for DistanceMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DistanceMetric::Cosine => "cosine",
            DistanceMetric::Euclidean => "euclidean",
            DistanceMetric::InnerProduct => "innerproduct",
        })
    }
}

impl FromStr for DistanceMetric {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "cosine" => Ok(DistanceMetric::Cosine),
            "euclidean" => Ok(DistanceMetric::Euclidean),
            "innerproduct" | "inner_product" => Ok(DistanceMetric::InnerProduct),
            _ => Err(Error::Manifest(format!(
                "unknown distance metric {s:?} (expected cosine, euclidean or innerproduct)"
            ))),
        }
    }
}

/// The engine's ANN search mode (stored by one V3 layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnnSearchMode {
    /// Exact fp32 search.
    Fp32Strict,
    /// SQ8 candidates re-ranked in fp32.
    Sq8Rerank,
}

impl AnnSearchMode {
    pub(crate) fn index(self) -> u32 {
        match self {
            AnnSearchMode::Fp32Strict => 0,
            AnnSearchMode::Sq8Rerank => 1,
        }
    }

    pub(crate) fn from_index(i: u32) -> Option<Self> {
        match i {
            0 => Some(AnnSearchMode::Fp32Strict),
            1 => Some(AnnSearchMode::Sq8Rerank),
            _ => None,
        }
    }
}

/// A WAL operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalOp {
    /// Insert or replace a document (embedding and metadata).
    Insert,
    /// Remove a document.
    Delete,
    /// Replace the metadata of an existing document.
    UpdateMetadata,
}

impl WalOp {
    pub(crate) fn index(self) -> u32 {
        match self {
            WalOp::Insert => 0,
            WalOp::Delete => 1,
            WalOp::UpdateMetadata => 2,
        }
    }

    pub(crate) fn from_index(i: u32) -> Option<Self> {
        match i {
            0 => Some(WalOp::Insert),
            1 => Some(WalOp::Delete),
            2 => Some(WalOp::UpdateMetadata),
            _ => None,
        }
    }
}
