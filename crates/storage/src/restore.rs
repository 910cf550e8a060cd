//! Restoring a backup into a data directory: build beside, check, swap.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use kyrodb_backup_format::{recover, DirSource, LiveIds, RecoveryOptions};

use crate::chunkstore::ChainStore;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::fsync_dir;
use crate::repository::StoredBackup;

const STAGING_MARKER: &str = ".kyrodb-restore-";

/// What `restore` is asked to do. The caller reads the environment and the clock.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The data directory to restore into.
    pub target: PathBuf,
    /// Whether replacing a non-empty target is allowed (`BACKUP_ALLOW_CLEAR=true`).
    pub allow_clear: bool,
    /// Keep the previous contents beside the target instead of deleting them.
    pub keep_previous: bool,
    /// Only check and report; change nothing.
    pub dry_run: bool,
    /// The Unix second of the restore, used to name kept previous contents.
    pub now: u64,
}

/// What a restore did (or, dry, would do).
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The restored backup.
    pub backup_id: String,
    /// The data directory.
    pub target: PathBuf,
    /// Files written with their sizes.
    pub files: Vec<(String, u64)>,
    /// Bytes written.
    pub bytes: u64,
    /// Live documents of the restored state.
    pub vector_count: u64,
    /// Whether the target held files that were replaced.
    pub replaced: bool,
    /// Where the previous contents were kept (with `keep_previous`).
    pub previous: Option<PathBuf>,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// Whether a directory is missing or empty. A target that exists but is not a directory is an
/// error: the restore will not replace a file with a directory.
pub fn target_is_empty(target: &Path) -> Result<bool> {
    match fs::symlink_metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::io(target, e)),
        Ok(_) => {
            let meta = fs::metadata(target).at(target)?;
            if !meta.is_dir() {
                return Err(Error::DataDir(format!(
                    "{} exists and is not a directory",
                    target.display()
                )));
            }
            Ok(fs::read_dir(target).at(target)?.next().is_none())
        }
    }
}

/// Finds a process (other than this one) holding a file inside `dir` open, via `/proc`.
pub fn process_using(dir: &Path) -> Option<(u32, String)> {
    let dir = fs::canonicalize(dir).ok()?;
    let me = std::process::id();
    for proc_entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc_entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if fs::read_link(fd.path()).is_ok_and(|t| t.starts_with(&dir)) {
                let command = fs::read_to_string(proc_entry.path().join("comm"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default();
                return Some((pid, command));
            }
        }
    }
    None
}

fn check_not_in_use(target: &Path) -> Result<()> {
    match process_using(target) {
        Some((pid, command)) => Err(Error::InUse {
            path: target.to_path_buf(),
            pid,
            command,
        }),
        None => Ok(()),
    }
}

/// Splits a target into (parent directory, file name), resolving a symlinked target to the
/// directory it points at, so the swap happens where the data lives.
fn resolve_target(target: &Path) -> Result<(PathBuf, String)> {
    let target =
        if fs::symlink_metadata(target).is_ok() {
            fs::canonicalize(target).at(target)?
        } else {
            let parent = target
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let parent = fs::canonicalize(parent).at(parent)?;
            parent.join(target.file_name().ok_or_else(|| {
                Error::DataDir(format!("{} has no directory name", target.display()))
            })?)
        };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::DataDir(format!("{} has no directory name", target.display())))?;
    let parent = target.parent().unwrap_or(Path::new("/")).to_path_buf();
    Ok((parent, name))
}

/// Removes staging directories that a killed restore of the same target left behind (their
/// process is gone).
fn remove_stale_staging(parent: &Path, name: &str) {
    let prefix = format!(".{name}{STAGING_MARKER}");
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let fname = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = fname
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Restores `backup` into `opts.target` so that the target is never half-written:
///
/// 1. refuses a non-empty target unless `allow_clear`, and a target in use by a process;
/// 2. writes every file into a staging directory beside the target, checking every chunk's
///    hash and every file's hash on the way, fsyncs them and the directory;
/// 3. replays the staged state and checks it recovers to the backup's document count;
/// 4. swaps staging and target in one atomic `renameat2(RENAME_EXCHANGE)` and fsyncs the parent;
/// 5. deletes the previous contents, or keeps them as `<target>.previous-<now>`.
///
/// Any failure before step 4 removes the staging directory and leaves the target as it was.
pub fn restore_backup(
    store: &ChainStore,
    backup: &StoredBackup,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    let m = &backup.manifest;
    let empty = target_is_empty(&opts.target)?;
    if !empty && !opts.allow_clear {
        return Err(Error::TargetNotEmpty(opts.target.clone()));
    }
    if !empty {
        check_not_in_use(&opts.target)?;
    }
    let (parent, name) = resolve_target(&opts.target)?;
    let mut report = RestoreReport {
        backup_id: m.id.clone(),
        target: parent.join(&name),
        files: m.files.iter().map(|f| (f.name.clone(), f.size)).collect(),
        bytes: m.files.iter().map(|f| f.size).sum(),
        vector_count: m.vector_count,
        replaced: !empty,
        previous: None,
        dry_run: opts.dry_run,
    };
    if opts.dry_run {
        // Read every chunk (read-only) so a dry run says whether the real one would succeed.
        for f in &m.files {
            io::copy(&mut store.reader(f), &mut io::sink())
                .map_err(|e| Error::Damaged(format!("backup {}: {}: {e}", m.id, f.name)))?;
        }
        return Ok(report);
    }
    if !parent.is_dir() {
        return Err(Error::DataDir(format!(
            "parent directory {} does not exist",
            parent.display()
        )));
    }
    remove_stale_staging(&parent, &name);
    let staging = parent.join(format!(
        ".{name}{STAGING_MARKER}{}-{}",
        std::process::id(),
        &m.id[..8]
    ));
    let built = build_staging(store, backup, &staging);
    if let Err(e) = built {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    let swapped = (|| {
        if !empty {
            check_not_in_use(&report.target)?;
        }
        swap_in(&staging, &report.target, &parent)
    })();
    let replaced_old = match swapped {
        Ok(r) => r,
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if replaced_old {
        // The staging path now holds the previous contents.
        if opts.keep_previous {
            let kept = parent.join(format!("{name}.previous-{}", opts.now));
            fs::rename(&staging, &kept).at(&kept)?;
            fsync_dir(&parent)?;
            report.previous = Some(kept);
        } else {
            fs::remove_dir_all(&staging).at(&staging)?;
            fsync_dir(&parent)?;
        }
    }
    Ok(report)
}

fn build_staging(store: &ChainStore, backup: &StoredBackup, staging: &Path) -> Result<()> {
    let m = &backup.manifest;
    fs::create_dir(staging).at(staging)?;
    for f in &m.files {
        let path = staging.join(&f.name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .at(&path)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        io::copy(&mut store.reader(f), &mut w).map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidData {
                Error::Damaged(format!("backup {}: {e}", m.id))
            } else {
                Error::io(&path, e)
            }
        })?;
        let file: File = w
            .into_inner()
            .map_err(|e| Error::io(&path, e.into_error()))?;
        file.sync_all().at(&path)?;
    }
    fsync_dir(staging)?;
    let mut ids = LiveIds::default();
    recover(
        &mut DirSource::new(staging),
        &mut ids,
        &RecoveryOptions {
            torn_tail_is_error: true,
        },
    )
    .map_err(|e| Error::Damaged(format!("restored state does not recover: {e}")))?;
    if ids.len() as u64 != m.vector_count {
        return Err(Error::Damaged(format!(
            "restored state recovers to {} documents, backup {} recorded {}",
            ids.len(),
            m.id,
            m.vector_count
        )));
    }
    Ok(())
}

/// Puts `staging` at `target`. Returns whether an old target was swapped out (it is then at
/// the staging path).
fn swap_in(staging: &Path, target: &Path, parent: &Path) -> Result<bool> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    let exists = fs::symlink_metadata(target).is_ok();
    if exists {
        renameat_with(CWD, staging, CWD, target, RenameFlags::EXCHANGE).map_err(|e| {
            if e == rustix::io::Errno::BUSY || e == rustix::io::Errno::XDEV {
                Error::Unswappable(format!(
                    "{} cannot be swapped atomically ({e}): is it a mount point? restore into a directory inside it",
                    target.display()
                ))
            } else {
                Error::io(target, io::Error::from(e))
            }
        })?;
    } else {
        fs::rename(staging, target).at(target)?;
    }
    fsync_dir(parent)?;
    Ok(exists)
}
