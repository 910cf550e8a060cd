//! `golden create` and `golden check`: exact top-k queries of a data directory, recorded and
//! checked again (after a restore, say).

use std::path::{Path, PathBuf};
use std::time::Instant;

use kyrodb_backup_datadir::golden::{
    golden_check, golden_create, GoldenFile, GoldenOptions, GoldenReport,
};
use kyrodb_backup_format::engine::DistanceMetric;
use serde::Serialize;

use crate::error::{Error, Result};

/// Worker threads of an exact top-k search: one per core.
pub(crate) fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
}

/// Reads a golden file (of `golden create`).
pub(crate) fn read_golden_file(path: &Path) -> Result<GoldenFile> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::GoldenFile(format!("{}: {e}", path.display())))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::GoldenFile(format!("{} is not a golden file: {e}", path.display())))
}

/// What `golden create` is asked to do.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GoldenCreateOptions {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Stored vectors to use as queries.
    pub queries: usize,
    /// Results per query.
    pub k: usize,
    /// Seed of the sampling (the same seed picks the same queries).
    pub seed: u64,
    /// Metric to use when the data dir records none.
    pub distance: Option<DistanceMetric>,
    /// Where to write the golden file.
    pub out: PathBuf,
}

impl GoldenCreateOptions {
    /// `queries` queries of top-`k` on `data_dir`, written to `out`, with seed 42.
    pub fn new(
        data_dir: impl Into<PathBuf>,
        queries: usize,
        k: usize,
        out: impl Into<PathBuf>,
    ) -> Self {
        Self {
            data_dir: data_dir.into(),
            queries,
            k,
            seed: 42,
            distance: None,
            out: out.into(),
        }
    }
}

/// What `golden create` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct GoldenCreateReport {
    /// The golden file.
    pub out: PathBuf,
    /// Queries recorded.
    pub queries: usize,
    /// Results per query.
    pub k: usize,
    /// The metric used.
    pub metric: String,
    /// Vector dimension.
    pub dimension: u64,
    /// Live documents searched.
    pub count: u64,
    /// Seconds it took.
    pub seconds: f64,
}

fn golden_error(dir: &Path, e: kyrodb_backup_datadir::Error) -> Error {
    match e {
        kyrodb_backup_datadir::Error::NoMetric => Error::NoMetric(dir.to_path_buf()),
        e => Error::Golden {
            data_dir: dir.to_path_buf(),
            detail: e.to_string(),
        },
    }
}

/// Samples stored vectors of `opts.data_dir` as queries, records the exact top-k of each under
/// the data dir's metric, and writes the golden file atomically.
///
/// # Errors
///
/// [`Error::InvalidOptions`] for zero queries or k, [`Error::NoMetric`], [`Error::Golden`],
/// I/O errors writing the file.
pub fn golden_create_file(opts: &GoldenCreateOptions) -> Result<GoldenCreateReport> {
    if opts.k == 0 || opts.queries == 0 {
        return Err(Error::InvalidOptions(
            "the number of queries and k must be at least 1".into(),
        ));
    }
    let started = Instant::now();
    let golden = golden_create(
        &opts.data_dir,
        &GoldenOptions {
            queries: opts.queries,
            k: opts.k,
            seed: opts.seed,
            distance: opts.distance,
            threads: threads(),
            budget_bytes: None,
        },
    )
    .map_err(|e| golden_error(&opts.data_dir, e))?;
    let mut bytes = serde_json::to_vec_pretty(&golden).map_err(|e| Error::Other(e.to_string()))?;
    bytes.push(b'\n');
    kyrodb_backup_durable::atomic_write(&opts.out, &bytes, true)?;
    Ok(GoldenCreateReport {
        out: opts.out.clone(),
        queries: golden.queries.len(),
        k: golden.k,
        metric: golden.metric.to_string(),
        dimension: golden.dimension,
        count: golden.count,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What `golden check` found. `report.ok` is false on any difference.
#[derive(Debug, Clone, Serialize)]
pub struct GoldenCheckReport {
    /// The golden file.
    pub file: PathBuf,
    /// The data directory checked.
    pub data_dir: PathBuf,
    /// The file's metric.
    pub metric: String,
    /// Results per query.
    pub k: usize,
    /// The comparison.
    pub report: GoldenReport,
    /// Live documents the file saw.
    #[serde(skip)]
    pub count: u64,
    /// (file's, data dir's) dimension, when they differ (nothing could be compared).
    #[serde(skip)]
    pub dimension_differs: Option<(u64, u64)>,
}

/// Recomputes the queries of the golden `file` on `data_dir` under the dir's own metric and
/// reports the first difference.
///
/// # Errors
///
/// [`Error::GoldenFile`] when the file cannot be read, [`Error::Golden`] when the data dir
/// does not recover.
pub fn golden_check_file(data_dir: &Path, file: &Path) -> Result<GoldenCheckReport> {
    let golden = read_golden_file(file)?;
    let (report, dimension_differs) = match golden_check(data_dir, &golden, threads()) {
        Err(kyrodb_backup_datadir::Error::Dimension { file: f, dir: d }) => (
            GoldenReport {
                ok: false,
                metric_differs: None,
                count_differs: None,
                first_mismatch: None,
                queries: golden.queries.len(),
            },
            Some((f, d)),
        ),
        other => (other.map_err(|e| golden_error(data_dir, e))?, None),
    };
    Ok(GoldenCheckReport {
        file: file.to_path_buf(),
        data_dir: data_dir.to_path_buf(),
        metric: golden.metric.to_string(),
        k: golden.k,
        report,
        count: golden.count,
        dimension_differs,
    })
}
