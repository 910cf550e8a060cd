//! The commands: each parses nothing, decides no exit code, and prints its result.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use kyrodb_backup_chain::{recoverable_windows, resolve, PitrOptions, PitrPlan};
use kyrodb_backup_format::engine::DataDirManifest;
use kyrodb_backup_format::repo::{BackupType, FileEntry};
use kyrodb_backup_retention::{plan as retention_plan, BackupInfo, RetentionPolicy};
use kyrodb_backup_storage::{
    archive_members, builtin_chain, check_builtin, create_backup, extracted, list_builtin,
    migrate_data_dir, prune_backups, restore as restore_set, restore_backup, target_is_empty,
    BuiltinBackup, ChainStore, CreateOptions, Error as StorageError, Expectation, LockMode,
    MetricSource, MigrateOptions, MigrateReport, PlannedContent, PlannedFile, Repository,
    RestoreOptions, RestoreSet, StoredBackup,
};
use kyrodb_backup_verify::{
    golden_check, golden_create, verify_backup, GoldenError, GoldenFile, GoldenOptions,
};
use serde_json::{json, Value};

use crate::args::{
    CheckArgs, Cli, Command, CreateArgs, Format, GoldenAction, GoldenCreateArgs, MigrateArgs,
    PruneArgs, RestoreArgs, VerifyArgs,
};
use crate::output::{
    backup_json, human_age, human_bytes, print_json, print_table, state_line, utc, Bar,
};
use crate::{Hinted, Outcome};

struct Ctx<'a> {
    cli: &'a Cli,
    json: bool,
}

impl Ctx<'_> {
    /// A progress bar for a long step (drawn only on a terminal, never with JSON or -q).
    fn bar(&self) -> Bar {
        Bar::new(!self.json && !self.cli.quiet)
    }

    /// Progress and notes for people: stderr, silenced by `-q`.
    fn note(&self, msg: impl AsRef<str>) {
        if !self.cli.quiet {
            eprintln!("{}", msg.as_ref());
        }
    }
}

fn now() -> u64 {
    now_precise().0
}

fn now_precise() -> (u64, u32) {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or((0, 0), |d| (d.as_secs(), d.subsec_nanos()))
}

/// Runs the parsed command line.
pub fn run(cli: &Cli) -> Result<Outcome> {
    if cli.verbose > 0 {
        let level = if cli.verbose == 1 {
            tracing::Level::DEBUG
        } else {
            tracing::Level::TRACE
        };
        let _ = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(std::io::stderr)
            .with_target(false)
            .without_time()
            .try_init();
    }
    let json = cli.format == Some(Format::Json);
    let ctx = Ctx { cli, json };
    match &cli.command {
        Command::Create(a) => create(&ctx, a),
        Command::List => list(&ctx),
        Command::Show { id } => show(&ctx, id),
        Command::Restore(a) => restore(&ctx, a),
        Command::Verify(a) => verify(&ctx, a),
        Command::Prune(a) => prune(&ctx, a),
        Command::Migrate(a) => migrate(&ctx, a),
        Command::Golden { action } => golden(&ctx, action),
        Command::Check(a) => check(&ctx, a),
    }
}

fn open_repo(dir: &Path) -> Result<Repository> {
    if !dir.exists() {
        return Err(StorageError::NotARepository(dir.to_path_buf()).into());
    }
    Ok(Repository::open(dir)?)
}

fn create(ctx: &Ctx, a: &CreateArgs) -> Result<Outcome> {
    let repo = Repository::open_or_init(&ctx.cli.backup_dir)?;
    let _lock = repo.lock(LockMode::Exclusive)?;
    let leftovers = repo.remove_leftovers()?;
    if leftovers > 0 {
        ctx.note(format!(
            "removed {leftovers} temporary files left by an interrupted run"
        ));
    }
    let parent = match (a.incremental, a.reference.as_deref()) {
        (false, _) => None,
        (true, Some("latest")) => {
            Some(repo.list()?.backups.into_iter().next().ok_or_else(|| {
                Hinted::new(
                    "--reference latest: the repository has no backup yet",
                    "create a full backup first",
                )
            })?)
        }
        (true, Some(r)) => Some(repo.find(r).map_err(|e| {
            Hinted::new(
                format!("--reference {r}: {e}"),
                "create a new full backup (without --incremental) to start a new chain",
            )
        })?),
        (true, None) => bail!("--incremental needs --reference <ID|latest>"),
    };
    let (now, now_subsec_nanos) = now_precise();
    let opts = CreateOptions {
        data_dir: ctx.cli.data_dir.clone(),
        id: uuid::Uuid::new_v4().to_string(),
        now,
        now_subsec_nanos,
        description: a.description.clone(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        parent: parent.map(|p| p.manifest),
    };
    let report = create_backup(&repo, &opts, &ctx.bar())?;
    let b = &report.backup;
    let m = &b.manifest;
    if ctx.json {
        let mut v = backup_json(b);
        v["skipped"] = json!(m.skipped);
        print_json(&v);
        return Ok(Outcome::Done);
    }
    println!(
        "created {} backup {}",
        m.backup_type.to_string().to_lowercase(),
        m.id
    );
    println!(
        "  captured {} files, {} from {}",
        m.files.len(),
        human_bytes(m.size_bytes),
        m.source
    );
    println!(
        "  stored   {} in {} new chunks ({} already in the chain)",
        human_bytes(m.stored_bytes),
        report.stats.new_chunks,
        report.stats.reused_chunks
    );
    if report.stats.unchanged_files > 0 {
        println!(
            "  reused   {} unchanged files ({}) from the reference without reading them",
            report.stats.unchanged_files,
            human_bytes(report.stats.unchanged_bytes)
        );
    }
    println!("  state    {}", state_line(b));
    for s in &m.skipped {
        println!("  skipped  {} ({})", s.name, s.reason);
    }
    Ok(Outcome::Done)
}

/// The backups of a backup dir; an existing directory without a repository has none yet.
fn listing_of(dir: &Path) -> Result<kyrodb_backup_storage::Listing> {
    if !dir.is_dir() {
        return Err(StorageError::NotARepository(dir.to_path_buf()).into());
    }
    Ok(if Repository::exists(dir) || dir.join("chains").exists() {
        Repository::open(dir)?.list()?
    } else {
        kyrodb_backup_storage::Listing::default()
    })
}

/// The built-in tool's backups in the backup dir, for `list`, `show`, `verify`, `restore`.
fn builtins(ctx: &Ctx) -> Vec<BuiltinBackup> {
    let (found, problems) = list_builtin(&ctx.cli.backup_dir);
    for (path, e) in problems {
        ctx.note(format!("warning: {}: {e}", path.display()));
    }
    found
}

/// A built-in backup by full id or unique prefix (8+ characters).
fn find_builtin<'a>(all: &'a [BuiltinBackup], prefix: &str) -> Option<&'a BuiltinBackup> {
    if prefix.len() < 8 {
        return all.iter().find(|b| b.meta.id == prefix);
    }
    let mut m = all.iter().filter(|b| b.meta.id.starts_with(prefix));
    match (m.next(), m.next()) {
        (Some(b), None) => Some(b),
        _ => None,
    }
}

/// The contract's backup object for a built-in backup, marked by `"format": "builtin"`.
fn builtin_json(b: &BuiltinBackup) -> Value {
    let m = &b.meta;
    json!({
        "id": m.id,
        "timestamp": m.timestamp,
        "backup_type": m.backup_type,
        "parent_id": m.parent_id,
        "description": m.description,
        "size_bytes": m.size_bytes,
        "stored_bytes": std::fs::metadata(&b.archive).map_or(0, |x| x.len()),
        "vector_count": m.vector_count,
        "dimension": Value::Null,
        "distance": Value::Null,
        "checksum": m.checksum.to_string(),
        "snapshot": m.snapshot_file.as_ref().map(|f| json!({"file": f})),
        "wal": Value::Null,
        "format": "builtin",
    })
}

fn list(ctx: &Ctx) -> Result<Outcome> {
    let dir = &ctx.cli.backup_dir;
    let listing = listing_of(dir)?;
    for (path, e) in &listing.problems {
        ctx.note(format!("warning: {}: {e}", path.display()));
    }
    let builtin = builtins(ctx);
    let mut rows: Vec<(u64, u32, Value)> = listing
        .backups
        .iter()
        .map(|b| {
            (
                b.manifest.timestamp,
                b.manifest.subsec_nanos,
                backup_json(b),
            )
        })
        .chain(
            builtin
                .iter()
                .map(|b| (b.meta.timestamp, 0, builtin_json(b))),
        )
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse((r.0, r.1)));
    if ctx.json {
        print_json(&Value::Array(rows.into_iter().map(|r| r.2).collect()));
        return Ok(Outcome::Done);
    }
    if rows.is_empty() {
        println!("no backups in {}", dir.display());
        return Ok(Outcome::Done);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|(_, _, v)| {
            let builtin = v["format"] == "builtin";
            vec![
                v["id"].as_str().unwrap_or_default().to_string(),
                utc(v["timestamp"].as_u64().unwrap_or(0)),
                format!(
                    "{}{}",
                    v["backup_type"].as_str().unwrap_or_default(),
                    if builtin { " (built-in)" } else { "" }
                ),
                human_bytes(v["size_bytes"].as_u64().unwrap_or(0)),
                v["vector_count"].as_u64().unwrap_or(0).to_string(),
                v["distance"].as_str().unwrap_or("unknown").to_string(),
                v["description"].as_str().unwrap_or_default().to_string(),
            ]
        })
        .collect();
    print_table(
        ctx.cli.format != Some(Format::Text),
        &[
            "ID",
            "TAKEN (UTC)",
            "TYPE",
            "SIZE",
            "VECTORS",
            "METRIC",
            "DESCRIPTION",
        ],
        &table,
    );
    Ok(Outcome::Done)
}

fn chain_of(repo: &Repository, b: &StoredBackup) -> Result<Vec<StoredBackup>> {
    let mut chain: Vec<StoredBackup> = repo
        .list()?
        .backups
        .into_iter()
        .filter(|o| o.manifest.chain_id == b.manifest.chain_id)
        .collect();
    chain.reverse();
    Ok(chain)
}

/// `show --format json`: the backup object plus files, chain and recoverable windows.
fn show_json(
    b: &StoredBackup,
    chain: &[StoredBackup],
    windows: &Result<Vec<kyrodb_backup_chain::Window>, kyrodb_backup_chain::Error>,
) -> Value {
    let m = &b.manifest;
    let mut v = backup_json(b);
    v["source"] = json!(m.source);
    v["tool_version"] = json!(m.tool_version);
    v["files"] = json!(m
            .files
            .iter()
            .map(|f| json!({"name": f.name, "kind": f.kind, "size": f.size, "hash": f.hash, "chunks": f.chunks.len()}))
            .collect::<Vec<_>>());
    v["skipped"] = json!(m.skipped);
    v["recoverable_windows"] = match &windows {
        Ok(w) => json!(w),
        Err(e) => json!(e.to_string()),
    };
    v["chain"] = json!(chain
            .iter()
            .map(|c| json!({"id": c.manifest.id, "timestamp": c.manifest.timestamp, "backup_type": c.manifest.backup_type.to_string()}))
            .collect::<Vec<_>>());
    v
}

fn show_builtin(ctx: &Ctx, b: &BuiltinBackup, all: &[BuiltinBackup]) -> Result<Outcome> {
    let members = archive_members(&b.archive)?;
    let chain = builtin_chain(b, all)?;
    if ctx.json {
        let mut v = builtin_json(b);
        v["files"] = json!(members
            .iter()
            .map(|m| json!({"name": m.name, "size": m.len}))
            .collect::<Vec<_>>());
        v["chain"] = json!(chain.iter().map(|c| json!({"id": c.meta.id, "timestamp": c.meta.timestamp, "backup_type": c.meta.backup_type})).collect::<Vec<_>>());
        print_json(&v);
        return Ok(Outcome::Done);
    }
    let m = &b.meta;
    println!(
        "backup      {} (made by the engine's built-in backup tool)",
        m.id
    );
    println!("type        {}", m.backup_type);
    println!("taken       {} ({})", utc(m.timestamp), m.timestamp);
    if !m.description.is_empty() {
        println!("description {}", m.description);
    }
    println!(
        "archive     {} ({})",
        b.archive.display(),
        human_bytes(m.size_bytes)
    );
    println!("files");
    for mem in &members {
        println!("  {:<32} {:>10}", mem.name, human_bytes(mem.len));
    }
    println!("chain (restored by extracting these archives in order)");
    for c in &chain {
        let marker = if c.meta.id == m.id { "*" } else { " " };
        println!(
            "  {marker} {}  {}  {}",
            c.meta.id,
            utc(c.meta.timestamp),
            c.meta.backup_type
        );
    }
    Ok(Outcome::Done)
}

fn show(ctx: &Ctx, id: &str) -> Result<Outcome> {
    let all = builtins(ctx);
    if let Some(b) = find_builtin(&all, id) {
        return show_builtin(ctx, b, &all);
    }
    let repo = open_repo(&ctx.cli.backup_dir)?;
    let b = repo.find(id)?;
    let m = &b.manifest;
    let chain = chain_of(&repo, &b)?;
    let manifests: Vec<_> = chain.iter().map(|c| c.manifest.clone()).collect();
    let windows = recoverable_windows(&manifests);
    if ctx.json {
        print_json(&show_json(&b, &chain, &windows));
        return Ok(Outcome::Done);
    }
    println!("backup      {}", m.id);
    println!("type        {}", m.backup_type);
    println!("taken       {} ({})", utc(m.timestamp), m.timestamp);
    if !m.description.is_empty() {
        println!("description {}", m.description);
    }
    println!("source      {}", m.source);
    println!("checksum    {}", b.checksum);
    println!("state       {}", state_line(&b));
    println!(
        "size        {} captured, {} stored by this backup",
        human_bytes(m.size_bytes),
        human_bytes(m.stored_bytes)
    );
    if let Some(s) = &m.snapshot {
        println!(
            "snapshot    {} ({}, {} documents, taken {}, last_wal_seq {})",
            s.file,
            s.layout,
            s.doc_count,
            utc(s.timestamp),
            s.last_wal_seq
        );
    } else {
        println!("snapshot    none");
    }
    if let Some(w) = &m.wal {
        println!(
            "wal         {} entries, seq {}..={}, {} .. {}",
            w.entries,
            w.first_seq,
            w.last_seq,
            utc(w.first_timestamp),
            utc(w.last_timestamp)
        );
    } else {
        println!("wal         no entries");
    }
    println!("files");
    let rows: Vec<Vec<String>> = m
        .files
        .iter()
        .map(|f| {
            vec![
                f.name.clone(),
                human_bytes(f.size),
                f.chunks.len().to_string(),
                f.hash.to_hex(),
            ]
        })
        .collect();
    print_table(
        ctx.cli.format == Some(Format::Table),
        &["FILE", "SIZE", "CHUNKS", "XXH3-128"],
        &rows,
    );
    for s in &m.skipped {
        println!("  skipped {} ({})", s.name, s.reason);
    }
    match &windows {
        Ok(w) if w.is_empty() => println!("point in time: no second of this chain is recoverable"),
        Ok(w) => {
            println!("point in time: recoverable windows of this chain (inclusive)");
            for w in w {
                let to = if w.to == u64::MAX {
                    "…".to_string()
                } else {
                    utc(w.to)
                };
                println!("  {} .. {}", utc(w.from), to);
            }
        }
        Err(e) => println!("point in time: {e}"),
    }
    println!("chain");
    for c in &chain {
        let marker = if c.manifest.id == m.id { "*" } else { " " };
        println!(
            "  {marker} {}  {}  {}",
            c.manifest.id,
            utc(c.manifest.timestamp),
            c.manifest.backup_type
        );
    }
    Ok(Outcome::Done)
}

fn allow_clear() -> bool {
    std::env::var("BACKUP_ALLOW_CLEAR")
        .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

fn restore(ctx: &Ctx, a: &RestoreArgs) -> Result<Outcome> {
    let target = &ctx.cli.data_dir;
    let allow = allow_clear();
    // The contract: refuse a non-empty target before doing any work.
    if !allow && !target_is_empty(target)? {
        return Err(StorageError::TargetNotEmpty(target.clone()).into());
    }
    let opts_early = RestoreOptions {
        target: target.clone(),
        allow_clear: allow,
        keep_previous: a.keep_previous,
        dry_run: a.dry_run,
        now: now(),
    };
    if let Some(id) = &a.backup_id {
        let all = builtins(ctx);
        if let Some(b) = find_builtin(&all, id) {
            return restore_builtin(ctx, a, b, &all, &opts_early);
        }
    }
    let repo = open_repo(&ctx.cli.backup_dir)?;
    let _lock = repo.lock(LockMode::Shared)?;
    let opts = RestoreOptions {
        target: target.clone(),
        allow_clear: allow,
        keep_previous: a.keep_previous,
        dry_run: a.dry_run,
        now: now(),
    };
    let (r, recovered_to) = match (&a.backup_id, a.point_in_time) {
        (Some(id), _) => {
            let b = repo.find(id)?;
            check_distance(b.manifest.distance, a.distance)?;
            let store = repo.chain_store(&b.manifest.chain_id)?;
            (
                restore_backup(&store, &b, &opts, &ctx.bar())?,
                b.manifest.timestamp,
            )
        }
        (None, Some(t)) => {
            let backups: Vec<StoredBackup> = repo.list()?.backups;
            let manifests: Vec<_> = backups.iter().map(|b| b.manifest.clone()).collect();
            let plan = resolve(
                &manifests,
                &PitrOptions {
                    target: t,
                    nearest: a.nearest,
                },
            )?;
            if plan.recovered_to != t {
                ctx.note(format!(
                    "{t} is not exactly recoverable; restoring the nearest earlier second, {} ({})",
                    plan.recovered_to,
                    utc(plan.recovered_to)
                ));
            }
            let snap_distance = plan.snapshot.as_ref().and_then(|s| {
                backups
                    .iter()
                    .find(|b| b.manifest.id == s.backup_id)
                    .and_then(|b| b.manifest.distance)
            });
            check_distance(snap_distance, a.distance)?;
            let store = repo.chain_store(&plan.chain_id)?;
            let set = pitr_set(&store, &backups, &plan)?;
            (restore_set(&set, &opts, &ctx.bar())?, plan.recovered_to)
        }
        (None, None) => bail!("give --backup-id or --point-in-time"),
    };
    let migrated = match (a.distance, r.dry_run) {
        (Some(d), false) => {
            let m = migrate_data_dir(&MigrateOptions {
                data_dir: r.target.clone(),
                distance: Some(d),
                dry_run: false,
                keep_previous: false,
                now: now(),
            })?;
            (!m.already_current).then_some(m)
        }
        _ => None,
    };
    print_restore(ctx, a, &r, recovered_to, migrated.as_ref());
    Ok(Outcome::Done)
}

/// Prints a restore's result as JSON or text.
fn print_restore(
    ctx: &Ctx,
    a: &RestoreArgs,
    r: &kyrodb_backup_storage::RestoreReport,
    recovered_to: u64,
    migrated: Option<&MigrateReport>,
) {
    if ctx.json {
        print_json(&json!({
            "backup_id": r.backup_id,
            "point_in_time": a.point_in_time,
            "recovered_to": recovered_to,
            "vector_count": r.vector_count,
            "data_dir": r.target,
            "files": r.files.iter().map(|(n, s)| json!({"name": n, "size": s})).collect::<Vec<_>>(),
            "bytes": r.bytes,
            "replaced": r.replaced,
            "previous": r.previous,
            "dry_run": r.dry_run,
        }));
        return;
    }
    let verb = if r.dry_run {
        "would restore"
    } else {
        "restored"
    };
    let what = match a.point_in_time {
        Some(_) => format!(
            "the state as of {} ({recovered_to}) from backup {}",
            utc(recovered_to),
            r.backup_id
        ),
        None => format!("backup {} ({})", r.backup_id, utc(recovered_to)),
    };
    println!(
        "{verb} {what} into {}: {} files, {}, {} vectors",
        r.target.display(),
        r.files.len(),
        human_bytes(r.bytes),
        r.vector_count
    );
    if let Some(m) = migrated {
        println!(
            "migrated the restored legacy state to the current format with metric {}",
            m.metric
                .map_or_else(|| "-".to_string(), |x| x.0.to_string())
        );
    }
    if r.replaced {
        match &r.previous {
            Some(p) => println!("previous contents kept at {}", p.display()),
            None if r.dry_run => println!("the previous contents would be removed"),
            None => println!("previous contents removed"),
        }
    }
}

/// Restores a chain of the built-in tool: its archives extracted in order into staging,
/// checked first (checksums, decoding, the snapshot its MANIFEST names), then swapped in.
fn restore_builtin(
    ctx: &Ctx,
    a: &RestoreArgs,
    b: &BuiltinBackup,
    all: &[BuiltinBackup],
    opts: &RestoreOptions,
) -> Result<Outcome> {
    check_builtin(b, all)?;
    let chain = builtin_chain(b, all)?;
    let files = extracted(&chain)?;
    let set = RestoreSet {
        backup_id: b.meta.id.clone(),
        files: files
            .into_iter()
            .map(|(name, (path, member))| PlannedFile {
                name,
                content: PlannedContent::Archive { path, member },
            })
            .collect(),
        expect: Expectation::Recovers,
        also_check: Vec::new(),
    };
    let r = restore_set(&set, opts, &ctx.bar())?;
    let migrated = match (a.distance, r.dry_run) {
        (Some(d), false) => Some(migrate_data_dir(&MigrateOptions {
            data_dir: r.target.clone(),
            distance: Some(d),
            dry_run: false,
            keep_previous: false,
            now: now(),
        })?)
        .filter(|m| !m.already_current),
        _ => None,
    };
    print_restore(ctx, a, &r, b.meta.timestamp, migrated.as_ref());
    Ok(Outcome::Done)
}

/// Refuses `--distance` that contradicts the metric a backup's snapshot stores.
fn check_distance(
    stored: Option<kyrodb_backup_format::engine::DistanceMetric>,
    requested: Option<kyrodb_backup_format::engine::DistanceMetric>,
) -> Result<()> {
    match (stored, requested) {
        (Some(s), Some(r)) if s != r => Err(Hinted::new(
            format!("--distance {r} contradicts the metric {s} stored in the backup's snapshot"),
            "leave out --distance: a snapshot that stores its metric is restored with it",
        )
        .into()),
        _ => Ok(()),
    }
}

/// The files that rebuild a point in time: the plan's snapshot and WAL segments (the last ones
/// cut), and a MANIFEST naming exactly those.
fn pitr_set<'a>(
    store: &'a ChainStore,
    backups: &'a [StoredBackup],
    plan: &PitrPlan,
) -> Result<RestoreSet<'a>> {
    let entry = |f: &kyrodb_backup_chain::PlannedFile| -> Result<&'a FileEntry> {
        backups
            .iter()
            .find(|b| b.manifest.id == f.backup_id)
            .and_then(|b| b.manifest.files.iter().find(|e| e.name == f.name))
            .ok_or_else(|| anyhow!("backup {} lists no file {}", f.backup_id, f.name))
    };
    let mut files = Vec::new();
    let mut used = Vec::new();
    if let Some(s) = &plan.snapshot {
        files.push(PlannedFile {
            name: s.name.clone(),
            content: PlannedContent::Stored {
                store,
                entry: entry(s)?,
                keep_frames: None,
            },
        });
        used.push(s.backup_id.clone());
    }
    for seg in &plan.segments {
        files.push(PlannedFile {
            name: seg.file.name.clone(),
            content: PlannedContent::Stored {
                store,
                entry: entry(&seg.file)?,
                keep_frames: (!seg.whole).then_some(seg.keep_entries),
            },
        });
        used.push(seg.file.backup_id.clone());
    }
    let manifest = DataDirManifest::modern(
        plan.snapshot.as_ref().map(|s| s.name.clone()),
        plan.snapshot.as_ref().map(|_| plan.start_seq),
        plan.segments.iter().map(|s| s.file.name.clone()).collect(),
        plan.recovered_to,
    );
    files.insert(
        0,
        PlannedFile {
            name: "MANIFEST".into(),
            content: PlannedContent::Generated(manifest.to_bytes()),
        },
    );
    // Report the newest backup the bytes come from.
    let backup_id = backups
        .iter()
        .find(|b| used.contains(&b.manifest.id))
        .or_else(|| {
            backups
                .iter()
                .find(|b| b.manifest.chain_id == plan.chain_id)
        })
        .map(|b| b.manifest.id.clone())
        .unwrap_or_default();
    Ok(RestoreSet {
        backup_id,
        files,
        expect: Expectation::LastSeq(plan.last_seq),
        also_check: Vec::new(),
    })
}

/// Checks built-in backups and prints each result (text mode).
fn verify_builtins(
    ctx: &Ctx,
    targets: &[&BuiltinBackup],
    all: &[BuiltinBackup],
) -> Vec<(String, std::result::Result<u64, String>)> {
    let checks: Vec<_> = targets
        .iter()
        .map(|b| {
            (
                b.meta.id.clone(),
                check_builtin(b, all).map_err(|e| e.to_string()),
            )
        })
        .collect();
    if !ctx.json {
        for (id, r) in &checks {
            match r {
                Ok(n) => println!("ok       {id}  built-in backup, chain recovers to {n} vectors"),
                Err(e) => println!("DAMAGED  {id}  built-in backup\n  {e}"),
            }
        }
    }
    checks
}

fn verify(ctx: &Ctx, a: &VerifyArgs) -> Result<Outcome> {
    let all_builtin = builtins(ctx);
    // A backup dir may hold only the built-in tool's backups: then there is no repository.
    let repo = if all_builtin.is_empty() || Repository::exists(&ctx.cli.backup_dir) {
        Some(open_repo(&ctx.cli.backup_dir)?)
    } else {
        None
    };
    let _lock = repo
        .as_ref()
        .map(|r| r.lock(LockMode::Shared))
        .transpose()?;
    // Without an id (or with --all), every backup is verified, the built-in tool's too.
    let (targets, unreadable, builtin_targets) = match (&a.id, &repo) {
        (Some(id), _) if find_builtin(&all_builtin, id).is_some() => (
            Vec::new(),
            Vec::new(),
            find_builtin(&all_builtin, id).into_iter().collect(),
        ),
        (Some(id), Some(repo)) => (vec![repo.find(id)?], Vec::new(), Vec::new()),
        (Some(id), None) => return Err(StorageError::NotFound(id.clone()).into()),
        (None, Some(repo)) => {
            let l = repo.list()?;
            (l.backups, l.problems, all_builtin.iter().collect())
        }
        (None, None) => (
            Vec::new(),
            Vec::new(),
            all_builtin.iter().collect::<Vec<_>>(),
        ),
    };
    let checks: Vec<_> = targets
        .iter()
        .map(|b| {
            let c = verify_backup(
                repo.as_ref().expect("our backups come from a repository"),
                b,
                &ctx.bar(),
            );
            if !ctx.json {
                if c.ok {
                    println!(
                        "ok       {}  {} files, {} read, {} vectors",
                        c.id,
                        c.files_checked,
                        human_bytes(c.bytes_checked),
                        c.vector_count.unwrap_or(0)
                    );
                } else {
                    println!("DAMAGED  {}", c.id);
                    for p in &c.problems {
                        println!(
                            "  {}{}",
                            p.file
                                .as_ref()
                                .map(|f| format!("{f}: "))
                                .unwrap_or_default(),
                            p.message
                        );
                    }
                }
            }
            c
        })
        .collect();
    let builtin_checks = verify_builtins(ctx, &builtin_targets, &all_builtin);
    let ok = unreadable.is_empty()
        && checks.iter().all(|c| c.ok)
        && builtin_checks.iter().all(|c| c.1.is_ok());
    if ctx.json {
        print_json(&json!({
            "ok": ok,
            "backups": checks,
            "unreadable": unreadable.iter().map(|(p, e)| json!({"path": p, "problem": e.to_string()})).collect::<Vec<_>>(),
            "builtin": builtin_checks.iter().map(|(id, r)| json!({
                "id": id,
                "ok": r.is_ok(),
                "vector_count": r.as_ref().ok(),
                "problems": r.as_ref().err().map(|e| vec![json!({"file": Value::Null, "message": e})]).unwrap_or_default(),
            })).collect::<Vec<_>>(),
        }));
    } else {
        for (p, e) in &unreadable {
            println!("DAMAGED  {}: {e}", p.display());
        }
        if checks.is_empty() && unreadable.is_empty() && builtin_checks.is_empty() {
            println!("no backups to verify");
        }
    }
    Ok(if ok {
        Outcome::Done
    } else {
        Outcome::Integrity
    })
}

fn prune(ctx: &Ctx, a: &PruneArgs) -> Result<Outcome> {
    let repo = open_repo(&ctx.cli.backup_dir)?;
    let _lock = repo.lock(LockMode::Exclusive)?;
    let listing = repo.list()?;
    for (path, e) in &listing.problems {
        ctx.note(format!(
            "warning: {} cannot be read and is left alone, with its chain's chunks: {e}",
            path.display()
        ));
    }
    let infos: Vec<BackupInfo> = listing
        .backups
        .iter()
        .map(|b| BackupInfo {
            id: b.manifest.id.clone(),
            chain_id: b.manifest.chain_id.clone(),
            timestamp: b.manifest.timestamp,
            subsec_nanos: b.manifest.subsec_nanos,
            full: b.manifest.backup_type == BackupType::Full,
        })
        .collect();
    let policy = RetentionPolicy {
        keep_hourly: a.keep_hourly,
        keep_daily: a.keep_daily,
        keep_weekly: a.keep_weekly,
        keep_monthly: a.keep_monthly,
        min_age_days: a.min_age_days,
    };
    let plan = retention_plan(&infos, &policy, now());
    let report = prune_backups(&repo, &plan.pruned, a.dry_run)?;
    if !a.dry_run {
        repo.remove_leftovers()?;
    }
    let ts_of = |id: &str| {
        listing
            .backups
            .iter()
            .find(|b| b.manifest.id == id)
            .map_or(0, |b| b.manifest.timestamp)
    };
    if ctx.json {
        print_json(&json!({
            "dry_run": a.dry_run,
            "kept": plan.kept.iter().map(|k| json!({"id": k.id, "timestamp": ts_of(&k.id), "reasons": k.reasons})).collect::<Vec<_>>(),
            "pruned": plan.pruned,
            "chains_removed": report.chains_removed,
            "deleted_chunks": report.deleted_chunks,
            "bytes_freed": report.bytes_freed,
            "chains_not_collected": report.chains_not_collected.iter().map(|(c, why)| json!({"chain_id": c, "reason": why})).collect::<Vec<_>>(),
        }));
        return Ok(Outcome::Done);
    }
    for k in &plan.kept {
        println!(
            "keep   {}  {}  {}",
            k.id,
            utc(ts_of(&k.id)),
            k.reasons.join(", ")
        );
    }
    for id in &plan.pruned {
        println!("prune  {id}  {}", utc(ts_of(id)));
    }
    let verb = if a.dry_run { "would prune" } else { "pruned" };
    println!(
        "{verb} {} of {} backups, {} chunks, {} freed{}",
        plan.pruned.len(),
        infos.len(),
        report.deleted_chunks,
        human_bytes(report.bytes_freed),
        if report.chains_removed.is_empty() {
            String::new()
        } else {
            format!(", {} chains removed", report.chains_removed.len())
        }
    );
    for (chain, why) in &report.chains_not_collected {
        println!("chain {chain}: chunks not collected ({why})");
    }
    Ok(Outcome::Done)
}

/// What the norms of the vectors suggest about the metric.
fn suggestion(unit_norm_share: f64) -> &'static str {
    if unit_norm_share >= 0.99 {
        "the vectors are L2-normalized: consistent with cosine or innerproduct (identical results on normalized vectors); euclidean would rank them by a different formula"
    } else if unit_norm_share <= 0.01 {
        "the vectors are not normalized: the engine rejects such vectors for cosine and innerproduct unless its normalization check was disabled, so euclidean is likely"
    } else {
        "the norms are mixed: check the configuration the index ran with"
    }
}

fn warn_assumed(ctx: &Ctx, r: &MigrateReport) {
    if let (Some((name, s)), Some((_, MetricSource::Assumed))) = (&r.snapshot, r.metric) {
        eprintln!(
            "warning: legacy snapshot {name} (timestamp {}, {} documents) stores no distance metric; assuming cosine. If the index used another metric, search results will be wrong: pass --distance",
            s.info.timestamp, s.info.documents
        );
    }
    let _ = ctx;
}

fn migrate_json(r: &MigrateReport, data_dir: &Path) -> Value {
    json!({
        "data_dir": data_dir,
        "dry_run": r.dry_run,
        "already_current": r.already_current,
        "snapshot": r.snapshot.as_ref().map(|(name, s)| json!({
            "file": name,
            "layout": format!("{:?}", s.info.layout),
            "timestamp": s.info.timestamp,
            "documents": s.info.documents,
            "dimension": s.info.dimension,
            "stored_distance": s.info.distance.map(|d| d.to_string()),
            "unit_norm_share": s.unit_norm_share(),
            "suggestion": suggestion(s.unit_norm_share()),
        })),
        "distance": r.metric.map(|m| m.0.to_string()),
        "distance_source": r.metric.map(|m| format!("{:?}", m.1).to_lowercase()),
        "wal_entries_read": r.wal_entries.0,
        "wal_entries_written": r.wal_entries.1,
        "vector_count": r.vector_count,
        "previous": r.previous,
    })
}

fn migrate(ctx: &Ctx, a: &MigrateArgs) -> Result<Outcome> {
    let r = migrate_data_dir(&MigrateOptions {
        data_dir: ctx.cli.data_dir.clone(),
        distance: a.distance,
        dry_run: a.dry_run,
        keep_previous: true,
        now: now(),
    })?;
    warn_assumed(ctx, &r);
    if ctx.json {
        print_json(&migrate_json(&r, &ctx.cli.data_dir));
        return Ok(Outcome::Done);
    }
    if let Some((name, s)) = &r.snapshot {
        println!(
            "snapshot  {name} ({:?}, {} documents, dimension {}, taken {})",
            s.info.layout,
            s.info.documents,
            s.info.dimension,
            utc(s.info.timestamp)
        );
        println!(
            "norms     {} of {} vectors ({:.1}%) have unit L2 norm (within 1e-3): {}",
            s.unit_norm,
            s.info.documents,
            s.unit_norm_share() * 100.0,
            suggestion(s.unit_norm_share())
        );
    } else {
        println!("snapshot  none (the state is its WAL)");
    }
    match r.metric {
        Some((m, MetricSource::Stored)) => println!("metric    {m} (stored in the snapshot)"),
        Some((m, MetricSource::Requested)) => println!("metric    {m} (from --distance)"),
        Some((m, MetricSource::Assumed)) => {
            println!(
                "metric    {m} (ASSUMED: the snapshot stores none and no --distance was given)"
            );
        }
        None => {}
    }
    println!(
        "wal       {} entries read, {} written as W3 (the rest are already in the snapshot)",
        r.wal_entries.0, r.wal_entries.1
    );
    if r.already_current {
        println!(
            "nothing to do: {} is already in the current format",
            ctx.cli.data_dir.display()
        );
    } else if r.dry_run {
        println!(
            "would migrate {} ({} vectors; checked: the migrated state replays identically)",
            ctx.cli.data_dir.display(),
            r.vector_count
        );
    } else {
        println!(
            "migrated {} ({} vectors, replaying identically)",
            ctx.cli.data_dir.display(),
            r.vector_count
        );
        if let Some(p) = &r.previous {
            println!("legacy files kept at {}", p.display());
        }
        println!("validate with `kyrodb_backup golden check` before resuming traffic");
    }
    Ok(Outcome::Done)
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
}

fn golden(ctx: &Ctx, action: &GoldenAction) -> Result<Outcome> {
    let dir = &ctx.cli.data_dir;
    let no_metric = |e: GoldenError| -> anyhow::Error {
        match e {
            GoldenError::NoMetric => Hinted::new(
                format!("{} records no distance metric", dir.display()),
                "pass --distance cosine|euclidean|innerproduct",
            )
            .into(),
            e => anyhow!("{}: {e}", dir.display()),
        }
    };
    match action {
        GoldenAction::Create(a) => golden_create_cmd(ctx, a, no_metric),
        GoldenAction::Check { file } => {
            let bytes = std::fs::read(file).map_err(|e| anyhow!("{}: {e}", file.display()))?;
            let golden: GoldenFile = serde_json::from_slice(&bytes)
                .map_err(|e| anyhow!("{} is not a golden file: {e}", file.display()))?;
            let report = match golden_check(dir, &golden, threads()) {
                Err(GoldenError::Dimension { file: f, dir: d }) => {
                    println!("MISMATCH: the golden file has dimension {f}, the data dir {d}");
                    return Ok(Outcome::Integrity);
                }
                other => other.map_err(no_metric)?,
            };
            if ctx.json {
                print_json(
                    &json!({"file": file, "data_dir": dir, "metric": golden.metric.to_string(), "k": golden.k, "report": report}),
                );
            } else if report.ok {
                println!(
                    "ok: {} queries, top-{} under {} over {} vectors: ids, order and scores match",
                    report.queries, golden.k, golden.metric, golden.count
                );
            } else {
                if let Some((want, found)) = report.metric_differs {
                    println!(
                        "MISMATCH: the golden file was made with {want}, the data dir uses {found}"
                    );
                }
                if let Some((want, found)) = report.count_differs {
                    println!("note: the golden file saw {want} vectors, the data dir has {found}");
                }
                if let Some(m) = &report.first_mismatch {
                    let show = |x: Option<(u64, f32)>| {
                        x.map_or_else(
                            || "nothing".to_string(),
                            |(id, s)| format!("id {id} score {s:.6}"),
                        )
                    };
                    println!(
                        "MISMATCH: query {} (document {}) differs at rank {}: expected {}, found {}",
                        m.query,
                        m.source_id,
                        m.rank + 1,
                        show(m.expected),
                        show(m.found)
                    );
                }
            }
            Ok(if report.ok {
                Outcome::Done
            } else {
                Outcome::Integrity
            })
        }
    }
}

fn golden_create_cmd(
    ctx: &Ctx,
    a: &GoldenCreateArgs,
    no_metric: impl Fn(GoldenError) -> anyhow::Error,
) -> Result<Outcome> {
    if a.k == 0 || a.queries == 0 {
        bail!("--queries and --k must be at least 1");
    }
    let started = std::time::Instant::now();
    let golden = golden_create(
        &ctx.cli.data_dir,
        &GoldenOptions {
            queries: a.queries,
            k: a.k,
            seed: a.seed,
            distance: a.distance,
            threads: threads(),
        },
    )
    .map_err(no_metric)?;
    let mut bytes = serde_json::to_vec_pretty(&golden)?;
    bytes.push(b'\n');
    kyrodb_backup_storage::atomic_write(&a.out, &bytes, true)?;
    if ctx.json {
        print_json(
            &json!({"out": a.out, "queries": golden.queries.len(), "k": golden.k, "metric": golden.metric.to_string(), "dimension": golden.dimension, "count": golden.count, "seconds": started.elapsed().as_secs_f64()}),
        );
    } else {
        println!(
            "wrote {}: {} queries, exact top-{} under {} over {} vectors of dimension {} ({:.2} s)",
            a.out.display(),
            golden.queries.len(),
            golden.k,
            golden.metric,
            golden.count,
            golden.dimension,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(Outcome::Done)
}

fn check(ctx: &Ctx, a: &CheckArgs) -> Result<Outcome> {
    let listing = listing_of(&ctx.cli.backup_dir)?;
    let now = now();
    let newest = listing.backups.first();
    let age = newest.map(|b| now.saturating_sub(b.manifest.timestamp));
    let ok = age.is_some_and(|age| age <= a.max_age);
    if ctx.json {
        print_json(&json!({
            "ok": ok,
            "newest_id": newest.map(|b| &b.manifest.id),
            "newest_timestamp": newest.map(|b| b.manifest.timestamp),
            "age_seconds": age,
            "max_age_seconds": a.max_age,
        }));
    } else {
        match (newest, age) {
            (Some(b), Some(age)) => println!(
                "{}: newest backup {} is {} old (limit {})",
                if ok { "OK" } else { "ALERT" },
                b.manifest.id,
                human_age(age),
                human_age(a.max_age)
            ),
            _ => println!("ALERT: no backup in {}", ctx.cli.backup_dir.display()),
        }
    }
    Ok(if ok {
        Outcome::Done
    } else {
        Outcome::Integrity
    })
}
