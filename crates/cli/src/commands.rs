//! The commands: each parses nothing, decides no exit code, and prints its result.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use kyrodb_backup_storage::{
    create_backup, restore_backup, target_is_empty, CreateOptions, Error as StorageError, LockMode,
    Repository, RestoreOptions, StoredBackup,
};
use kyrodb_backup_verify::verify_backup;
use serde_json::{json, Value};

use crate::args::{CheckArgs, Cli, Command, CreateArgs, Format, RestoreArgs, VerifyArgs};
use crate::output::{backup_json, human_age, human_bytes, print_json, state_line, utc};
use crate::{Hinted, Outcome};

struct Ctx<'a> {
    cli: &'a Cli,
    json: bool,
}

impl Ctx<'_> {
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
    let json = cli.format == Some(Format::Json);
    let ctx = Ctx { cli, json };
    match &cli.command {
        Command::Create(a) => create(&ctx, a),
        Command::List => list(&ctx),
        Command::Show { id } => show(&ctx, id),
        Command::Restore(a) => restore(&ctx, a),
        Command::Verify(a) => verify(&ctx, a),
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
        (true, Some(r)) => Some(repo.find(r)?),
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
    let report = create_backup(&repo, &opts)?;
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
    Ok(if Repository::exists(dir) {
        Repository::open(dir)?.list()?
    } else {
        kyrodb_backup_storage::Listing::default()
    })
}

fn list(ctx: &Ctx) -> Result<Outcome> {
    let dir = &ctx.cli.backup_dir;
    let listing = listing_of(dir)?;
    for (path, e) in &listing.problems {
        ctx.note(format!("warning: {}: {e}", path.display()));
    }
    if ctx.json {
        print_json(&Value::Array(
            listing.backups.iter().map(backup_json).collect(),
        ));
        return Ok(Outcome::Done);
    }
    if listing.backups.is_empty() {
        println!("no backups in {}", dir.display());
        return Ok(Outcome::Done);
    }
    println!(
        "{:<36}  {:<20}  {:<11}  {:>10}  {:>10}  DESCRIPTION",
        "ID", "TAKEN (UTC)", "TYPE", "SIZE", "VECTORS"
    );
    for b in &listing.backups {
        let m = &b.manifest;
        let line = format!(
            "{:<36}  {:<20}  {:<11}  {:>10}  {:>10}  {}",
            m.id,
            utc(m.timestamp),
            m.backup_type.to_string(),
            human_bytes(m.size_bytes),
            m.vector_count,
            m.description
        );
        println!("{}", line.trim_end());
    }
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

fn show(ctx: &Ctx, id: &str) -> Result<Outcome> {
    let repo = open_repo(&ctx.cli.backup_dir)?;
    let b = repo.find(id)?;
    let m = &b.manifest;
    let chain = chain_of(&repo, &b)?;
    if ctx.json {
        let mut v = backup_json(&b);
        v["source"] = json!(m.source);
        v["tool_version"] = json!(m.tool_version);
        v["files"] = json!(m
            .files
            .iter()
            .map(|f| json!({"name": f.name, "kind": f.kind, "size": f.size, "hash": f.hash, "chunks": f.chunks.len()}))
            .collect::<Vec<_>>());
        v["skipped"] = json!(m.skipped);
        v["chain"] = json!(chain
            .iter()
            .map(|c| json!({"id": c.manifest.id, "timestamp": c.manifest.timestamp, "backup_type": c.manifest.backup_type.to_string()}))
            .collect::<Vec<_>>());
        print_json(&v);
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
    for f in &m.files {
        println!(
            "  {:<32} {:>10}  {} chunks",
            f.name,
            human_bytes(f.size),
            f.chunks.len()
        );
    }
    for s in &m.skipped {
        println!("  skipped {} ({})", s.name, s.reason);
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
    let repo = open_repo(&ctx.cli.backup_dir)?;
    let _lock = repo.lock(LockMode::Shared)?;
    let b = repo.find(&a.backup_id)?;
    let store = repo.chain_store(&b.manifest.chain_id)?;
    let opts = RestoreOptions {
        target: target.clone(),
        allow_clear: allow,
        keep_previous: a.keep_previous,
        dry_run: a.dry_run,
        now: now(),
    };
    let r = restore_backup(&store, &b, &opts)?;
    if ctx.json {
        print_json(&json!({
            "backup_id": r.backup_id,
            "point_in_time": Value::Null,
            "recovered_to": b.manifest.timestamp,
            "vector_count": r.vector_count,
            "data_dir": r.target,
            "files": r.files.iter().map(|(n, s)| json!({"name": n, "size": s})).collect::<Vec<_>>(),
            "bytes": r.bytes,
            "replaced": r.replaced,
            "previous": r.previous,
            "dry_run": r.dry_run,
        }));
        return Ok(Outcome::Done);
    }
    let verb = if r.dry_run {
        "would restore"
    } else {
        "restored"
    };
    println!(
        "{verb} backup {} ({}) into {}: {} files, {}, {} vectors",
        r.backup_id,
        utc(b.manifest.timestamp),
        r.target.display(),
        r.files.len(),
        human_bytes(r.bytes),
        r.vector_count
    );
    if r.replaced {
        match &r.previous {
            Some(p) => println!("previous contents kept at {}", p.display()),
            None if r.dry_run => println!("the previous contents would be removed"),
            None => println!("previous contents removed"),
        }
    }
    Ok(Outcome::Done)
}

fn verify(ctx: &Ctx, a: &VerifyArgs) -> Result<Outcome> {
    let repo = open_repo(&ctx.cli.backup_dir)?;
    let _lock = repo.lock(LockMode::Shared)?;
    // Without an id (or with --all), every backup is verified.
    let (targets, unreadable) = if let Some(id) = &a.id {
        (vec![repo.find(id)?], Vec::new())
    } else {
        let l = repo.list()?;
        (l.backups, l.problems)
    };
    let checks: Vec<_> = targets
        .iter()
        .map(|b| {
            let c = verify_backup(&repo, b);
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
    let ok = unreadable.is_empty() && checks.iter().all(|c| c.ok);
    if ctx.json {
        print_json(&json!({
            "ok": ok,
            "backups": checks,
            "unreadable": unreadable.iter().map(|(p, e)| json!({"path": p, "problem": e.to_string()})).collect::<Vec<_>>(),
        }));
    } else {
        for (p, e) in &unreadable {
            println!("DAMAGED  {}: {e}", p.display());
        }
        if checks.is_empty() && unreadable.is_empty() {
            println!("no backups to verify");
        }
    }
    Ok(if ok {
        Outcome::Done
    } else {
        Outcome::Integrity
    })
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
