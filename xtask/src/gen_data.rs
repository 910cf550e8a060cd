//! `cargo xtask gen-data DIR`: writes a large data directory in the engine's format.
//!
//! One v4 snapshot of `--vectors` random unit vectors of dimension `--dim` (600,000 of
//! dimension 384 by default, about 1 GB), then `--wal-segments` WAL segments of about
//! `--wal-mb` MiB of inserts each, and a MANIFEST listing them. The data is deterministic: the
//! same arguments write the same bytes.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Result;
use kyrodb_backup_format::engine::{
    write_v4_snapshot, DataDirManifest, DistanceMetric, V4SnapshotOptions, WalEntry, WalLayout,
    WalOp, WalWriter,
};

use crate::util::Rng;

/// Default `--dim`.
const DIM: u64 = 384;
/// Default `--wal-segments`.
const WAL_SEGMENTS: u64 = 4;
/// Default `--wal-mb`.
const WAL_MB: u64 = 16;

/// Arguments of `cargo xtask gen-data`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// The data directory to write (created if missing).
    pub(crate) dir: PathBuf,
    /// Vectors in the snapshot.
    #[arg(long, value_name = "N", default_value_t = 600_000)]
    pub(crate) vectors: u64,
    /// Dimension of every vector.
    #[arg(long, value_name = "D", default_value_t = DIM)]
    pub(crate) dim: u64,
    /// WAL segments after the snapshot.
    #[arg(long, value_name = "K", default_value_t = WAL_SEGMENTS)]
    pub(crate) wal_segments: u64,
    /// Approximate size of each WAL segment, in MiB.
    #[arg(long, value_name = "M", default_value_t = WAL_MB)]
    pub(crate) wal_mb: u64,
}

impl Args {
    /// `gen-data DIR --vectors N` with every other argument at its default.
    pub(crate) fn new(dir: PathBuf, vectors: u64) -> Self {
        Self {
            dir,
            vectors,
            dim: DIM,
            wal_segments: WAL_SEGMENTS,
            wal_mb: WAL_MB,
        }
    }
}

/// Writes the data directory; see the module documentation.
pub(crate) fn run(args: Args) -> Result<()> {
    let Args {
        dir,
        vectors,
        dim,
        wal_segments: segments,
        wal_mb,
    } = args;
    fs::create_dir_all(&dir)?;
    let ts = 1_795_000_000;
    let snapshot = "snapshot_1795000000000000.snap".to_string();
    let w = BufWriter::with_capacity(1 << 20, fs::File::create(dir.join(&snapshot))?);
    let opts = V4SnapshotOptions {
        timestamp: ts,
        dimension: dim,
        distance: DistanceMetric::Cosine,
        last_wal_seq: vectors,
        count: vectors,
    };
    write_v4_snapshot(w, &opts, |i| (i + 1, Rng(i).unit(dim), Vec::new()))?;
    let mut rng = Rng(vectors);
    let mut seq = vectors;
    let mut names = Vec::new();
    for s in 0..segments {
        let name = format!("wal_{}.wal", 1_795_000_000_000_000 + s + 1);
        let f = BufWriter::new(fs::File::create(dir.join(&name))?);
        let mut w = WalWriter::new(f)?;
        let mut written = 4;
        while written < wal_mb << 20 {
            seq += 1;
            let e = WalEntry {
                op: WalOp::Insert,
                doc_id: seq,
                embedding: rng.unit(dim),
                metadata: vec![("batch".into(), s.to_string())],
                seq_no: seq,
                timestamp: ts + 1 + (seq - vectors) / 100,
            };
            w.append(&e, WalLayout::W3)?;
            written += 8 + 4 + 8 + 8 + 4 * dim + 8 + 8 + 5 + 8 + s.to_string().len() as u64 + 16;
        }
        w.into_inner().flush()?;
        names.push(name);
    }
    let manifest = DataDirManifest::modern(Some(snapshot), Some(vectors), names, ts);
    fs::write(dir.join("MANIFEST"), manifest.to_bytes())?;
    println!(
        "wrote {} ({vectors} vectors of dimension {dim}, {segments} WAL segments of ~{wal_mb} MiB, last seq {seq})",
        dir.display()
    );
    Ok(())
}
