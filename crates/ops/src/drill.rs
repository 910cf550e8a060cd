//! `drill`: a restore rehearsal. Restores a backup into a new scratch directory, checks the
//! recovered state in full, runs the backup's golden queries on it, times each phase, removes
//! the copy, and records the result in the repository.

use std::path::{Path, PathBuf};
use std::time::Instant;

use kyrodb_backup_datadir::golden::{golden_check_sample, GoldenFile, GoldenReport, GoldenSampler};
use kyrodb_backup_format::engine::{
    recover, DirSource, DistanceMetric, LiveIds, Metadata, RecoveryOptions, StateSink,
};
use kyrodb_backup_storage::{read_golden, DrillRecord, Progress};
use serde::Serialize;

use crate::access::RepoRef;
use crate::catalog::open_repo;
use crate::error::{Error, ErrorKind, Result};
use crate::golden::{read_golden_file, threads};
use crate::model::Now;
use crate::restore::{restore, RestoreOptions, RestoreSource};

/// What `drill` is asked to do.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DrillOptions {
    /// What to restore; `None`: the newest backup.
    pub source: Option<RestoreSource>,
    /// A directory to make the drill's own new directory in (made if missing). Nothing in it is
    /// touched but that new directory, which is removed at the end.
    pub scratch: PathBuf,
    /// Golden queries to run instead of the backup's own.
    pub golden_file: Option<PathBuf>,
    /// The live data dir, where a drill must never restore: a scratch directory inside it is
    /// refused.
    pub live_data_dir: Option<PathBuf>,
    /// Record the result in the repository.
    pub record: bool,
}

impl DrillOptions {
    /// A drill of the newest backup in a new directory under `scratch`, recorded.
    pub fn new(scratch: impl Into<PathBuf>) -> Self {
        Self {
            source: None,
            scratch: scratch.into(),
            golden_file: None,
            live_data_dir: None,
            record: true,
        }
    }
}

/// How long each phase of a drill took, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct DrillPhases {
    /// The restore (every byte checked against its hash, replayed, made durable).
    pub restore_seconds: f64,
    /// The full check of the restored state (recovered again from the files on disk; the
    /// same pass keeps the vectors the golden queries search).
    pub check_seconds: f64,
    /// The golden queries: the exact search over what the check kept, and the comparison.
    pub golden_seconds: f64,
    /// Removing the scratch copy.
    pub cleanup_seconds: f64,
    /// Everything, start to end.
    pub total_seconds: f64,
}

/// The golden queries a drill ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillGolden {
    /// `backup` (recorded with the backup), `file` (`golden_file`) or `none`.
    pub source: String,
    /// Queries run.
    pub queries: usize,
    /// Results per query.
    pub k: usize,
    /// The comparison, when queries ran.
    pub report: Option<GoldenReport>,
}

/// What a drill found.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// The drill's id.
    pub drill_id: String,
    /// The backup restored.
    pub backup_id: String,
    /// The point in time asked for, if any.
    pub point_in_time: Option<u64>,
    /// The Unix second the restored state reflects.
    pub recovered_to: u64,
    /// Whether everything matched.
    pub passed: bool,
    /// What differed, when it did not pass.
    pub problem: Option<String>,
    /// The directory the drill restored into (removed again).
    pub scratch: PathBuf,
    /// Bytes restored.
    pub bytes: u64,
    /// Live documents of the restored state.
    pub vector_count: u64,
    /// Restore throughput in MB/s (10^6 bytes).
    pub restore_mb_per_s: f64,
    /// Phase times.
    pub phases: DrillPhases,
    /// The golden queries.
    pub golden: DrillGolden,
    /// The record's key in the repository, when recorded.
    pub recorded: Option<String>,
    /// Things the operator should know (no golden queries, say).
    pub warnings: Vec<String>,
}

/// Runs a restore drill; see the module documentation. A drill that finds damage or a
/// difference returns a report with `passed: false` (and records it); errors are for drills
/// that could not run (no such backup, the scratch directory unusable, I/O).
///
/// # Errors
///
/// [`Error::InvalidOptions`] for a scratch directory inside the live data dir or an unreadable
/// golden file, [`Error::NotFound`] and the restore's other errors except damage, I/O errors
/// on the scratch directory, and a drill that ran but could not be recorded.
pub fn drill(
    backup_dir: impl Into<RepoRef>,
    opts: &DrillOptions,
    now: Now,
    progress: &dyn Progress,
) -> Result<DrillReport> {
    let backup_dir: RepoRef = backup_dir.into();
    let started = Instant::now();
    let repo = open_repo(&backup_dir)?;
    let source = match &opts.source {
        Some(s) => s.clone(),
        None => RestoreSource::Backup(
            repo.list()?
                .backups
                .first()
                .map(|b| b.manifest.id.clone())
                .ok_or(Error::NoBackupYet)?,
        ),
    };
    let external = match &opts.golden_file {
        Some(path) => Some(read_golden_file(path)?),
        None => None,
    };
    let drill_id = uuid::Uuid::new_v4().to_string();
    let dir = make_scratch(opts, &drill_id)?;
    let target = dir.join("data");
    let mut warnings = Vec::new();

    let outcome = run_phases(
        &backup_dir,
        &repo,
        &source,
        &target,
        external,
        now,
        progress,
        &mut warnings,
    );
    let cleanup = Instant::now();
    let removed = std::fs::remove_dir_all(&dir);
    let cleanup_seconds = cleanup.elapsed().as_secs_f64();
    let mut ran = outcome?;
    if let Err(e) = removed {
        warnings.push(format!(
            "the scratch copy {} could not be removed: {e}",
            dir.display()
        ));
    }
    ran.phases.cleanup_seconds = cleanup_seconds;
    ran.phases.total_seconds = started.elapsed().as_secs_f64();
    let restore_mb_per_s = if ran.phases.restore_seconds > 0.0 {
        ran.bytes as f64 / 1e6 / ran.phases.restore_seconds
    } else {
        0.0
    };
    let point_in_time = match source {
        RestoreSource::PointInTime { at, .. } => Some(at),
        RestoreSource::Backup(_) => None,
    };
    let passed = ran.problem.is_none();
    let mut report = DrillReport {
        drill_id,
        backup_id: ran.backup_id,
        point_in_time,
        recovered_to: ran.recovered_to,
        passed,
        problem: ran.problem,
        scratch: dir,
        bytes: ran.bytes,
        vector_count: ran.vector_count,
        restore_mb_per_s,
        phases: ran.phases,
        golden: ran.golden,
        recorded: None,
        warnings,
    };
    if opts.record {
        let record = DrillRecord {
            version: 1,
            id: report.drill_id.clone(),
            timestamp: now.secs,
            timestamp_nanos: now.nanos,
            backup_id: report.backup_id.clone(),
            point_in_time,
            passed,
            problem: report.problem.clone(),
            bytes: report.bytes,
            vector_count: report.vector_count,
            restore_seconds: report.phases.restore_seconds,
            restore_mb_per_s,
            check_seconds: report.phases.check_seconds,
            golden_seconds: report.phases.golden_seconds,
            total_seconds: report.phases.total_seconds,
            golden_queries: report.golden.queries as u64,
            golden_source: report.golden.source.clone(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        report.recorded = Some(repo.record_drill(&record).map_err(|e| {
            Error::Other(format!(
                "the drill {} but could not be recorded: {e}",
                if passed { "passed" } else { "failed" }
            ))
        })?);
    }
    Ok(report)
}

/// What the phases found.
struct Ran {
    backup_id: String,
    recovered_to: u64,
    bytes: u64,
    vector_count: u64,
    phases: DrillPhases,
    golden: DrillGolden,
    problem: Option<String>,
}

/// Makes the drill's own directory: a new one (never an existing one) in the scratch
/// directory, outside the live data dir.
fn make_scratch(opts: &DrillOptions, drill_id: &str) -> Result<PathBuf> {
    let io = |path: &Path, e: std::io::Error| Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let inside_live = |scratch: &Path| -> Result<()> {
        let Some(live) = opts
            .live_data_dir
            .as_ref()
            .and_then(|l| l.canonicalize().ok())
        else {
            return Ok(());
        };
        if scratch.starts_with(&live) {
            return Err(Error::InvalidOptions(format!(
                "the scratch directory {} is inside the live data dir {}; a drill never restores there",
                scratch.display(),
                live.display()
            )));
        }
        Ok(())
    };
    // Checked before anything is made (on the nearest existing ancestor, resolved), and again
    // once the directory exists (resolving every link).
    inside_live(&resolved(&opts.scratch))?;
    std::fs::create_dir_all(&opts.scratch).map_err(|e| io(&opts.scratch, e))?;
    let scratch = opts
        .scratch
        .canonicalize()
        .map_err(|e| io(&opts.scratch, e))?;
    inside_live(&scratch)?;
    let dir = scratch.join(format!("kyrodb-drill-{}", &drill_id[..8]));
    std::fs::create_dir(&dir).map_err(|e| io(&dir, e))?;
    Ok(dir)
}

/// `path` with its nearest existing ancestor resolved (links followed) and the rest appended.
fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut rest = Vec::new();
    let mut at = absolute.as_path();
    loop {
        if let Ok(real) = at.canonicalize() {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                at = parent;
            }
            _ => return absolute,
        }
    }
}

/// Restore, check, golden queries. Damage and differences end up in `problem`; other
/// failures are errors.
#[allow(clippy::too_many_arguments)]
fn run_phases(
    backup_dir: &RepoRef,
    repo: &kyrodb_backup_storage::Repository,
    source: &RestoreSource,
    target: &Path,
    external: Option<GoldenFile>,
    now: Now,
    progress: &dyn Progress,
    warnings: &mut Vec<String>,
) -> Result<Ran> {
    let mut ran = Ran {
        // Until the restore says which backup it used, a point-in-time drill is named by
        // its second.
        backup_id: match source {
            RestoreSource::Backup(id) => id.clone(),
            RestoreSource::PointInTime { at, .. } => format!("point-in-time-{at}"),
        },
        recovered_to: 0,
        bytes: 0,
        vector_count: 0,
        phases: DrillPhases::default(),
        golden: DrillGolden {
            source: "none".into(),
            queries: 0,
            k: 0,
            report: None,
        },
        problem: None,
    };
    let manifest = match source {
        RestoreSource::Backup(id) => Some(repo.find(id)?.manifest),
        RestoreSource::PointInTime { .. } => None,
    };
    if let Some(m) = &manifest {
        ran.backup_id.clone_from(&m.id);
    }

    // Restore.
    let t = Instant::now();
    // A legacy state is restored as it is (a real restore would migrate it, with a metric
    // the operator gives); the check below recovers it all the same.
    let mut ropts = RestoreOptions::new(target, source.clone());
    ropts.as_is = true;
    let restored = restore(backup_dir.clone(), &ropts, now, progress);
    ran.phases.restore_seconds = t.elapsed().as_secs_f64();
    let restored = match restored {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::Integrity => {
            ran.problem = Some(format!("the restore found damage: {e}"));
            return Ok(ran);
        }
        Err(e) => return Err(e),
    };
    ran.backup_id = restored.backup_id;
    ran.recovered_to = restored.recovered_to;
    ran.bytes = restored.bytes;
    ran.vector_count = restored.vector_count;
    warnings.extend(restored.warnings);

    let golden = match golden_queries(repo, external, manifest.as_ref(), warnings)? {
        Ok(g) => g,
        Err(problem) => {
            ran.problem = Some(problem);
            return Ok(ran);
        }
    };

    // The full check: recover the restored files again, every vector decoded; the same pass
    // keeps the vectors the golden queries search.
    let t = Instant::now();
    let checked = check_state(
        target,
        golden.as_ref().map(|(_, f)| GoldenSampler::for_file(f)),
    );
    ran.phases.check_seconds = t.elapsed().as_secs_f64();
    let mut state = match checked {
        Ok(s) => s,
        Err(e) => {
            ran.problem = Some(format!("the restored state does not recover: {e}"));
            return Ok(ran);
        }
    };
    if let Some(p) = state_problem(&state, ran.vector_count, manifest.as_ref()) {
        ran.problem = Some(p);
        return Ok(ran);
    }

    // Golden queries, over what the check kept.
    if let (Some((from, file)), Some(sampler)) = (golden, state.golden.take()) {
        let t = Instant::now();
        let count = state.live.len() as u64;
        let report = golden_check_sample(sampler, state.metric, count, &file, threads());
        ran.phases.golden_seconds = t.elapsed().as_secs_f64();
        ran.golden = DrillGolden {
            source: from.into(),
            queries: file.queries.len(),
            k: file.k,
            report: None,
        };
        match report {
            Ok(r) => {
                ran.problem = golden_problem(&r, &file);
                ran.golden.report = Some(r);
            }
            Err(e) => ran.problem = Some(format!("the golden queries cannot run: {e}")),
        }
    }
    Ok(ran)
}

/// The golden queries to run and where they come from: the file given, else the backup's,
/// else none (with a warning). The inner error is a problem of the backup's queries (damage).
fn golden_queries(
    repo: &kyrodb_backup_storage::Repository,
    external: Option<GoldenFile>,
    manifest: Option<&kyrodb_backup_format::repo::BackupManifest>,
    warnings: &mut Vec<String>,
) -> Result<std::result::Result<Option<(&'static str, GoldenFile)>, String>> {
    if let Some(f) = external {
        return Ok(Ok(Some(("file", f))));
    }
    let Some(m) = manifest else {
        warnings.push("a point-in-time drill runs golden queries only from a golden file".into());
        return Ok(Ok(None));
    };
    let Some(g) = &m.golden else {
        warnings.push(format!(
            "backup {} records no golden queries: the drill checked bytes and state only",
            m.id
        ));
        return Ok(Ok(None));
    };
    let store = repo.chain_store(&m.chain_id)?;
    Ok(read_golden(&store, g)
        .map(|f| Some(("backup", f)))
        .map_err(|e| format!("the backup's golden queries: {e}")))
}

/// What the full check learnt of the restored state.
#[derive(Default)]
struct CheckedState {
    live: LiveIds,
    dimension: Option<usize>,
    bad_dimension: Option<(u64, usize)>,
    not_finite: Option<u64>,
    metric: Option<DistanceMetric>,
    /// The vectors the golden queries search, when there are queries.
    golden: Option<GoldenSampler>,
}

impl StateSink for CheckedState {
    fn insert(&mut self, id: u64, embedding: Vec<f32>, _: Metadata) {
        let dim = *self.dimension.get_or_insert(embedding.len());
        if embedding.len() != dim && self.bad_dimension.is_none() {
            self.bad_dimension = Some((id, embedding.len()));
        }
        if self.not_finite.is_none() && embedding.iter().any(|x| !x.is_finite()) {
            self.not_finite = Some(id);
        }
        self.live.insert(id, Vec::new(), Metadata::default());
        if let Some(g) = &mut self.golden {
            g.insert(id, embedding, Metadata::default());
        }
    }
    fn delete(&mut self, id: u64) {
        self.live.delete(id);
        if let Some(g) = &mut self.golden {
            g.delete(id);
        }
    }
    fn update_metadata(&mut self, _: u64, _: Metadata) {}
}

fn check_state(
    dir: &Path,
    golden: Option<GoldenSampler>,
) -> std::result::Result<CheckedState, kyrodb_backup_format::Error> {
    let mut state = CheckedState {
        golden,
        ..CheckedState::default()
    };
    let report = recover(
        &mut DirSource::new(dir),
        &mut state,
        &RecoveryOptions {
            torn_tail_is_error: true,
        },
    )?;
    state.metric = report.distance;
    Ok(state)
}

/// Whether the recovered state is what the restore and the backup say it is.
fn state_problem(
    state: &CheckedState,
    restored_count: u64,
    manifest: Option<&kyrodb_backup_format::repo::BackupManifest>,
) -> Option<String> {
    let count = state.live.len() as u64;
    if let Some((id, len)) = state.bad_dimension {
        return Some(format!(
            "document {id} has dimension {len}, others {}",
            state.dimension.unwrap_or(0)
        ));
    }
    if let Some(id) = state.not_finite {
        return Some(format!(
            "document {id} holds a value that is not a finite number"
        ));
    }
    if count != restored_count {
        return Some(format!(
            "the restored files recover to {count} documents, the restore reported {restored_count}"
        ));
    }
    let m = manifest?;
    if count != m.vector_count {
        return Some(format!(
            "the restored state has {count} documents, backup {} recorded {}",
            m.id, m.vector_count
        ));
    }
    if let (Some(d), Some(want)) = (state.dimension, m.dimension) {
        if d as u64 != want && count > 0 {
            return Some(format!(
                "the restored state has dimension {d}, backup {} recorded {want}",
                m.id
            ));
        }
    }
    if state.metric != m.distance {
        return Some(format!(
            "the restored state's metric is {}, backup {} recorded {}",
            state.metric.map_or("none".into(), |d| d.to_string()),
            m.id,
            m.distance.map_or("none".into(), |d| d.to_string())
        ));
    }
    None
}

/// The first difference the golden queries found, in words (query and rank as `golden check`
/// names them: queries from 0, ranks from 1 for the nearest).
fn golden_problem(r: &GoldenReport, file: &GoldenFile) -> Option<String> {
    if let Some(m) = &r.first_mismatch {
        let show = |x: Option<(u64, f32)>| {
            x.map_or("nothing".to_string(), |(id, score)| {
                format!("document {id} (distance {score})")
            })
        };
        return Some(format!(
            "golden query {} (from document {}) differs at rank {}: expected {}, found {}",
            m.query,
            m.source_id,
            m.rank + 1,
            show(m.expected),
            show(m.found)
        ));
    }
    if let Some((want, got)) = r.metric_differs {
        return Some(format!(
            "the restored state's metric is {got}, the golden queries were recorded under {want}"
        ));
    }
    if !r.ok {
        return Some(format!(
            "the golden queries ({} of top-{}) do not match",
            file.queries.len(),
            file.k
        ));
    }
    None
}
