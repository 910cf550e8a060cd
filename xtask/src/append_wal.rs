//! `cargo xtask append-wal DIR [--mb M]`: grows a data directory's WAL as the engine would.
//!
//! Recovers `DIR` to find its newest WAL segment, last sequence number and dimension, then
//! appends about `M` MiB of inserts of random unit vectors to that segment, continuing the
//! sequence numbers.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use kyrodb_backup_format::engine::{
    encode_entry, recover, DirSource, LiveIds, RecoveryOptions, WalEntry, WalLayout, WalOp,
};

use crate::util::Rng;

/// Arguments of `cargo xtask append-wal`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// The data directory whose newest WAL segment grows.
    pub(crate) dir: PathBuf,
    /// MiB of inserts to append.
    #[arg(long, value_name = "M", default_value_t = 10)]
    pub(crate) mb: u64,
}

/// Appends the inserts; see the module documentation.
pub(crate) fn run(args: Args) -> Result<()> {
    let Args { dir, mb } = args;
    let mut ids = LiveIds::default();
    let report = recover(
        &mut DirSource::new(&dir),
        &mut ids,
        &RecoveryOptions::default(),
    )?;
    let last = report
        .segments
        .last()
        .context("the MANIFEST lists no WAL segment")?;
    let mut seq = report.last_seq();
    let dim = report.dimension.unwrap_or(384);
    let file = fs::OpenOptions::new()
        .append(true)
        .open(dir.join(&last.name))?;
    let mut out = BufWriter::new(file);
    let mut rng = Rng(seq);
    let mut written = 0;
    while written < mb << 20 {
        seq += 1;
        let entry = WalEntry {
            op: WalOp::Insert,
            doc_id: seq,
            embedding: rng.unit(dim),
            metadata: Vec::new(),
            seq_no: seq,
            timestamp: 1_795_100_000,
        };
        let body = encode_entry(&entry, WalLayout::W3);
        out.write_all(&(body.len() as u32).to_le_bytes())?;
        out.write_all(&body)?;
        out.write_all(&crc32fast::hash(&body).to_le_bytes())?;
        written += body.len() as u64 + 8;
    }
    out.flush()?;
    println!("appended {written} bytes to {} (last seq {seq})", last.name);
    Ok(())
}
