//! Runs a parsed command line: reads the environment and the clock, calls the command in
//! `kyrodb-backup-ops`, and renders its report as text, a table or JSON.

use std::time::SystemTime;

use kyrodb_backup_ops::types::{MetricSource, RetentionPolicy};
use kyrodb_backup_ops::{
    ArchiveEvent, ArchiveOptions, CheckOptions, ConfigOptions, CopyOptions, CreateOptions,
    DrillOptions, GoldenCreateOptions, InitOptions, KdfParams, Location, MigrateOptions, Now,
    PruneOptions, Reference, RepoRef, RestoreOptions, RestoreSource, S3Config, Unlocker,
    VerifyOptions,
};
use serde::Serialize;

use crate::args::{
    ArchiveArgs, CheckArgs, Cli, Command, ConfigArgs, CopyArgs, CreateArgs, DrillArgs, Format,
    GoldenAction, InitArgs, KdfArgs, KeyAction, MigrateArgs, NewKeyArgs, PruneArgs, RestoreArgs,
    VerifyArgs,
};
use crate::hints::Failure;
use crate::output::{print_json, Bar};
use crate::passphrase::CliPassphrase;
use crate::render;
use crate::Outcome;

/// Where a command's output goes: the format, and whether `-q` asked for silence.
pub(crate) struct Ctx<'a> {
    pub cli: &'a Cli,
    pub json: bool,
    /// Opens encrypted repositories with the passphrase of --password-file,
    /// `KYRODB_BACKUP_PASSWORD` or a prompt.
    pub keys: Unlocker,
}

impl Ctx<'_> {
    /// The repository a path or URL names, opened (when encrypted) with the run's passphrase.
    fn repo(&self, arg: &std::path::Path) -> Result<RepoRef, kyrodb_backup_ops::Error> {
        let repo = RepoRef::new(location_of(arg)?).with_keys(self.keys.clone());
        // A passphrase given means an encrypted repository was meant: a missing one is not
        // made plain by create, copy or archive (`init --encrypt` makes it).
        Ok(
            if self.cli.password_file.is_some()
                || std::env::var_os("KYRODB_BACKUP_PASSWORD").is_some()
            {
                repo.never_made_plain()
            } else {
                repo
            },
        )
    }

    /// A progress bar for a long step (drawn only on a terminal, never with JSON or -q).
    fn bar(&self) -> Bar {
        Bar::new(!self.json && !self.cli.quiet)
    }

    /// Progress and notes for people: stderr, silenced by `-q`.
    pub fn note(&self, msg: impl AsRef<str>) {
        if !self.cli.quiet {
            eprintln!("{}", msg.as_ref());
        }
    }

    /// Notes for each line.
    pub fn warn_all(&self, lines: &[String]) {
        for l in lines {
            self.note(format!("warning: {l}"));
        }
    }

    /// Prints a report: its JSON, or (unless `-q` on success) its text.
    fn emit<R: Serialize>(&self, report: &R, outcome: Outcome, text: impl FnOnce(&R)) -> Outcome {
        if self.json {
            print_json(&serde_json::to_value(report).expect("reports serialize"));
        } else if !(self.cli.quiet && outcome == Outcome::Done) {
            text(report);
        }
        outcome
    }
}

/// The repository `--backup-dir` names: a directory, or `s3://bucket/prefix` with the
/// endpoint and credentials the AWS tools would use.
pub(crate) fn location_of(arg: &std::path::Path) -> Result<Location, kyrodb_backup_ops::Error> {
    let text = arg.to_string_lossy();
    let parsed = kyrodb_backup_ops::parse_s3_url(&text)
        .map_err(|e| kyrodb_backup_ops::Error::InvalidOptions(e.to_string()))?;
    let Some((bucket, prefix)) = parsed else {
        return Ok(Location::local(arg));
    };
    let env = |k: &str| std::env::var(k).ok();
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let aws = crate::aws::resolve(&env, home.as_deref())
        .map_err(kyrodb_backup_ops::Error::InvalidOptions)?;
    let mut config = S3Config::new(bucket, prefix);
    config.region = aws.region;
    config.endpoint = aws.endpoint;
    config.access_key_id = aws.access_key_id;
    config.secret_access_key = aws.secret_access_key;
    config.session_token = aws.session_token;
    if let Some(secs) = env("KYRODB_BACKUP_S3_RETRY_SECS").and_then(|v| v.trim().parse().ok()) {
        config.retry_timeout = std::time::Duration::from_secs(secs);
        if secs == 0 {
            config.max_retries = 0;
        }
    }
    tracing::debug!(credentials = %aws.credentials_from, profile = %aws.profile, "S3 settings");
    Ok(Location::S3(config))
}

fn now() -> Now {
    Now::from_system_time(SystemTime::now())
}

fn allow_clear() -> bool {
    std::env::var("BACKUP_ALLOW_CLEAR")
        .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

fn outcome(ok: bool) -> Outcome {
    if ok {
        Outcome::Done
    } else {
        Outcome::Integrity
    }
}

/// Runs the parsed command line.
///
/// # Errors
///
/// A [`Failure`]: the message, a hint, and the kind the exit code is decided from.
pub fn run(cli: &Cli) -> Result<Outcome, Failure> {
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
    let ctx = Ctx {
        cli,
        json: cli.format == Some(Format::Json),
        keys: Unlocker::new(std::sync::Arc::new(CliPassphrase::new(
            cli.password_file.clone(),
            "KYRODB_BACKUP_PASSWORD",
        ))),
    };
    dispatch(&ctx).map_err(|e| Failure::of(&e, cli))
}

fn dispatch(ctx: &Ctx) -> kyrodb_backup_ops::Result<Outcome> {
    match &ctx.cli.command {
        Command::Create(a) => create(ctx, a),
        Command::List => {
            let r = kyrodb_backup_ops::list(&ctx.repo(&ctx.cli.backup_dir)?)?;
            ctx.warn_all(&r.warnings);
            Ok(ctx.emit(&r, Outcome::Done, |r| {
                render::list(r, &ctx.cli.backup_dir, ctx.cli.format != Some(Format::Text));
            }))
        }
        Command::Show { id } => {
            let r = kyrodb_backup_ops::show(&ctx.repo(&ctx.cli.backup_dir)?, id)?;
            Ok(ctx.emit(&r, Outcome::Done, |r| {
                render::show(r, ctx.cli.format == Some(Format::Table));
            }))
        }
        Command::Restore(a) => restore(ctx, a),
        Command::Verify(a) => verify(ctx, a),
        Command::Prune(a) => prune(ctx, a),
        Command::Migrate(a) => migrate(ctx, a),
        Command::Golden { action } => golden(ctx, action),
        Command::Check(a) => check(ctx, a),
        Command::Drill(a) => drill(ctx, a),
        Command::Config(a) => config(ctx, a),
        Command::Copy(a) => copy(ctx, a),
        Command::Archive(a) => archive(ctx, a),
        Command::Init(a) => init(ctx, a),
        Command::Key { action } => key(ctx, action),
    }
}

fn kdf_of(a: &KdfArgs) -> KdfParams {
    KdfParams {
        memory_kib: a.argon2_memory_kib,
        iterations: a.argon2_iterations,
        parallelism: a.argon2_lanes,
    }
}

fn init(ctx: &Ctx, a: &InitArgs) -> kyrodb_backup_ops::Result<Outcome> {
    let mut opts = InitOptions::plain();
    opts.encrypt = a.encrypt;
    opts.kdf = kdf_of(&a.kdf);
    let repo = RepoRef::new(location_of(&ctx.cli.backup_dir)?).with_keys(Unlocker::new(
        std::sync::Arc::new(CliPassphrase::new_passphrase(
            ctx.cli.password_file.clone(),
            "KYRODB_BACKUP_PASSWORD",
        )),
    ));
    let r = kyrodb_backup_ops::init(repo, &opts, now())?;
    Ok(ctx.emit(&r, Outcome::Done, render::init))
}

/// The new passphrase of `key add` / `key passwd`.
fn new_passphrase(
    ctx: &Ctx,
    a: &NewKeyArgs,
) -> kyrodb_backup_ops::Result<kyrodb_backup_ops::Secret> {
    let location = location_of(&ctx.cli.backup_dir)?.display();
    CliPassphrase::new_passphrase(a.new_password_file.clone(), "KYRODB_BACKUP_NEW_PASSWORD")
        .get(&location)
        .map_err(|why| {
            kyrodb_backup_ops::Error::InvalidOptions(format!("no new passphrase: {why}"))
        })
}

fn key(ctx: &Ctx, action: &KeyAction) -> kyrodb_backup_ops::Result<Outcome> {
    let repo = ctx.repo(&ctx.cli.backup_dir)?;
    match action {
        KeyAction::List => {
            let r = kyrodb_backup_ops::key_list(&repo)?;
            Ok(ctx.emit(&r, Outcome::Done, render::key_list))
        }
        KeyAction::Add(a) => {
            // Open with the current passphrase first: a wrong one fails before a new one is asked.
            kyrodb_backup_ops::key_unlock(&repo)?;
            let new = new_passphrase(ctx, a)?;
            let r = kyrodb_backup_ops::key_add(&repo, &new, kdf_of(&a.kdf), now())?;
            Ok(ctx.emit(&r, Outcome::Done, render::key_change))
        }
        KeyAction::Remove { id } => {
            let r = kyrodb_backup_ops::key_remove(&repo, id)?;
            Ok(ctx.emit(&r, Outcome::Done, render::key_change))
        }
        KeyAction::Passwd(a) => {
            kyrodb_backup_ops::key_unlock(&repo)?;
            let new = new_passphrase(ctx, a)?;
            let r = kyrodb_backup_ops::key_passwd(&repo, &new, kdf_of(&a.kdf), now())?;
            Ok(ctx.emit(&r, Outcome::Done, render::key_change))
        }
    }
}

fn copy(ctx: &Ctx, a: &CopyArgs) -> kyrodb_backup_ops::Result<Outcome> {
    let from_keys = if a.from_password_file.is_some()
        || std::env::var_os("KYRODB_BACKUP_FROM_PASSWORD").is_some()
    {
        Unlocker::new(std::sync::Arc::new(CliPassphrase::new(
            a.from_password_file.clone(),
            "KYRODB_BACKUP_FROM_PASSWORD",
        )))
    } else {
        ctx.keys.clone()
    };
    let from = RepoRef::new(location_of(a.from.as_ref().unwrap_or(&ctx.cli.backup_dir))?)
        .with_keys(from_keys);
    let to = ctx.repo(&a.to)?;
    let opts = if a.all {
        CopyOptions::all()
    } else {
        CopyOptions::ids(a.ids.clone())
    };
    let r = kyrodb_backup_ops::copy(from, to, &opts, now())?;
    Ok(ctx.emit(&r, Outcome::Done, render::copy))
}

fn create(ctx: &Ctx, a: &CreateArgs) -> kyrodb_backup_ops::Result<Outcome> {
    let mut opts = CreateOptions::new(&ctx.cli.data_dir);
    opts.description.clone_from(&a.description);
    opts.dry_run = a.dry_run;
    opts.reference = match a.reference.as_deref() {
        _ if !a.incremental => None,
        Some("latest") => Some(Reference::Latest),
        Some(r) => Some(Reference::Id(r.to_string())),
        None => None,
    };
    opts.golden = a.golden;
    opts.golden_k = a.golden_k;
    let r = kyrodb_backup_ops::create(&ctx.repo(&ctx.cli.backup_dir)?, &opts, now(), &ctx.bar())?;
    if let Some(why) = &r.golden_skipped {
        ctx.warn_all(&[format!("golden queries not recorded: {why}")]);
    }
    if r.leftovers_removed > 0 {
        ctx.note(format!(
            "removed {} temporary files left by an interrupted run",
            r.leftovers_removed
        ));
    }
    Ok(ctx.emit(&r, Outcome::Done, render::create))
}

fn restore(ctx: &Ctx, a: &RestoreArgs) -> kyrodb_backup_ops::Result<Outcome> {
    let source = match (&a.backup_id, a.point_in_time) {
        (Some(id), _) => RestoreSource::Backup(id.clone()),
        (None, Some(at)) => RestoreSource::PointInTime {
            at,
            nearest: a.nearest,
        },
        (None, None) => unreachable!("clap requires --backup-id or --point-in-time"),
    };
    let mut opts = RestoreOptions::new(&ctx.cli.data_dir, source);
    opts.allow_clear = allow_clear();
    opts.keep_previous = a.keep_previous;
    opts.dry_run = a.dry_run;
    opts.distance = a.distance;
    opts.as_is = a.as_is;
    let r = kyrodb_backup_ops::restore(&ctx.repo(&ctx.cli.backup_dir)?, &opts, now(), &ctx.bar())?;
    ctx.warn_all(&r.warnings);
    if let Some(t) = r.point_in_time.filter(|&t| t != r.recovered_to) {
        ctx.note(format!(
            "{t} is not exactly recoverable; restored the nearest earlier second, {} ({})",
            r.recovered_to,
            crate::output::utc(r.recovered_to)
        ));
    }
    Ok(ctx.emit(&r, Outcome::Done, render::restore))
}

fn verify(ctx: &Ctx, a: &VerifyArgs) -> kyrodb_backup_ops::Result<Outcome> {
    let opts = match &a.id {
        Some(id) => VerifyOptions::one(id.clone()),
        None => VerifyOptions::all(),
    };
    let r = kyrodb_backup_ops::verify(&ctx.repo(&ctx.cli.backup_dir)?, &opts, &ctx.bar())?;
    ctx.warn_all(&r.warnings);
    Ok(ctx.emit(&r, outcome(r.ok), render::verify))
}

fn prune(ctx: &Ctx, a: &PruneArgs) -> kyrodb_backup_ops::Result<Outcome> {
    let policy = RetentionPolicy {
        keep_hourly: a.keep_hourly,
        keep_daily: a.keep_daily,
        keep_weekly: a.keep_weekly,
        keep_monthly: a.keep_monthly,
        min_age_days: a.min_age_days,
        keep_within_secs: a.keep_within.unwrap_or(0),
    };
    let mut opts = PruneOptions::new(policy);
    opts.dry_run = a.dry_run;
    opts.keep_within = a.keep_within;
    let r = kyrodb_backup_ops::prune(&ctx.repo(&ctx.cli.backup_dir)?, &opts, now())?;
    for u in &r.unreadable {
        ctx.note(format!(
            "warning: {} cannot be read and is left alone, with its chain's chunks: {}",
            u.path.display(),
            u.problem
        ));
    }
    Ok(ctx.emit(&r, Outcome::Done, render::prune))
}

fn migrate(ctx: &Ctx, a: &MigrateArgs) -> kyrodb_backup_ops::Result<Outcome> {
    let mut opts = MigrateOptions::new(&ctx.cli.data_dir);
    opts.distance = a.distance;
    opts.dry_run = a.dry_run;
    let r = kyrodb_backup_ops::migrate(&opts, now())?;
    if let (Some(s), Some(MetricSource::Assumed)) = (&r.snapshot, r.distance_source) {
        ctx.note(format!(
            "warning: legacy snapshot {} (timestamp {}, {} documents) stores no distance metric; assuming cosine. If the index used another metric, search results will be wrong: pass --distance",
            s.file, s.timestamp, s.documents
        ));
    }
    Ok(ctx.emit(&r, Outcome::Done, render::migrate))
}

fn golden(ctx: &Ctx, action: &GoldenAction) -> kyrodb_backup_ops::Result<Outcome> {
    match action {
        GoldenAction::Create(a) => {
            let mut opts = GoldenCreateOptions::new(&ctx.cli.data_dir, a.queries, a.k, &a.out);
            opts.seed = a.seed;
            opts.distance = a.distance;
            let r = kyrodb_backup_ops::golden_create_file(&opts)?;
            Ok(ctx.emit(&r, Outcome::Done, render::golden_create))
        }
        GoldenAction::Check { file } => {
            let r = kyrodb_backup_ops::golden_check_file(&ctx.cli.data_dir, file)?;
            Ok(ctx.emit(&r, outcome(r.report.ok), render::golden_check))
        }
    }
}

fn check(ctx: &Ctx, a: &CheckArgs) -> kyrodb_backup_ops::Result<Outcome> {
    let mut opts = CheckOptions::default();
    opts.max_age = a.max_age;
    opts.max_lag = a.max_lag;
    opts.max_drill_age = a.max_drill_age;
    // The data dir is compared with the archive only where it exists (check may run on
    // another host than the database).
    opts.data_dir = Some(ctx.cli.data_dir.clone()).filter(|d| d.join("MANIFEST").is_file());
    let r = kyrodb_backup_ops::check(&ctx.repo(&ctx.cli.backup_dir)?, &opts, now())?;
    Ok(ctx.emit(&r, outcome(r.ok), |r| render::check(r, &ctx.cli.backup_dir)))
}

fn drill(ctx: &Ctx, a: &DrillArgs) -> kyrodb_backup_ops::Result<Outcome> {
    let mut opts = DrillOptions::new(a.scratch.clone().unwrap_or_else(std::env::temp_dir));
    opts.source = match (&a.backup_id, a.point_in_time) {
        (Some(id), _) => Some(RestoreSource::Backup(id.clone())),
        (None, Some(at)) => Some(RestoreSource::PointInTime {
            at,
            nearest: a.nearest,
        }),
        (None, None) => None,
    };
    opts.golden_file.clone_from(&a.golden);
    opts.live_data_dir = Some(ctx.cli.data_dir.clone());
    let r = kyrodb_backup_ops::drill(&ctx.repo(&ctx.cli.backup_dir)?, &opts, now(), &ctx.bar())?;
    ctx.warn_all(&r.warnings);
    Ok(ctx.emit(&r, outcome(r.passed), render::drill))
}

fn config(ctx: &Ctx, a: &ConfigArgs) -> kyrodb_backup_ops::Result<Outcome> {
    let mut opts = ConfigOptions::default();
    opts.golden_queries = a.golden;
    let r = kyrodb_backup_ops::config(&ctx.repo(&ctx.cli.backup_dir)?, &opts)?;
    Ok(ctx.emit(&r, Outcome::Done, render::config))
}

/// The system clock, for long-running commands.
struct SystemClock;

impl kyrodb_backup_ops::Clock for SystemClock {
    fn now(&self) -> Now {
        now()
    }
}

/// Sets `flag` on SIGTERM or SIGINT (a thread waits for them).
fn stop_on_signals(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (mut term, mut int) = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        ))
    })?;
    std::thread::Builder::new()
        .name("kyrodb-backup-signals".into())
        .spawn(move || {
            rt.block_on(async {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            });
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        })?;
    Ok(())
}

fn archive(ctx: &Ctx, a: &ArchiveArgs) -> kyrodb_backup_ops::Result<Outcome> {
    let mut opts = ArchiveOptions::new(&ctx.cli.data_dir);
    opts.interval = a.interval;
    opts.heartbeat = a.heartbeat;
    opts.merge_every = a.merge_every;
    opts.merge_fan_in = a.merge_fan_in;
    opts.host = crate::host_name();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    stop_on_signals(std::sync::Arc::clone(&stop)).map_err(|e| kyrodb_backup_ops::Error::Io {
        path: ctx.cli.data_dir.clone(),
        source: e,
    })?;
    let mut on_event = |e: &ArchiveEvent| {
        if ctx.json {
            // One compact line per event, so a pipe reads them as they come.
            crate::output::outln!("{}", serde_json::to_string(e).expect("events serialize"));
        } else if let Some(line) = render::archive_event(e, ctx.cli.verbose > 0) {
            ctx.note(line);
        }
    };
    let r = kyrodb_backup_ops::archive(
        &ctx.repo(&ctx.cli.backup_dir)?,
        &opts,
        &SystemClock,
        &stop,
        &mut on_event,
    )?;
    Ok(ctx.emit(&r, Outcome::Done, render::archive))
}
