//! Golden queries stored with a backup: reading them back.

use kyrodb_backup_datadir::golden::GoldenFile;
use kyrodb_backup_format::repo::GoldenQueries;

use crate::chunkstore::ChainStore;
use crate::error::{Error, Result};

/// Largest golden file read back (a hostile manifest cannot make a reader allocate more).
pub const MAX_GOLDEN_BYTES: u64 = 256 << 20;

/// Reads and checks the golden file a manifest records: every chunk and the whole file's hash
/// (by the chain's reader), then that it decodes and holds what the manifest says.
///
/// # Errors
///
/// [`Error::Damaged`] when the file is missing, damaged, too large, or does not match the
/// manifest's record of it.
pub fn read_golden(store: &ChainStore, golden: &GoldenQueries) -> Result<GoldenFile> {
    let name = GoldenQueries::FILE_NAME;
    if golden.size > MAX_GOLDEN_BYTES {
        return Err(Error::Damaged(format!(
            "{name}: {} bytes, above the {MAX_GOLDEN_BYTES}-byte limit",
            golden.size
        )));
    }
    // Decoded as it is read; decoding reads to the end, where the reader checks the whole
    // file's hash (a damaged chunk fails its own hash before it is decoded).
    let file: GoldenFile =
        serde_json::from_reader(std::io::BufReader::new(store.reader(&golden.entry())))
            .map_err(|e| Error::Damaged(format!("{name} does not decode: {e}")))?;
    let dims_ok = file
        .queries
        .iter()
        .all(|q| q.vector.len() as u64 == file.dimension && q.ids.len() == q.scores.len());
    if file.queries.len() as u64 != golden.queries || file.k as u64 != golden.k || !dims_ok {
        return Err(Error::Damaged(format!(
            "{name} holds {} queries of top-{}, the manifest records {} of top-{}",
            file.queries.len(),
            file.k,
            golden.queries,
            golden.k
        )));
    }
    Ok(file)
}
