//! `migrate`: a legacy data directory rewritten in the current layouts.

use std::path::PathBuf;

use kyrodb_backup_datadir::migrate::{metric_suggestion, migrate_data_dir, MetricSource};
use kyrodb_backup_format::engine::DistanceMetric;
use serde::Serialize;

use crate::error::Result;
use crate::model::Now;

/// What `migrate` is asked to do.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MigrateOptions {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The metric the index used, when the snapshot stores none.
    pub distance: Option<DistanceMetric>,
    /// Report what would change and the evidence for the metric; change nothing.
    pub dry_run: bool,
}

impl MigrateOptions {
    /// Migrates `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            distance: None,
            dry_run: false,
        }
    }
}

/// The legacy snapshot and the evidence for its metric.
#[derive(Debug, Clone, Serialize)]
pub struct MigratedSnapshot {
    /// File name.
    pub file: String,
    /// Layout (`V1`, `LegacyV2`, ...).
    pub layout: String,
    /// When the engine took it.
    pub timestamp: u64,
    /// Documents it holds.
    pub documents: u64,
    /// Vector dimension.
    pub dimension: u64,
    /// The metric it stores, if any.
    pub stored_distance: Option<String>,
    /// Share of vectors with unit L2 norm.
    pub unit_norm_share: f64,
    /// What the norms suggest about the metric.
    pub suggestion: &'static str,
    /// Vectors with unit L2 norm.
    #[serde(skip)]
    pub unit_norm: u64,
}

/// What a migration found and did.
#[derive(Debug, Clone, Serialize)]
pub struct MigrateReport {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Whether it was already current (nothing to do).
    pub already_current: bool,
    /// The snapshot, if the state has one.
    pub snapshot: Option<MigratedSnapshot>,
    /// The metric of the migrated snapshot.
    pub distance: Option<String>,
    /// Where that metric came from.
    pub distance_source: Option<MetricSource>,
    /// WAL entries read.
    pub wal_entries_read: u64,
    /// WAL entries written (the engine would skip the rest).
    pub wal_entries_written: u64,
    /// Live documents (the same before and after).
    pub vector_count: u64,
    /// Where the legacy files were kept.
    pub previous: Option<PathBuf>,
}

/// Rewrites a legacy data directory in the current layouts, checked to replay identically,
/// swapped in atomically, the legacy files kept as `<dir>.pre-migrate-<now>`; see
/// `kyrodb_backup_datadir::migrate::migrate_data_dir`.
///
/// # Errors
///
/// [`crate::Error::DataDir`], [`crate::Error::MetricConflict`], [`crate::Error::InUse`],
/// [`crate::Error::Format`].
pub fn migrate(opts: &MigrateOptions, now: Now) -> Result<MigrateReport> {
    let mut m =
        kyrodb_backup_datadir::migrate::MigrateOptions::new(opts.data_dir.clone(), now.secs);
    m.distance = opts.distance;
    m.dry_run = opts.dry_run;
    let r = migrate_data_dir(&m)?;
    Ok(MigrateReport {
        data_dir: opts.data_dir.clone(),
        dry_run: r.dry_run,
        already_current: r.already_current,
        snapshot: r.snapshot.as_ref().map(|(name, s)| MigratedSnapshot {
            file: name.clone(),
            layout: format!("{:?}", s.info.layout),
            timestamp: s.info.timestamp,
            documents: s.info.documents,
            dimension: s.info.dimension,
            stored_distance: s.info.distance.map(|d| d.to_string()),
            unit_norm_share: s.unit_norm_share(),
            suggestion: metric_suggestion(s.unit_norm_share()),
            unit_norm: s.unit_norm,
        }),
        distance: r.metric.map(|m| m.0.to_string()),
        distance_source: r.metric.map(|m| m.1),
        wal_entries_read: r.wal_entries.0,
        wal_entries_written: r.wal_entries.1,
        vector_count: r.vector_count,
        previous: r.previous,
    })
}
