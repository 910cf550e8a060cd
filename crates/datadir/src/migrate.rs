//! `migrate`: rewriting a legacy data directory in the current layouts, atomically.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use kyrodb_backup_durable::IoContext;
use kyrodb_backup_format::engine::{
    choose_metric, recover, survey_snapshot, write_migrated_snapshot, DataDirManifest, DirSource,
    DistanceMetric, RecoveryOptions, RecoveryReport, SnapshotSurvey, StateDigest, WalLayout,
    WalReader, WalWriter,
};
use serde::Serialize;

use crate::capture::read_manifest;
use crate::error::{Error, Result};
use crate::target::{Previous, Staging, Target};

/// What `migrate` is asked to do.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MigrateOptions {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The metric chosen by the operator, if any.
    pub distance: Option<DistanceMetric>,
    /// Only report; change nothing.
    pub dry_run: bool,
    /// Keep the legacy files beside the data dir (`<dir>.pre-migrate-<now>`); otherwise they
    /// are deleted after the swap.
    pub keep_previous: bool,
    /// Unix second, for the MANIFEST and the name of the kept previous contents.
    pub now: u64,
}

impl MigrateOptions {
    /// Migrates `data_dir` at the Unix second `now`, keeping the legacy files beside it, with
    /// no metric given.
    pub fn new(data_dir: impl Into<PathBuf>, now: u64) -> Self {
        Self {
            data_dir: data_dir.into(),
            distance: None,
            dry_run: false,
            keep_previous: true,
            now,
        }
    }
}

/// Where the migrated snapshot's metric came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricSource {
    /// The snapshot stores it.
    Stored,
    /// The caller asked for it.
    Requested,
    /// Nobody knows it: cosine was assumed, as the engine used to.
    Assumed,
}

/// What a migration found and did.
#[derive(Debug, Clone)]
pub struct MigrateReport {
    /// The snapshot's file and survey, if the state has a snapshot.
    pub snapshot: Option<(String, SnapshotSurvey)>,
    /// The metric of the migrated snapshot, and where it came from.
    pub metric: Option<(DistanceMetric, MetricSource)>,
    /// WAL entries read, and entries written (the engine would skip the rest).
    pub wal_entries: (u64, u64),
    /// Whether the directory was already in the current layouts (nothing to do).
    pub already_current: bool,
    /// Live documents before and after (equal, or the migration is refused).
    pub vector_count: u64,
    /// Where the legacy files were kept (a real, non-dry run that changed something).
    pub previous: Option<PathBuf>,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

fn segments_of(dir: &Path, manifest: &DataDirManifest) -> Result<Vec<String>> {
    Ok(manifest.wal_segments(&crate::capture::list_dir(dir)?))
}

/// What the norms of a snapshot's vectors suggest about the metric it was indexed with.
pub fn metric_suggestion(unit_norm_share: f64) -> &'static str {
    if unit_norm_share >= 0.99 {
        "the vectors are L2-normalized: consistent with cosine or innerproduct (identical results on normalized vectors); euclidean would rank them by a different formula"
    } else if unit_norm_share <= 0.01 {
        "the vectors are not normalized: the engine rejects such vectors for cosine and innerproduct unless its normalization check was disabled, so euclidean is likely"
    } else {
        "the norms are mixed: check the configuration the index ran with"
    }
}

/// Reads every WAL entry's layout and sequence number to decide what the WAL needs.
fn wal_needs_migration(dir: &Path, segments: &[String]) -> Result<(u64, u64)> {
    let (mut legacy, mut sequenced) = (0u64, 0u64);
    for name in segments {
        let path = dir.join(name);
        let mut r = WalReader::new(BufReader::new(File::open(&path).at(&path)?))
            .map_err(|e| e.in_file(name))?;
        while let Some(f) = r.next_frame().map_err(|e| e.in_file(name))? {
            if f.layout == WalLayout::W3 && f.entry.seq_no != 0 {
                sequenced += 1;
            } else {
                legacy += 1;
            }
        }
    }
    if legacy > 0 && sequenced > 0 {
        return Err(Error::DataDir(
            "the WAL mixes entries with and without sequence numbers; migrate it by hand".into(),
        ));
    }
    Ok((legacy, sequenced))
}

/// Rewrites a data directory whose snapshot or WAL predates the current layouts: the snapshot
/// as V4 with a metric (the one it stores, else the one asked for, else cosine, reported as
/// assumed), legacy WAL entries as W3 numbered after the snapshot (dropping exactly those the
/// engine would skip), and a JSON MANIFEST naming them. The new state is built beside the data
/// dir, checked to replay to exactly the same documents, vectors and metadata as the old one,
/// and swapped in atomically; the legacy files are kept beside it as `<dir>.pre-migrate-<now>`
/// when asked.
///
/// # Errors
///
/// [`Error::DataDir`] for a directory that is not a data dir or whose migration would change
/// its state, [`Error::MetricConflict`], [`Error::InUse`], [`Error::Format`] for damaged files.
pub fn migrate_data_dir(opts: &MigrateOptions) -> Result<MigrateReport> {
    let dir = &opts.data_dir;
    read_manifest(dir)?;
    let target = Target::existing(dir)?;
    let survey = Survey::of(dir)?;
    let metric = survey.metric(opts.distance, true)?;
    let mut report = survey.report(metric, opts.dry_run);
    let staging = target.stage("migrate", &opts.now.to_string())?;
    report.wal_entries.1 = survey.build(dir, staging.dir(), metric, opts.now)?;
    swap_checked(staging, &survey.before, &mut report, opts)?;
    Ok(report)
}

/// What a directory holds, read to decide its migration.
struct Survey {
    segments: Vec<String>,
    /// What recovering the directory found.
    recovered: RecoveryReport,
    wal_entries: u64,
    snapshot: Option<(String, SnapshotSurvey)>,
    before: StateDigest,
}

impl Survey {
    fn of(dir: &Path) -> Result<Self> {
        let mut before = StateDigest::default();
        let recovered = recover(
            &mut DirSource::new(dir),
            &mut before,
            &RecoveryOptions::default(),
        )?;
        let manifest = &recovered.manifest;
        let segments = segments_of(dir, manifest)?;
        let (legacy_entries, sequenced_entries) = wal_needs_migration(dir, &segments)?;
        let snapshot = match manifest.snapshot_file() {
            Some(name) => {
                let path = dir.join(&name);
                let survey = survey_snapshot(BufReader::new(File::open(&path).at(&path)?))
                    .map_err(|e| e.in_file(&name))?;
                Some((name, survey))
            }
            None => None,
        };
        Ok(Self {
            segments,
            recovered,
            wal_entries: legacy_entries + sequenced_entries,
            snapshot,
            before,
        })
    }

    fn already_current(&self) -> bool {
        !self.recovered.in_legacy_layouts()
    }

    /// The metric of the migrated snapshot: the stored one, else `requested`, else (when
    /// `assume`) cosine, reported as assumed; without `assume`, a snapshot that stores none
    /// and no request is [`Error::NoStoredMetric`].
    fn metric(
        &self,
        requested: Option<DistanceMetric>,
        assume: bool,
    ) -> Result<Option<(DistanceMetric, MetricSource)>> {
        let Some((name, s)) = &self.snapshot else {
            return Ok(None);
        };
        let chosen = choose_metric(s.info.distance, requested).map_err(|e| match e {
            kyrodb_backup_format::Error::MetricConflict { stored, requested } => {
                Error::MetricConflict { stored, requested }
            }
            e => Error::Format(e),
        })?;
        Ok(Some(match chosen {
            Some(m) if s.info.distance.is_some() => (m, MetricSource::Stored),
            Some(m) => (m, MetricSource::Requested),
            None if assume => (DistanceMetric::Cosine, MetricSource::Assumed),
            None => {
                return Err(Error::NoStoredMetric(Box::new(MetricEvidence::of(name, s))));
            }
        }))
    }

    fn report(
        &self,
        metric: Option<(DistanceMetric, MetricSource)>,
        dry_run: bool,
    ) -> MigrateReport {
        MigrateReport {
            snapshot: self.snapshot.clone(),
            metric,
            wal_entries: (self.wal_entries, 0),
            already_current: self.already_current(),
            vector_count: self.before.len() as u64,
            previous: None,
            dry_run,
        }
    }

    fn build(
        &self,
        dir: &Path,
        staging: &Path,
        metric: Option<(DistanceMetric, MetricSource)>,
        now: u64,
    ) -> Result<u64> {
        build(
            dir,
            staging,
            self.snapshot.as_ref(),
            &self.segments,
            metric,
            now,
        )
    }
}

/// What is known of a legacy snapshot's metric when it stores none: what an operator needs to
/// choose one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricEvidence {
    /// The snapshot's file name.
    pub snapshot: String,
    /// Its layout (`V1`, `LegacyV2`, `V3`, ...).
    pub layout: String,
    /// When the engine took it (Unix seconds).
    pub timestamp: u64,
    /// Documents it holds.
    pub documents: u64,
    /// Share of its vectors with unit L2 norm.
    pub unit_norm_share: f64,
    /// What that share suggests.
    pub suggestion: &'static str,
}

impl MetricEvidence {
    /// The evidence of a surveyed snapshot.
    pub fn of(name: &str, s: &SnapshotSurvey) -> Self {
        Self {
            snapshot: name.to_string(),
            layout: format!("{:?}", s.info.layout),
            timestamp: s.info.timestamp,
            documents: s.info.documents,
            unit_norm_share: s.unit_norm_share(),
            suggestion: metric_suggestion(s.unit_norm_share()),
        }
    }
}

/// A restored state staged beside its target, migrated to the current layouts when it is
/// legacy: the migrated files are built in a second staging directory (the first is removed),
/// checked to replay to exactly the same state, and returned for the swap with the migration's
/// report and what the migrated state recovers to. A state already current is returned as it
/// is, with neither.
///
/// Unlike [`migrate_data_dir`], no metric is assumed: a legacy snapshot that stores none needs
/// `requested`, or this is [`Error::NoStoredMetric`] and nothing reaches the target.
///
/// # Errors
///
/// [`Error::NoStoredMetric`], [`Error::MetricConflict`], [`Error::DataDir`] when the migrated
/// state would differ, [`Error::Format`] for damaged staged files.
pub fn migrate_staged(
    staging: Staging,
    requested: Option<DistanceMetric>,
    now: u64,
) -> Result<(Staging, Option<(MigrateReport, RecoveryReport)>)> {
    let survey = Survey::of(staging.dir())?;
    if survey.already_current() {
        return Ok((staging, None));
    }
    let metric = survey.metric(requested, false)?;
    let mut report = survey.report(metric, false);
    let next = staging.sibling("migrate", &now.to_string())?;
    report.wal_entries.1 = survey.build(staging.dir(), next.dir(), metric, now)?;
    let mut after = StateDigest::default();
    let recovered = recover(
        &mut DirSource::new(next.dir()),
        &mut after,
        &RecoveryOptions::default(),
    )
    .map_err(|e| Error::DataDir(format!("the migrated state does not recover: {e}")))?;
    if after != survey.before {
        return Err(Error::DataDir(
            "the migrated state would differ from the legacy one; nothing was changed".into(),
        ));
    }
    Ok((next, Some((report, recovered))))
}

/// Checks the staged state replays exactly like the old one, then swaps it in (unless dry or
/// there was nothing to do) and keeps or deletes the legacy files.
fn swap_checked(
    staging: Staging,
    before: &StateDigest,
    report: &mut MigrateReport,
    opts: &MigrateOptions,
) -> Result<()> {
    let mut after = StateDigest::default();
    recover(
        &mut DirSource::new(staging.dir()),
        &mut after,
        &RecoveryOptions::default(),
    )
    .map_err(|e| Error::DataDir(format!("the migrated state does not recover: {e}")))?;
    if after != *before {
        return Err(Error::DataDir(
            "the migrated state would differ from the legacy one; nothing was changed".into(),
        ));
    }
    if opts.dry_run || report.already_current {
        return Ok(());
    }
    let previous = if opts.keep_previous {
        Previous::KeepAs(format!("pre-migrate-{}", opts.now))
    } else {
        Previous::Delete
    };
    report.previous = staging.swap_in(&previous)?.previous;
    Ok(())
}

/// Writes the migrated state into `staging`; returns the number of WAL entries written.
fn build(
    dir: &Path,
    staging: &Path,
    snapshot: Option<&(String, SnapshotSurvey)>,
    segments: &[String],
    metric: Option<(DistanceMetric, MetricSource)>,
    now: u64,
) -> Result<u64> {
    let mut state_files: BTreeSet<String> = segments.iter().cloned().collect();
    state_files.insert("MANIFEST".into());
    let mut new_snapshot = None;
    let mut snap_cut = None;
    if let (Some((name, survey)), Some((m, _))) = (snapshot, metric) {
        state_files.insert(name.clone());
        let new_name = if Path::new(name).extension().is_some_and(|e| e == "snap") {
            name.clone()
        } else {
            format!("{name}.snap")
        };
        let src = dir.join(name);
        let out_path = staging.join(&new_name);
        let mut out = BufWriter::new(File::create(&out_path).at(&out_path)?);
        write_migrated_snapshot(
            survey,
            BufReader::new(File::open(&src).at(&src)?),
            m,
            &mut out,
        )
        .map_err(|e| e.in_file(name))?;
        let f = out
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)
            .at(&out_path)?;
        f.sync_all().at(&out_path)?;
        snap_cut = Some((survey.info.timestamp, survey.info.last_wal_seq));
        new_snapshot = Some((new_name, survey.info.last_wal_seq));
    }
    // WAL: entries the engine would skip are dropped, legacy ones numbered in order.
    let mut seq = snap_cut.map_or(0, |c| c.1);
    let mut written = 0;
    for name in segments {
        let src = dir.join(name);
        let mut r = WalReader::new(BufReader::new(File::open(&src).at(&src)?))
            .map_err(|e| e.in_file(name))?;
        let out_path = staging.join(name);
        let mut w = WalWriter::new(BufWriter::new(File::create(&out_path).at(&out_path)?))?;
        while let Some(frame) = r.next_frame().map_err(|e| e.in_file(name))? {
            let mut e = frame.entry;
            if e.seq_no == 0 {
                if snap_cut.is_some_and(|(ts, _)| e.timestamp <= ts) {
                    continue;
                }
                seq += 1;
                e.seq_no = seq;
            }
            w.append(&e, WalLayout::W3)?;
            written += 1;
        }
        let f = w
            .into_inner()
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)
            .at(&out_path)?;
        f.sync_all().at(&out_path)?;
    }
    let m = DataDirManifest::modern(
        new_snapshot.as_ref().map(|s| s.0.clone()),
        new_snapshot.as_ref().map(|s| s.1),
        segments.to_vec(),
        now,
    );
    let mpath = staging.join("MANIFEST");
    let mut f = File::create(&mpath).at(&mpath)?;
    f.write_all(&m.to_bytes()).at(&mpath)?;
    f.sync_all().at(&mpath)?;
    // Files that are not part of the state (old snapshots, other programs' files) stay.
    for e in fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        let fname = e.file_name().to_string_lossy().into_owned();
        if state_files.contains(&fname) || !e.file_type().at(&e.path())?.is_file() {
            continue;
        }
        let to = staging.join(&fname);
        if !to.exists() {
            fs::hard_link(e.path(), &to).at(&to)?;
        }
    }
    Ok(written)
}
