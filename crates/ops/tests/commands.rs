//! The commands through the library, with the clock pinned: freshness checks at chosen
//! seconds, the kind of every refusal and failure, and one catalog for both kinds of backup.

use std::fs;
use std::path::{Path, PathBuf};

use kyrodb_backup_ops::types::RetentionPolicy;
use kyrodb_backup_ops::{
    check, create, list, prune, restore, show, verify, CheckOptions, CreateOptions, Error,
    ErrorKind, NoProgress, Now, PruneOptions, Reference, RestoreOptions, RestoreSource, Shown,
    VerifyOptions,
};

mod common;

use common::{copy_dir, fixtures};

const T: u64 = 1_800_000_000;

fn backed_up(tmp: &Path) -> (PathBuf, PathBuf, String) {
    let data = tmp.join("data");
    copy_dir(&fixtures().join("kyrodb/v4-rotated/data"), &data);
    let backups = tmp.join("backups");
    let r = create(
        &backups,
        &CreateOptions::new(&data),
        Now::at(T),
        &NoProgress,
    )
    .unwrap();
    (data, backups, r.backup.id)
}

#[test]
fn check_is_decided_at_the_given_second() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, backups, id) = backed_up(tmp.path());
    let limit = CheckOptions::max_age(3600);
    let fresh = check(&backups, &limit, Now::at(T + 3600)).unwrap();
    assert!(fresh.ok);
    assert_eq!(fresh.newest_id.as_deref(), Some(id.as_str()));
    assert_eq!(fresh.age_seconds, Some(3600));
    let stale = check(&backups, &limit, Now::at(T + 3601)).unwrap();
    assert!(!stale.ok);
    assert_eq!(stale.age_seconds, Some(3601));
    // A backup dated after `now` (a clock stepped back) is age 0, not a wrap-around.
    assert_eq!(
        check(&backups, &limit, Now::at(T - 10))
            .unwrap()
            .age_seconds,
        Some(0)
    );
    // An empty directory has no backup; a missing one is not a repository.
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let none = check(&empty, &limit, Now::at(T)).unwrap();
    assert!(!none.ok && none.newest_id.is_none());
    let e = check(tmp.path().join("missing"), &limit, Now::at(T)).unwrap_err();
    assert!(matches!(e, Error::NotARepository(_)));
    assert_eq!(e.kind(), ErrorKind::Failed);
}

#[test]
fn every_refusal_and_failure_has_its_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, backups, id) = backed_up(tmp.path());
    let by_id = |target: &Path| RestoreOptions::new(target, RestoreSource::Backup(id.clone()));

    // A data dir that holds files is refused unless replacing it is allowed.
    let e = restore(&backups, &by_id(&data), Now::at(T), &NoProgress).unwrap_err();
    assert!(matches!(e, Error::TargetNotEmpty(_)), "{e}");
    assert_eq!(e.kind(), ErrorKind::Refused);

    // A second before anything was captured cannot be rebuilt.
    let early = RestoreOptions::new(
        tmp.path().join("early"),
        RestoreSource::PointInTime {
            at: 1_000,
            nearest: false,
        },
    );
    let e = restore(&backups, &early, Now::at(T), &NoProgress).unwrap_err();
    assert!(matches!(e, Error::PointInTime(_)), "{e}");
    assert_eq!(e.kind(), ErrorKind::Refused);

    // Unknown ids and short prefixes are plain failures.
    let e = restore(
        &backups,
        &RestoreOptions::new(
            tmp.path().join("x"),
            RestoreSource::Backup("deadbeef".into()),
        ),
        Now::at(T),
        &NoProgress,
    )
    .unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e}");
    assert_eq!(e.kind(), ErrorKind::Failed);
    let mut opts = CreateOptions::new(&data);
    opts.reference = Some(Reference::Id("dead".into()));
    let e = create(&backups, &opts, Now::at(T), &NoProgress).unwrap_err();
    assert!(
        matches!(&e, Error::Reference { source, .. } if matches!(**source, Error::PrefixTooShort(_))),
        "{e}"
    );

    // A prune running on another host (its lease not expired) is a refusal for a second prune.
    fs::create_dir_all(backups.join("locks")).unwrap();
    fs::write(
        backups.join("locks/prune.json"),
        br#"{"kind":"prune","host":"another-host","pid":1,"expires":18446744073709551615}"#,
    )
    .unwrap();
    let e = prune(
        &backups,
        &PruneOptions::new(RetentionPolicy::default()),
        Now::at(T),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Locked(_)), "{e}");
    assert_eq!(e.kind(), ErrorKind::Refused);
    fs::remove_file(backups.join("locks/prune.json")).unwrap();

    // A damaged chunk is integrity: verify reports it, restore refuses before writing.
    let chunk = walk(&backups.join("chains"))
        .into_iter()
        .find(|p| p.to_string_lossy().contains("/chunks/"))
        .unwrap();
    let mut bytes = fs::read(&chunk).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&chunk, bytes).unwrap();
    let v = verify(&backups, &VerifyOptions::all(), &NoProgress).unwrap();
    assert!(!v.ok);
    let target = tmp.path().join("restored");
    let e = restore(&backups, &by_id(&target), Now::at(T), &NoProgress).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert!(!target.exists(), "a refused restore wrote nothing");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out.sort();
    out
}

#[test]
fn one_catalog_finds_both_kinds_of_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backups");
    copy_dir(&fixtures().join("kyrodb-builtin-backups/backups"), &dir);
    let data = tmp.path().join("data");
    copy_dir(&fixtures().join("kyrodb/v4-basic/data"), &data);
    let ours = create(&dir, &CreateOptions::new(&data), Now::at(T), &NoProgress).unwrap();
    let listed = list(&dir).unwrap();
    let builtin: Vec<_> = listed
        .backups
        .iter()
        .filter(|b| b.format == Some("builtin"))
        .collect();
    assert_eq!(builtin.len(), 2);
    assert_eq!(listed.backups.len(), 3);
    assert_eq!(listed.backups[0].id, ours.backup.id, "newest first");
    for b in &listed.backups {
        match show(&dir, &b.id[..8]).unwrap() {
            Shown::Builtin(s) => assert_eq!(
                (s.backup.id.as_str(), b.format),
                (b.id.as_str(), Some("builtin"))
            ),
            Shown::Repository(s) => assert_eq!(s.backup.id, ours.backup.id),
            Shown::Timeline(t) => panic!("a backup id showed timeline {}", t.timeline),
        }
    }
    let v = verify(&dir, &VerifyOptions::all(), &NoProgress).unwrap();
    assert!(v.ok);
    assert_eq!((v.backups.len(), v.builtin.len()), (1, 2));
}

/// A clock that stays where the test puts it.
struct Pinned(std::sync::atomic::AtomicU64);

impl kyrodb_backup_ops::Clock for Pinned {
    fn now(&self) -> Now {
        Now::at(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }
}

#[test]
fn archive_and_check_max_lag_at_pinned_seconds() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_dir(&fixtures().join("kyrodb/v4-rotated/data"), &data);
    let backups = tmp.path().join("backups");
    let clock = Pinned(AtomicU64::new(T));
    let stop = AtomicBool::new(false);
    let mut opts = kyrodb_backup_ops::ArchiveOptions::new(&data);
    opts.interval = std::time::Duration::from_millis(50);
    opts.heartbeat = std::time::Duration::from_millis(100);
    let events = std::sync::Mutex::new(Vec::new());
    let report = std::thread::scope(|s| {
        let run = s.spawn(|| {
            kyrodb_backup_ops::archive(&backups, &opts, &clock, &stop, &mut |e| {
                events.lock().unwrap().push(e.clone());
            })
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, kyrodb_backup_ops::ArchiveEvent::Base { .. }))
        {
            assert!(std::time::Instant::now() < deadline, "no base stored");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        run.join().unwrap().unwrap()
    });
    // The timeline is named by the pinned second it started at.
    assert_eq!(report.timelines.len(), 1);
    assert!(report.timelines[0].starts_with(&T.to_string()));
    assert!(report.status.frames > 0);
    // The heartbeat was written at T: within 30 s until T + 30, not after.
    let lag = CheckOptions::max_lag(30);
    let r = check(&backups, &lag, Now::at(T + 30)).unwrap();
    assert!(r.ok, "{r:?}");
    let r = check(&backups, &lag, Now::at(T + 31)).unwrap();
    assert!(!r.ok);
    let a = r.archive.unwrap();
    assert_eq!(a.heartbeat_age_seconds, Some(31));
    assert!(a
        .problem
        .unwrap()
        .contains("no archiver has reported for 31s"));
    // With the data dir: every frame of it is archived, so nothing waits.
    let mut with_dir = CheckOptions::max_lag(30);
    with_dir.data_dir = Some(data.clone());
    let r = check(&backups, &with_dir, Now::at(T + 5)).unwrap();
    assert_eq!(r.archive.unwrap().lag_seconds, Some(0));
    // Without --max-lag the archive is not looked at.
    let r = check(&backups, &CheckOptions::max_age(10), Now::at(T + 5)).unwrap();
    assert!(r.archive.is_none());
}
