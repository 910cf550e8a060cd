//! Replacing a data directory whole: checks on the target, a staging directory beside it, and
//! the atomic swap.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use kyrodb_backup_durable::{fsync_dir, IoContext};

use crate::error::{Error, Result};

/// Marks staging directories: `.<name>.kyrodb-<purpose>-<pid>-<tag>` beside the target.
const STAGING_MARKER: &str = ".kyrodb-";

/// Whether a directory is missing or empty.
///
/// # Errors
///
/// [`Error::DataDir`] when `target` exists and is not a directory (a restore never replaces a
/// file with a directory); [`Error::Io`] when it cannot be read.
pub fn target_is_empty(target: &Path) -> Result<bool> {
    match fs::symlink_metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).at(target)?,
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

/// A process (other than this one) holding a file inside `dir` open, found through `/proc`:
/// its pid and command name.
///
/// This tool's own continuous archiver (argv\[0\] named `kyrodb_backup*`, with an `archive`
/// argument) is not counted when every descriptor it has into `dir` is read-only: it only
/// reads, and it notices itself that another directory was swapped in at the path it follows
/// (it then starts again), so a restore into the data directory it follows must not be
/// refused because of it.
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
        let mut uses = false;
        let mut only_reads = true;
        for fd in fds.flatten() {
            if fs::read_link(fd.path()).is_ok_and(|t| t.starts_with(&dir)) {
                uses = true;
                let info = proc_entry.path().join("fdinfo").join(fd.file_name());
                if !fs::read_to_string(info).is_ok_and(|s| fdinfo_read_only(&s) == Some(true)) {
                    only_reads = false;
                    break;
                }
            }
        }
        if !uses {
            continue;
        }
        if only_reads
            && fs::read(proc_entry.path().join("cmdline")).is_ok_and(|c| is_archiver_cmdline(&c))
        {
            continue;
        }
        let command = fs::read_to_string(proc_entry.path().join("comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        return Some((pid, command));
    }
    None
}

/// Whether a `/proc/<pid>/cmdline` (arguments separated by NUL bytes) is this tool's
/// archiver: argv\[0\]'s file name starts with `kyrodb_backup` and an argument is `archive`.
fn is_archiver_cmdline(cmdline: &[u8]) -> bool {
    let mut args = cmdline.split(|b| *b == 0);
    let Some(argv0) = args.next() else {
        return false;
    };
    let program = argv0.rsplit(|b| *b == b'/').next().unwrap_or(argv0);
    program.starts_with(b"kyrodb_backup") && args.any(|a| a == b"archive")
}

/// Whether a `/proc/<pid>/fdinfo/<fd>` describes a descriptor opened read-only (its `flags:`
/// line, octal, has access mode `O_RDONLY`); `None` when there is no such line.
fn fdinfo_read_only(fdinfo: &str) -> Option<bool> {
    const ACCESS_MODE: u32 = 0o3;
    let flags = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))?
        .trim();
    let flags = u32::from_str_radix(flags, 8).ok()?;
    Some(flags & ACCESS_MODE == 0)
}

/// Fails with [`Error::InUse`] when a process holds files of `dir` open.
///
/// # Errors
///
/// [`Error::InUse`], naming the process.
pub fn refuse_if_in_use(dir: &Path) -> Result<()> {
    match process_using(dir) {
        Some((pid, command)) => Err(Error::InUse {
            path: dir.to_path_buf(),
            pid,
            command,
        }),
        None => Ok(()),
    }
}

/// A data directory about to be replaced whole, checked: missing or empty, or holding files
/// that replacing was allowed for and that no process has open.
#[derive(Debug, Clone)]
pub struct Target {
    parent: PathBuf,
    name: String,
    occupied: bool,
}

impl Target {
    /// Checks `path` as a target: a non-empty directory is refused unless `allow_clear`, and
    /// one a process has files of open is refused always. A symlinked target resolves to the
    /// directory it points at, so the swap happens where the data lives.
    ///
    /// # Errors
    ///
    /// [`Error::TargetNotEmpty`], [`Error::InUse`], or [`Error::DataDir`] for a path that is no
    /// directory or has no parent.
    pub fn check(path: &Path, allow_clear: bool) -> Result<Self> {
        let empty = target_is_empty(path)?;
        if !empty && !allow_clear {
            return Err(Error::TargetNotEmpty(path.to_path_buf()));
        }
        if !empty {
            refuse_if_in_use(path)?;
        }
        let (parent, name) = resolve(path)?;
        Ok(Self {
            parent,
            name,
            occupied: !empty,
        })
    }

    /// Like [`Target::check`] for a directory that is rewritten in place (a migration): it
    /// must exist, and no process may use it.
    ///
    /// # Errors
    ///
    /// As [`Target::check`].
    pub fn existing(path: &Path) -> Result<Self> {
        refuse_if_in_use(path)?;
        let (parent, name) = resolve(path)?;
        Ok(Self {
            parent,
            name,
            occupied: true,
        })
    }

    /// The target's resolved path.
    pub fn path(&self) -> PathBuf {
        self.parent.join(&self.name)
    }

    /// Whether the target holds files that a swap replaces.
    pub fn occupied(&self) -> bool {
        self.occupied
    }

    /// Makes an empty staging directory beside the target for `purpose` (`restore`,
    /// `migrate`), after removing staging directories a killed run of any purpose left there.
    ///
    /// # Errors
    ///
    /// [`Error::DataDir`] when the parent directory is missing; [`Error::Io`] otherwise.
    pub fn stage(&self, purpose: &str, tag: &str) -> Result<Staging> {
        if !self.parent.is_dir() {
            return Err(Error::DataDir(format!(
                "parent directory {} does not exist",
                self.parent.display()
            )));
        }
        self.remove_stale_staging();
        let dir = self.parent.join(format!(
            ".{}{STAGING_MARKER}{purpose}-{}-{tag}",
            self.name,
            std::process::id()
        ));
        fs::create_dir(&dir).at(&dir)?;
        tracing::debug!(staging = %dir.display(), "building the new state beside the target");
        Ok(Staging {
            dir,
            target: self.clone(),
            done: false,
        })
    }

    /// Removes staging directories whose process is gone.
    fn remove_stale_staging(&self) {
        let prefix = format!(".{}{STAGING_MARKER}", self.name);
        let Ok(entries) = fs::read_dir(&self.parent) else {
            return;
        };
        for e in entries.flatten() {
            let fname = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = fname
                .strip_prefix(&prefix)
                .and_then(|rest| rest.split('-').nth(1))
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Splits a target into (parent directory, file name), resolving symlinks.
fn resolve(target: &Path) -> Result<(PathBuf, String)> {
    let no_name = || Error::DataDir(format!("{} has no directory name", target.display()));
    let target = if fs::symlink_metadata(target).is_ok() {
        fs::canonicalize(target).at(target)?
    } else {
        let parent = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let parent = fs::canonicalize(parent).at(parent)?;
        parent.join(target.file_name().ok_or_else(no_name)?)
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(no_name)?;
    let parent = target.parent().unwrap_or(Path::new("/")).to_path_buf();
    Ok((parent, name))
}

/// What to do with a target's previous contents after a swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Previous {
    /// Delete them.
    Delete,
    /// Keep them beside the target as `<target>.<suffix>` (e.g. `previous-<unix time>`).
    KeepAs(String),
}

/// What a swap did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swapped {
    /// The target's path.
    pub target: PathBuf,
    /// Whether previous contents were replaced.
    pub replaced: bool,
    /// Where they were kept.
    pub previous: Option<PathBuf>,
}

/// A directory beside a target where its new contents are built. Dropped without
/// [`Staging::swap_in`] (a failure), it is removed and the target stays as it was.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    target: Target,
    done: bool,
}

impl Staging {
    /// The staging directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A second, empty staging directory beside the same target (to build a transformed copy
    /// of this one); it replaces this one when it is swapped in.
    ///
    /// # Errors
    ///
    /// As [`Target::stage`].
    pub fn sibling(&self, purpose: &str, tag: &str) -> Result<Staging> {
        self.target.stage(purpose, tag)
    }

    /// Creates a new file in the staging directory.
    ///
    /// # Errors
    ///
    /// When it exists or cannot be created.
    pub fn create_file(&self, name: &str) -> Result<File> {
        let path = self.dir.join(name);
        Ok(OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .at(&path)?)
    }

    /// Puts the staged contents at the target in one atomic step (`renameat2` with
    /// `RENAME_EXCHANGE` over an existing target), makes it durable, then deletes or keeps the
    /// previous contents. The caller has written and synced every staged file. A process that
    /// opened files of the target since it was checked makes this fail with nothing changed.
    ///
    /// # Errors
    ///
    /// [`Error::InUse`], [`Error::Unswappable`], or [`Error::Io`]; before the exchange the
    /// target is untouched.
    pub fn swap_in(mut self, previous: &Previous) -> Result<Swapped> {
        fsync_dir(&self.dir)?;
        let target = self.target.path();
        if self.target.occupied {
            refuse_if_in_use(&target)?;
        }
        let replaced = exchange(&self.dir, &target, &self.target.parent)?;
        self.done = true;
        tracing::debug!(target = %target.display(), replaced, "swapped in atomically");
        let mut kept = None;
        if replaced {
            // The staging path now holds the previous contents.
            match previous {
                Previous::KeepAs(suffix) => {
                    let to = self
                        .target
                        .parent
                        .join(format!("{}.{suffix}", self.target.name));
                    fs::rename(&self.dir, &to).at(&to)?;
                    kept = Some(to);
                }
                Previous::Delete => fs::remove_dir_all(&self.dir).at(&self.dir)?,
            }
            fsync_dir(&self.target.parent)?;
        }
        Ok(Swapped {
            target,
            replaced,
            previous: kept,
        })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Puts `staging` at `target`; returns whether an old target was swapped out (it is then at
/// the staging path).
fn exchange(staging: &Path, target: &Path, parent: &Path) -> Result<bool> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    let exists = fs::symlink_metadata(target).is_ok();
    if exists {
        renameat_with(CWD, staging, CWD, target, RenameFlags::EXCHANGE).map_err(|e| {
            if e == rustix::io::Errno::BUSY || e == rustix::io::Errno::XDEV {
                Error::Unswappable {
                    path: target.to_path_buf(),
                    detail: e.to_string(),
                }
            } else {
                Error::from(kyrodb_backup_durable::Error::Io {
                    path: target.to_path_buf(),
                    source: io::Error::from(e),
                })
            }
        })?;
    } else {
        fs::rename(staging, target).at(target)?;
    }
    fsync_dir(parent)?;
    Ok(exists)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_non_empty_target_needs_permission() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("data");
        assert!(Target::check(&t, false).is_ok());
        fs::create_dir(&t).unwrap();
        fs::write(t.join("MANIFEST"), b"x").unwrap();
        assert!(matches!(
            Target::check(&t, false),
            Err(Error::TargetNotEmpty(_))
        ));
        assert!(Target::check(&t, true).unwrap().occupied());
        fs::write(tmp.path().join("file"), b"x").unwrap();
        assert!(matches!(
            Target::check(&tmp.path().join("file"), true),
            Err(Error::DataDir(_))
        ));
    }

    #[test]
    fn swap_replaces_whole_and_keeps_or_deletes_the_old() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("data");
        fs::create_dir(&t).unwrap();
        fs::write(t.join("old"), b"old").unwrap();
        for (previous, kept) in [
            (Previous::KeepAs("previous-7".into()), true),
            (Previous::Delete, false),
        ] {
            let target = Target::check(&t, true).unwrap();
            let s = target.stage("restore", "test").unwrap();
            fs::write(s.dir().join("new"), b"new").unwrap();
            let done = s.swap_in(&previous).unwrap();
            assert!(done.replaced);
            assert_eq!(files(&t), ["new"]);
            assert_eq!(done.previous.is_some(), kept);
            fs::write(t.join("old"), b"old").unwrap();
            fs::remove_file(t.join("new")).unwrap();
        }
        assert_eq!(files(tmp.path()), ["data", "data.previous-7"]);
    }

    #[test]
    fn a_dropped_staging_leaves_the_target_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("data");
        fs::create_dir(&t).unwrap();
        fs::write(t.join("old"), b"old").unwrap();
        let s = Target::check(&t, true)
            .unwrap()
            .stage("restore", "test")
            .unwrap();
        fs::write(s.dir().join("half"), b"ha").unwrap();
        drop(s);
        assert_eq!(files(tmp.path()), ["data"]);
        assert_eq!(files(&t), ["old"]);
    }

    #[test]
    fn the_archiver_is_recognized_by_its_command_line() {
        assert!(is_archiver_cmdline(
            b"/usr/local/bin/kyrodb_backup\0--data-dir\0/d\0archive\0"
        ));
        assert!(is_archiver_cmdline(b"kyrodb_backup-x86_64\0archive"));
        assert!(!is_archiver_cmdline(
            b"/usr/local/bin/kyrodb_backup\0restore\0"
        ));
        assert!(!is_archiver_cmdline(b"kyrodb_backup\0archived\0"));
        assert!(!is_archiver_cmdline(
            b"/opt/kyrodb_backup/bin/kyrodb\0archive\0"
        ));
        assert!(!is_archiver_cmdline(b"archive\0kyrodb_backup\0"));
        assert!(!is_archiver_cmdline(b""));
    }

    #[test]
    fn fdinfo_flags_tell_read_only_descriptors() {
        assert_eq!(
            fdinfo_read_only("pos:\t0\nflags:\t0100000\nmnt_id:\t30\nino:\t12\n"),
            Some(true)
        );
        assert_eq!(fdinfo_read_only("pos:\t0\nflags:\t02100002\n"), Some(false));
        assert_eq!(fdinfo_read_only("flags:\t0100001\n"), Some(false));
        assert_eq!(fdinfo_read_only("pos:\t0\n"), None);
        assert_eq!(fdinfo_read_only("flags:\tzz\n"), None);
    }

    #[test]
    fn this_process_fdinfo_of_a_read_only_and_a_writable_descriptor() {
        use std::os::fd::AsRawFd;
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        fs::write(&p, b"x").unwrap();
        let info =
            |f: &File| fs::read_to_string(format!("/proc/self/fdinfo/{}", f.as_raw_fd())).unwrap();
        let ro = File::open(&p).unwrap();
        let rw = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        let wo = OpenOptions::new().append(true).open(&p).unwrap();
        assert_eq!(fdinfo_read_only(&info(&ro)), Some(true));
        assert_eq!(fdinfo_read_only(&info(&rw)), Some(false));
        assert_eq!(fdinfo_read_only(&info(&wo)), Some(false));
        // This process holds a read-only descriptor into the directory: never counted itself.
        assert_eq!(process_using(tmp.path()), None);
    }

    #[test]
    fn staging_of_a_dead_process_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let stale = tmp.path().join(".data.kyrodb-restore-999999999-abcd");
        fs::create_dir(&stale).unwrap();
        let s = Target::check(&tmp.path().join("data"), false)
            .unwrap()
            .stage("migrate", "x")
            .unwrap();
        assert!(!stale.exists());
        assert!(s.dir().exists());
    }
}
