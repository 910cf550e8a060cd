//! Integrity and deep checks of `kyrodb_backup` backups.
//!
//! What it is for: proving that a backup will restore. [`verify_backup`] re-reads every chunk a
//! backup needs, checks each chunk's hash and size and each file's whole-file hash, decodes every
//! KyroDB file (MANIFEST, snapshot with its CRC, every WAL frame with its CRC), replays the state
//! the way the engine recovers it, and compares what it finds with what the manifest recorded.
//! What it is not for: repairing anything, checking a live data dir (golden queries live in
//! `kyrodb-backup-datadir`), or deciding exit codes (the binary does that from
//! [`BackupCheck::ok`]).
//!
//! ```no_run
//! use kyrodb_backup_storage::Repository;
//! use kyrodb_backup_verify::verify_backup;
//!
//! let repo = Repository::open("backups".as_ref())?;
//! for backup in repo.list()?.backups {
//!     let check = verify_backup(&repo, &backup, &kyrodb_backup_storage::NoProgress);
//!     println!("{} {}", backup.manifest.id, if check.ok { "ok" } else { "damaged" });
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::{self, Read};
use std::rc::Rc;

use kyrodb_backup_format::engine::{recover, FileSource, LiveIds, RecoveryOptions};
use kyrodb_backup_format::repo::{ContentHash, FileEntry, SnapshotIdRecorder};
use kyrodb_backup_storage::{wal_summary, ChainStore, Progress, Repository, StoredBackup};
use serde::Serialize;

/// One thing found wrong with a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The captured file concerned, when one is.
    pub file: Option<String>,
    /// What is wrong, one line.
    pub message: String,
}

/// What the current engine makes of the state a backup restores to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CurrentEngine {
    /// It starts on the restored state as it is.
    Starts,
    /// The state is legacy and stores its metric: a restore migrates it, and the engine starts.
    Migrates,
    /// The state is legacy and stores no metric: a restore must be given one (or restore the
    /// legacy bytes for an older engine).
    NeedsMetric,
}

/// The result of checking one backup.
#[derive(Debug, Clone, Serialize)]
pub struct BackupCheck {
    /// The backup's id.
    pub id: String,
    /// Whether no problem was found.
    pub ok: bool,
    /// Everything found wrong.
    pub problems: Vec<Problem>,
    /// Files read.
    pub files_checked: u64,
    /// Plain bytes read and hashed.
    pub bytes_checked: u64,
    /// Live documents the stored state recovers to (when it recovers).
    pub vector_count: Option<u64>,
    /// What the current engine makes of the restored state (when it recovers).
    pub current_engine: Option<CurrentEngine>,
    /// The store failed while the backup was read (unreachable, denied): the check is
    /// incomplete, and says nothing about damage.
    #[serde(skip)]
    pub store_failure: Option<String>,
}

type Log = Rc<RefCell<Vec<Problem>>>;

/// Reads a stored file for the decoder; when dropped it reads whatever the decoder left, so
/// every chunk and the whole-file hash are checked, and trailing bytes are reported.
struct Draining<'a> {
    name: String,
    inner: kyrodb_backup_storage::FileReader<'a>,
    read: u64,
    log: Log,
    bytes: Rc<RefCell<u64>>,
    progress: &'a dyn Progress,
}

impl Read for Draining<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

impl Drop for Draining<'_> {
    fn drop(&mut self) {
        match io::copy(&mut self.inner, &mut io::sink()) {
            Ok(0) => {}
            Ok(extra) => self.log.borrow_mut().push(Problem {
                file: Some(self.name.clone()),
                message: format!("{extra} bytes after the end of the decoded data"),
            }),
            Err(e) => {
                let message = e.to_string();
                let mut log = self.log.borrow_mut();
                if !log.iter().any(|p| p.message == message) {
                    log.push(Problem {
                        file: Some(self.name.clone()),
                        message,
                    });
                }
            }
        }
        *self.bytes.borrow_mut() += self.read;
    }
}

struct StoredSource<'a> {
    store: &'a ChainStore,
    files: &'a [FileEntry],
    opened: BTreeSet<String>,
    log: Log,
    bytes: Rc<RefCell<u64>>,
    progress: &'a dyn Progress,
}

impl FileSource for StoredSource<'_> {
    fn open(&mut self, name: &str) -> io::Result<Box<dyn Read + '_>> {
        let entry = self.files.iter().find(|f| f.name == name).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{name} is needed by the captured MANIFEST but not in the backup"),
            )
        })?;
        self.opened.insert(name.to_string());
        Ok(Box::new(Draining {
            name: name.to_string(),
            inner: self.store.reader(entry),
            read: 0,
            log: Rc::clone(&self.log),
            bytes: Rc::clone(&self.bytes),
            progress: self.progress,
        }))
    }

    fn list(&mut self) -> io::Result<Vec<String>> {
        Ok(self.files.iter().map(|f| f.name.clone()).collect())
    }
}

/// What the recovered state says against what the manifest recorded.
fn compare_with_manifest(
    report: &kyrodb_backup_format::engine::RecoveryReport,
    count: u64,
    m: &kyrodb_backup_format::repo::BackupManifest,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut note = |message: String| {
        problems.push(Problem {
            file: None,
            message,
        });
    };
    if count != m.vector_count {
        note(format!(
            "recovers to {count} documents, the manifest recorded {}",
            m.vector_count
        ));
    }
    let snap = report
        .snapshot
        .as_ref()
        .map(|(f, i)| (f.clone(), i.last_wal_seq));
    let recorded = m
        .snapshot
        .as_ref()
        .map(|s| (s.file.clone(), s.last_wal_seq));
    if snap != recorded {
        note(format!(
            "snapshot {snap:?} differs from the manifest's {recorded:?}"
        ));
    }
    if wal_summary(report) != m.wal {
        note("WAL coverage differs from the manifest's".into());
    }
    problems
}

/// Checks the snapshot id list incrementals count from: every byte read, and equal to the list
/// derived from the snapshot just now (`derived`, when the state recovered).
/// Reads the backup's golden queries whole (every chunk and the file's hash) and decodes them.
fn check_golden(
    store: &ChainStore,
    m: &kyrodb_backup_format::repo::BackupManifest,
    bytes: &RefCell<u64>,
    problems: &mut Vec<Problem>,
) {
    if let Some(g) = &m.golden {
        match kyrodb_backup_storage::read_golden(store, g) {
            Ok(_) => *bytes.borrow_mut() += g.size,
            Err(e) => problems.push(Problem {
                file: Some(kyrodb_backup_format::repo::GoldenQueries::FILE_NAME.to_string()),
                message: e.to_string(),
            }),
        }
    }
}

fn check_id_list(
    store: &ChainStore,
    list: &kyrodb_backup_format::repo::SnapshotIds,
    m: &kyrodb_backup_format::repo::BackupManifest,
    derived: Option<&Option<(Vec<u8>, u64)>>,
    bytes: &RefCell<u64>,
    problems: &mut Vec<Problem>,
) {
    let entry = list.entry();
    let mut problem = |message: String| {
        problems.push(Problem {
            file: Some(entry.name.clone()),
            message,
        });
    };
    match io::copy(&mut store.reader(&entry), &mut io::sink()) {
        Ok(n) => *bytes.borrow_mut() += n,
        Err(e) => problem(e.to_string()),
    }
    if let Some(derived) = derived {
        let same = derived
            .as_ref()
            .is_some_and(|(ids, count)| *count == list.count && ContentHash::of(ids) == list.hash)
            && m.snapshot.as_ref().is_some_and(|s| s.file == list.snapshot);
        if !same {
            problem(format!(
                "snapshot id list does not match the ids in {}",
                list.snapshot
            ));
        }
    }
}

/// What the current engine makes of a recovered state; a state it refuses even though it is
/// not legacy is a problem.
fn current_engine(
    report: &kyrodb_backup_format::engine::RecoveryReport,
    problems: &mut Vec<Problem>,
) -> Option<CurrentEngine> {
    match (report.in_legacy_layouts(), report.current_engine_refusal()) {
        (false, None) => Some(CurrentEngine::Starts),
        // Only a legacy snapshot without a metric needs one chosen; the rest is migrated.
        (true, _) if report.snapshot.is_some() && report.distance.is_none() => {
            Some(CurrentEngine::NeedsMetric)
        }
        (true, _) => Some(CurrentEngine::Migrates),
        (false, Some(why)) => {
            problems.push(Problem {
                file: None,
                message: format!("the restored state would not start the current engine: {why}"),
            });
            None
        }
    }
}

/// Checks one backup completely; see the crate documentation. Never fails: everything found
/// is in the returned [`BackupCheck`].
pub fn verify_backup(
    repo: &Repository,
    backup: &StoredBackup,
    progress: &dyn Progress,
) -> BackupCheck {
    let m = &backup.manifest;
    let mut check = BackupCheck {
        id: m.id.clone(),
        ok: false,
        problems: Vec::new(),
        files_checked: 0,
        bytes_checked: 0,
        vector_count: None,
        current_engine: None,
        store_failure: None,
    };
    let store = match repo.chain_store(&m.chain_id) {
        Ok(s) => s,
        Err(e) => {
            check.problems.push(Problem {
                file: None,
                message: e.to_string(),
            });
            return check;
        }
    };
    let log: Log = Rc::default();
    let bytes = Rc::new(RefCell::new(0u64));
    progress.start("verify", m.size_bytes);
    let mut source = StoredSource {
        store: &store,
        files: &m.files,
        opened: BTreeSet::new(),
        log: Rc::clone(&log),
        bytes: Rc::clone(&bytes),
        progress,
    };
    let mut ids = LiveIds::default();
    let mut recorder = SnapshotIdRecorder::new(&mut ids);
    let recovered = recover(
        &mut source,
        &mut recorder,
        &RecoveryOptions {
            torn_tail_is_error: true,
        },
    );
    let derived_ids = recorder.finish();
    let opened = std::mem::take(&mut source.opened);
    drop(source);
    let mut problems = std::mem::take(&mut *log.borrow_mut());
    let recovered_ok = recovered.is_ok();
    match recovered {
        Ok(report) => {
            let count = ids.len() as u64;
            check.vector_count = Some(count);
            problems.extend(compare_with_manifest(&report, count, m));
            check.current_engine = current_engine(&report, &mut problems);
        }
        Err(e) => {
            let message = e.to_string();
            if !problems.iter().any(|p| message.contains(&p.message)) {
                problems.push(Problem {
                    file: None,
                    message,
                });
            }
        }
    }
    // Files the recovery did not reach (it stopped early, or they are not part of the state)
    // are still read in full so that every stored byte is checked.
    for f in m.files.iter().filter(|f| !opened.contains(&f.name)) {
        match io::copy(&mut store.reader(f), &mut io::sink()) {
            Ok(n) => *bytes.borrow_mut() += n,
            Err(e) => problems.push(Problem {
                file: Some(f.name.clone()),
                message: e.to_string(),
            }),
        }
    }
    if let Some(list) = &m.snapshot_ids {
        check_id_list(
            &store,
            list,
            m,
            recovered_ok.then_some(&derived_ids),
            &bytes,
            &mut problems,
        );
    }
    check_golden(&store, m, &bytes, &mut problems);
    check.store_failure = store.store_failure();
    for p in &mut problems {
        if p.file.is_none() {
            p.file = m
                .files
                .iter()
                .find(|f| p.message.contains(&f.name))
                .map(|f| f.name.clone());
        }
    }
    check.files_checked = m.files.len() as u64;
    check.bytes_checked = *bytes.borrow();
    check.ok = problems.is_empty();
    check.problems = problems;
    check
}
