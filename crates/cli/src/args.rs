//! The command line, as fixed by the CLI contract.

// The doc comments here are `--help` text, where backticks would show.
#![allow(clippy::doc_markdown)]

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kyrodb_backup_ops::types::DistanceMetric;

/// Backup and recovery for KyroDB data directories.
#[derive(Debug, Parser)]
#[command(name = "kyrodb_backup", version, about, long_about = None)]
pub struct Cli {
    /// The KyroDB data directory.
    #[arg(long, global = true, env = "KYRODB_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The backup repository.
    #[arg(
        long,
        global = true,
        env = "KYRODB_BACKUP_DIR",
        default_value = "./backups"
    )]
    pub backup_dir: PathBuf,
    /// Output format [default: table for `list`, text elsewhere].
    #[arg(long, global = true, value_enum)]
    pub format: Option<Format>,
    /// Print only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More detail on stderr: each step, file and decision (-vv: every chunk).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// A file holding the passphrase of an encrypted repository (its first line). Without it,
    /// KYRODB_BACKUP_PASSWORD, or a prompt on a terminal.
    #[arg(long, global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Plain text for people.
    Text,
    /// A boxed table (with the `cli-tools` feature; text otherwise).
    Table,
    /// One JSON document on stdout.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take a backup (full by default).
    Create(CreateArgs),
    /// List every backup, newest first.
    List,
    /// Show one backup in full: files, chain, WAL coverage.
    Show {
        /// Backup id or unique prefix (8+ characters).
        id: String,
    },
    /// Restore a backup into --data-dir.
    Restore(RestoreArgs),
    /// Re-read, re-hash and decode every stored byte of backups.
    Verify(VerifyArgs),
    /// Delete backups that the retention policy does not keep.
    Prune(PruneArgs),
    /// Rewrite a legacy snapshot (and WAL) in --data-dir in the current format.
    Migrate(MigrateArgs),
    /// Offline top-k validation of --data-dir: record golden queries, or check them.
    Golden {
        /// Create or check.
        #[command(subcommand)]
        action: GoldenAction,
    },
    /// Monitoring: fail when the newest backup, the continuous archive, or the last passed
    /// restore drill is older than a limit.
    Check(CheckArgs),
    /// Restore rehearsal: restore a backup into a new scratch directory, check it fully, run its
    /// golden queries, time each phase, remove the copy, and record the result.
    Drill(DrillArgs),
    /// Show the repository's settings, or change them (e.g. `config --golden 100`).
    Config(ConfigArgs),
    /// Follow --data-dir and store every WAL frame and snapshot the engine writes, until
    /// stopped (SIGTERM or Ctrl-C: what was read is stored, then exit 0).
    Archive(ArchiveArgs),
    /// Copy backups (whole chains, in order) between repositories, checking every chunk.
    Copy(CopyArgs),
    /// Make an empty repository at --backup-dir: plain, or encrypted with --encrypt.
    Init(InitArgs),
    /// The key slots of an encrypted repository: add, list, remove, or change a passphrase.
    Key {
        /// What to do.
        #[command(subcommand)]
        action: KeyAction,
    },
}

/// Argon2id parameters of a new key slot (recorded in the slot).
#[derive(Debug, Args)]
#[allow(clippy::struct_field_names)] // the flags' names
pub struct KdfArgs {
    /// Argon2id memory in KiB (default 65536: 64 MiB).
    #[arg(long, value_name = "KIB", default_value_t = 65536)]
    pub argon2_memory_kib: u32,
    /// Argon2id passes over the memory.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub argon2_iterations: u32,
    /// Argon2id lanes.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub argon2_lanes: u32,
}

/// `init` options.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Encrypt the repository: every object sealed, chunks named by a keyed hash. The
    /// passphrase comes from --password-file, KYRODB_BACKUP_PASSWORD or a prompt; a lost
    /// passphrase means lost backups.
    #[arg(long)]
    pub encrypt: bool,
    /// Key derivation settings of the first key slot.
    #[command(flatten)]
    pub kdf: KdfArgs,
}

/// `key` actions.
#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// Add a key slot: another passphrase that opens the repository.
    Add(NewKeyArgs),
    /// List the key slots.
    List,
    /// Remove a key slot (never the last one).
    Remove {
        /// The slot's id or a unique prefix (4+ characters).
        id: String,
    },
    /// Change the passphrase: add a slot for the new one, then remove the current one.
    Passwd(NewKeyArgs),
}

/// A new passphrase.
#[derive(Debug, Args)]
pub struct NewKeyArgs {
    /// A file holding the new passphrase (its first line). Without it,
    /// KYRODB_BACKUP_NEW_PASSWORD, or a prompt on a terminal (asked twice).
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
    /// Key derivation settings of the new slot.
    #[command(flatten)]
    pub kdf: KdfArgs,
}

/// `copy` options.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["ids", "all"]))]
pub struct CopyArgs {
    /// The repository to copy from: a directory or `s3://bucket/prefix` (default: --backup-dir).
    #[arg(long, value_name = "REPO")]
    pub from: Option<PathBuf>,
    /// The repository to copy to (made if missing).
    #[arg(long, value_name = "REPO")]
    pub to: PathBuf,
    /// Backups to copy (ids or unique prefixes), with the backups they build on.
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    /// Copy every backup.
    #[arg(long)]
    pub all: bool,
    /// The passphrase file of the source, when it is encrypted with another passphrase than
    /// the target (default: the same as the target's; or KYRODB_BACKUP_FROM_PASSWORD).
    #[arg(long, value_name = "FILE")]
    pub from_password_file: Option<PathBuf>,
}

/// `create` options.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Make an incremental backup that joins the chain of --reference.
    #[arg(long, requires = "reference")]
    pub incremental: bool,
    /// The backup to build on: an id, a unique prefix, or `latest`.
    #[arg(long, requires = "incremental", value_name = "ID|latest")]
    pub reference: Option<String>,
    /// Free text stored with the backup.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Read the data dir and report how many bytes the backup would add; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also record N exact top-k queries of the captured state (stored vectors as queries;
    /// their exact nearest neighbours), which `drill` runs on the restored state. Default: the
    /// repository's setting (`config --golden N`); 0 records none.
    #[arg(long, value_name = "N")]
    pub golden: Option<usize>,
    /// Results per golden query.
    #[arg(long, value_name = "K", default_value_t = kyrodb_backup_ops::GOLDEN_K, requires = "golden")]
    pub golden_k: usize,
}

/// `drill` options.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("what").args(["backup_id", "point_in_time"]))]
pub struct DrillArgs {
    /// The backup to drill: an id or unique prefix (8+ characters). Default: the newest.
    #[arg(long, value_name = "ID")]
    pub backup_id: Option<String>,
    /// Drill a point-in-time restore of this second: Unix seconds or RFC 3339.
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub point_in_time: Option<u64>,
    /// When T cannot be rebuilt exactly, drill the latest second before it that can.
    #[arg(long, requires = "point_in_time")]
    pub nearest: bool,
    /// Where to make the drill's own new directory (removed at the end). Default: the
    /// system's temporary directory. Use a disk like the one a real restore would go to.
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
    /// Run these golden queries (from `golden create`) instead of the backup's own.
    #[arg(long, value_name = "FILE")]
    pub golden: Option<PathBuf>,
}

/// `config` options.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Golden queries `create` records when not given --golden (0: none).
    #[arg(long, value_name = "N")]
    pub golden: Option<u64>,
}

/// `restore` options.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["backup_id", "point_in_time"]))]
#[allow(clippy::struct_excessive_bools)] // independent switches, one per flag of the command
pub struct RestoreArgs {
    /// The backup to restore: an id or unique prefix (8+ characters).
    #[arg(long, value_name = "ID")]
    pub backup_id: Option<String>,
    /// Restore the state as of this second (inclusive): Unix seconds or RFC 3339
    /// (`2025-10-20T14:30:00Z`).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub point_in_time: Option<u64>,
    /// When T cannot be rebuilt exactly, restore the latest second before it that can.
    #[arg(long, requires = "point_in_time")]
    pub nearest: bool,
    /// The metric to migrate a restored legacy snapshot that stores none with (cosine,
    /// euclidean, innerproduct). One that stores its metric is migrated with it.
    #[arg(long, value_name = "METRIC", conflicts_with = "as_is")]
    pub distance: Option<DistanceMetric>,
    /// Restore a legacy backup's bytes as they are, for an older engine (the current engine
    /// loads only V4 snapshots); without it a legacy state is migrated while it is restored.
    #[arg(long)]
    pub as_is: bool,
    /// Report what would happen, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep the data dir's previous contents beside it instead of deleting them.
    #[arg(long)]
    pub keep_previous: bool,
}

/// `verify` options.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The backup to verify (id or unique prefix). Without it, every backup is verified.
    #[arg(conflicts_with = "all")]
    pub id: Option<String>,
    /// Verify every backup.
    #[arg(long)]
    pub all: bool,
}

/// `prune` options: how many UTC periods of each kind keep their newest backup.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Clock hours to keep, counting the current one.
    #[arg(long, default_value_t = 24, value_name = "N")]
    pub keep_hourly: u32,
    /// Calendar days to keep, counting today.
    #[arg(long, default_value_t = 7, value_name = "N")]
    pub keep_daily: u32,
    /// ISO weeks to keep, counting the current one.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub keep_weekly: u32,
    /// Calendar months to keep, counting the current one.
    #[arg(long, default_value_t = 6, value_name = "N")]
    pub keep_monthly: u32,
    /// Never delete a backup younger than this many days.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub min_age_days: u32,
    /// Keep every second of this last stretch restorable from the continuous archive, e.g.
    /// `7d` (without it, the archive keeps what the oldest kept backup onward needs).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub keep_within: Option<u64>,
    /// Show the decisions, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `archive` options.
#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// Store what the engine wrote at most this often while it writes (nothing while idle),
    /// e.g. `1s`, `500ms`, `5s`.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = parse_interval)]
    pub interval: std::time::Duration,
    /// How often to record, in the repository, up to where the archive is complete, also
    /// while idle (one small write each): `check --max-lag` reads it, and while the engine is
    /// idle the newest seconds restore exactly once it is written.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_interval)]
    pub heartbeat: std::time::Duration,
    /// How often to merge small pieces.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse_interval, hide = true)]
    pub merge_every: std::time::Duration,
    /// How many consecutive pieces are merged into one.
    #[arg(long, default_value_t = 60, value_name = "N", hide = true)]
    pub merge_fan_in: usize,
}

/// `migrate` options.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The metric the index used (cosine, euclidean, innerproduct). A metric stored in the
    /// snapshot wins; one that contradicts it is refused.
    #[arg(long, value_name = "METRIC")]
    pub distance: Option<DistanceMetric>,
    /// Report what would change and the evidence for the metric; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `golden` actions.
#[derive(Debug, Subcommand)]
pub enum GoldenAction {
    /// Sample stored vectors as queries and record their exact top-k under the data dir's metric.
    Create(GoldenCreateArgs),
    /// Recompute a golden file's queries on --data-dir; exit 3 on any difference.
    Check {
        /// The golden file.
        file: PathBuf,
    },
}

/// `golden create` options.
#[derive(Debug, Args)]
pub struct GoldenCreateArgs {
    /// Number of stored vectors to use as queries.
    #[arg(long, value_name = "N")]
    pub queries: usize,
    /// Results per query.
    #[arg(long, value_name = "K")]
    pub k: usize,
    /// Seed of the sampling (the same seed picks the same queries).
    #[arg(long, default_value_t = 42, value_name = "S")]
    pub seed: u64,
    /// Metric to use when the data dir records none (a WAL-only dir, a legacy snapshot).
    #[arg(long, value_name = "METRIC")]
    pub distance: Option<DistanceMetric>,
    /// Where to write the golden file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `check` options.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("limits").required(true).multiple(true).args(["max_age", "max_lag", "max_drill_age"]))]
pub struct CheckArgs {
    /// Oldest acceptable age of the newest backup, e.g. `90m`, `26h`, `7d`, `1h30m`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_age: Option<u64>,
    /// Longest acceptable delay of the continuous archive, e.g. `30s`: its archiver must have
    /// reported within it, and no WAL frame of --data-dir (when it exists here) may have
    /// waited longer to be stored.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_lag: Option<u64>,
    /// Oldest acceptable age of the last restore drill that passed, e.g. `35d`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_drill_age: Option<u64>,
}

/// Parses an interval: `500ms`, or a duration as [`parse_duration`] reads it.
///
/// # Errors
///
/// A message naming what is not an interval.
pub fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = if let Some(ms) = s.trim().strip_suffix("ms") {
        let ms: u64 = ms
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an interval like 500ms, 1s or 5s"))?;
        std::time::Duration::from_millis(ms)
    } else {
        std::time::Duration::from_secs(parse_duration(s)?)
    };
    if d < std::time::Duration::from_millis(10) {
        return Err(format!("{s:?} is too short: 10ms at least"));
    }
    Ok(d)
}

/// Parses a point in time: Unix seconds, or RFC 3339 (`2025-10-20T14:30:00Z`, any offset).
pub fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(n) = s.trim().parse::<u64>() {
        return Ok(n);
    }
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{s:?} is neither Unix seconds nor RFC 3339 ({e})"))?;
    u64::try_from(t.unix_timestamp()).map_err(|_| format!("{s:?} is before 1970"))
}

/// Parses `90m`, `26h`, `7d`, `45s`, `1h30m` (or plain seconds) into seconds.
///
/// # Errors
///
/// A message naming the part of `s` that is not a duration.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(format!("unknown unit {c:?} in {s:?} (use s, m, h, d, w)")),
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a duration like 90m, 26h or 7d"))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{s:?} is too long"))?;
        num.clear();
    }
    if !num.is_empty() {
        return Err(format!("{s:?} ends without a unit (use s, m, h, d, w)"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn times() {
        use super::parse_time;
        assert_eq!(parse_time("1760970600"), Ok(1_760_970_600));
        assert_eq!(parse_time("2025-10-20T14:30:00Z"), Ok(1_760_970_600));
        assert_eq!(parse_time("2025-10-20T16:30:00+02:00"), Ok(1_760_970_600));
        assert!(parse_time("2025-10-20 14:30").is_err());
        assert!(parse_time("1969-12-31T23:59:59Z").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90m"), Ok(5400));
        assert_eq!(parse_duration("26h"), Ok(93_600));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("120"), Ok(120));
        assert!(parse_duration("26").is_ok());
        assert!(parse_duration("26x").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("5h3").is_err());
        assert!(parse_duration("").is_err());
    }
}
