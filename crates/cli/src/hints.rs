//! What the operator reads when a command fails: the message (naming the flags that were
//! given) and a hint line (naming the flag or command that helps).

use kyrodb_backup_ops::types::PointInTimeError;
use kyrodb_backup_ops::{Error, ErrorKind};

use crate::args::{Cli, Command};
use crate::output::human_bytes;

/// A failed command, as the binary reports it.
#[derive(Debug)]
pub struct Failure {
    /// The one-line error.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
    /// What the exit code is decided from.
    pub kind: ErrorKind,
}

impl Failure {
    /// An error of a command, rendered for `cli`'s flags.
    pub fn of(e: &Error, cli: &Cli) -> Self {
        let (message, hint) = render(e, cli);
        Self {
            message,
            hint,
            kind: e.kind(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

const VERIFY_HINT: &str =
    "run `kyrodb_backup verify --all`, and restore an older backup if this one is damaged";

/// Hints for the failures of an object store and its settings.
fn store_hint(e: &Error) -> Option<&'static str> {
    Some(match e {
        Error::Denied(_) => {
            "check the credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE) and their policy: list, show, verify and restore need s3:GetObject and s3:ListBucket, create and copy also s3:PutObject, prune also s3:DeleteObject"
        }
        Error::NoBucket(_) => {
            "check the bucket name in the repository URL, and AWS_ENDPOINT_URL and AWS_REGION; create the bucket first"
        }
        Error::Unavailable(_) => {
            "check AWS_ENDPOINT_URL and the network; requests were retried with backoff before giving up, and nothing was committed"
        }
        Error::InvalidOptions(m)
            if m.contains("profile") || m.contains("AWS_") || m.contains("credential") =>
        {
            "set AWS_PROFILE to a profile with static keys in ~/.aws/credentials or ~/.aws/config, or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        }
        Error::InvalidOptions(m) if m.starts_with("s3://") => {
            "write an S3 repository as s3://BUCKET/PREFIX"
        }
        _ => return None,
    })
}

/// Hints for the keys of an encrypted repository.
fn key_hint(e: &Error) -> Option<&'static str> {
    Some(match e {
        Error::KeyRequired { .. } => {
            "give the repository's passphrase: --password-file FILE, KYRODB_BACKUP_PASSWORD, or run on a terminal to be asked"
        }
        Error::WrongPassphrase { .. } => {
            "check the passphrase (--password-file, KYRODB_BACKUP_PASSWORD); any passphrase added with `kyrodb_backup key add` works; a lost passphrase cannot be recovered"
        }
        Error::AlreadyExists(_) => {
            "use the repository that is there, or choose another --backup-dir"
        }
        Error::KeyRefused(m) if m.contains("last intact key slot") => {
            "add another passphrase first with `kyrodb_backup key add`"
        }
        Error::KeyRefused(m) if m.contains("not encrypted") => {
            "a plain repository has no keys; to encrypt its backups, `kyrodb_backup init --encrypt` a new repository and `kyrodb_backup copy --all` into it"
        }
        Error::KeyRefused(m) if m.contains("a passphrase was given") => {
            "make it first: `kyrodb_backup init --encrypt` (or, for a plain repository, run without a passphrase)"
        }
        Error::KeyRefused(_) => "run `kyrodb_backup key list` to see the key slots",
        _ => return None,
    })
}

/// Hints for `drill`, `config` and `create --golden`.
fn drill_hint(e: &Error, cli: &Cli) -> Option<(String, Option<String>)> {
    let plain = |hint: &str| Some((e.to_string(), Some(hint.to_string())));
    let drill = matches!(cli.command, Command::Drill(_));
    match e {
        Error::NoBackupYet if drill => Some((
            "the repository has no backup to drill yet".into(),
            Some("create a backup first, with --golden N to record queries the drill runs".into()),
        )),
        Error::InvalidOptions(m) if drill && m.contains("scratch") => {
            plain("pass --scratch DIR outside --data-dir, on a disk with room for a restored copy")
        }
        Error::InvalidOptions(_) if matches!(cli.command, Command::Create(_) | Command::Config(_)) => {
            plain("pass --golden N with N at most 1000 (and --golden-k at least 1)")
        }
        Error::Io { .. } if drill => plain(
            "the drill makes its own new directory under --scratch (default: the system's temporary directory): pass --scratch DIR on a writable disk with room for a restored copy",
        ),
        Error::Other(m) if m.contains("could not be recorded") => plain(
            "check that these credentials may write to the repository (drills/ beside the backups), then run the drill again",
        ),
        _ => None,
    }
}

fn render(e: &Error, cli: &Cli) -> (String, Option<String>) {
    let plain = |hint: &str| (e.to_string(), Some(hint.to_string()));
    if let Some(hint) = store_hint(e).or_else(|| key_hint(e)) {
        return plain(hint);
    }
    if let Some(r) = drill_hint(e, cli) {
        return r;
    }
    match e {
        Error::NotARepository(_) => plain(
            "check --backup-dir, or run `kyrodb_backup create` to start a repository there",
        ),
        Error::UnsupportedRepository { .. } => plain("upgrade kyrodb_backup"),
        Error::Locked(m) if m.contains("an archiver") => plain(
            "one archiver follows a repository: stop the other one (its process is named above), or wait until its host is gone and its lease expires",
        ),
        Error::Locked(_) => plain(
            "wait for the other run to finish: one prune runs at a time, and a create waits for a prune",
        ),
        Error::NotFound(_) | Error::Ambiguous { .. } | Error::PrefixTooShort(_) => {
            plain("run `kyrodb_backup list` to see backup ids")
        }
        Error::TargetNotEmpty(p) => plain(&format!(
            "set BACKUP_ALLOW_CLEAR=true to replace the contents of {}",
            p.display()
        )),
        Error::InUse { .. } => plain("stop the KyroDB server before restoring"),
        Error::Damaged(m) if m.contains("keys/") || m.contains("key slot") => plain(
            "if another passphrase opens the repository, `kyrodb_backup key list` shows the unusable slot; otherwise put back keys/ and kyrodb-backup.json from a copy of the repository",
        ),
        Error::Damaged(_) | Error::Format(_) => plain(VERIFY_HINT),
        Error::DataDir(_) => plain("check --data-dir points at a KyroDB data directory"),
        Error::MetricConflict {
            stored,
            requested,
            in_backup: true,
        } => (
            format!(
                "--distance {requested} contradicts the metric {stored} stored in the backup's snapshot"
            ),
            Some("leave out --distance: a snapshot that stores its metric is restored with it".into()),
        ),
        Error::MetricConflict {
            stored, requested, ..
        } => (
            format!("the snapshot stores the metric {stored}; --distance {requested} contradicts it"),
            Some("leave out --distance: a snapshot that stores its metric keeps it".into()),
        ),
        Error::NoBackupYet => (
            "--reference latest: the repository has no backup yet".into(),
            Some("create a full backup first".into()),
        ),
        Error::Reference { reference, source } => (
            format!("--reference {reference}: {source}"),
            Some("create a new full backup (without --incremental) to start a new chain".into()),
        ),
        Error::NoMetric(_) => plain("pass --distance cosine|euclidean|innerproduct"),
        Error::NoSpace { path, needed, free } => {
            let restoring = matches!(cli.command, Command::Restore(_));
            (
                format!(
                    "no space left on the file system of {}: the {} needed up to {}, {} is free",
                    path.display(),
                    if restoring { "restore" } else { "backup" },
                    human_bytes(*needed),
                    human_bytes(*free)
                ),
                Some(if restoring {
                    "free space there, or restore into a directory on a bigger volume; the data dir was not changed".into()
                } else {
                    "free space there (`kyrodb_backup prune`, with --dry-run first), or move the repository to a bigger volume; what this backup had written was removed".into()
                }),
            )
        }
        Error::NeedsMetric(_) => plain(
            "pass --distance cosine|euclidean|innerproduct to restore it migrated to the current format, or --as-is to restore the legacy bytes for an older engine",
        ),
        Error::InvalidOptions(_) if matches!(cli.command, Command::Golden { .. }) => (
            "--queries and --k must be at least 1".into(),
            None,
        ),
        Error::PointInTime(PointInTimeError::NotRecoverable { target, windows }) => {
            let nearest = matches!(&cli.command, Command::Restore(a) if a.nearest)
                || matches!(&cli.command, Command::Drill(a) if a.nearest);
            if nearest {
                // Nothing is recoverable before T: --nearest cannot help, name what can.
                let hint = match windows.iter().find(|w| w.from > *target) {
                    Some(w) => format!(
                        "nothing is recoverable before {target}; the earliest recoverable second after it is {} (restore it with --point-in-time {})",
                        w.from, w.from
                    ),
                    None => "nothing is recoverable before it; restore a backup with --backup-id".into(),
                };
                (e.to_string(), Some(hint))
            } else {
                plain("add --nearest to restore the latest recoverable second before it")
            }
        }
        Error::PointInTime(PointInTimeError::NoBackups) => plain("create a full backup first"),
        _ => (e.to_string(), None),
    }
}
