//! Encrypted repositories through the library, with the clock pinned: made with `init`, backed
//! up into and restored from, their key slots added, changed and removed, refused without
//! their passphrase, and copied to and from plain repositories.

use std::fs;
use std::path::{Path, PathBuf};

use kyrodb_backup_ops::{
    copy, create, init, key_add, key_list, key_passwd, key_remove, list, restore, CopyOptions,
    CreateOptions, Error, InitOptions, KdfParams, NoProgress, Now, RepoRef, RestoreOptions,
    RestoreSource,
};

mod common;

use common::{copy_dir, fixtures};

const T: u64 = 1_800_000_000;

/// Argon2id as cheap as it goes: these tests are about what the keys open, not their cost.
const KDF: KdfParams = KdfParams {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

fn encrypted() -> InitOptions {
    let mut opts = InitOptions::encrypted();
    opts.kdf = KDF;
    opts
}

fn with(path: &Path, passphrase: &str) -> RepoRef {
    RepoRef::from(path).with_passphrase(passphrase)
}

/// A data dir (the rotated v4 fixture) at `tmp/data`.
fn data_dir(tmp: &Path) -> PathBuf {
    let data = tmp.join("data");
    copy_dir(&fixtures().join("kyrodb/v4-rotated/data"), &data);
    data
}

/// The encrypted repository at `tmp/vault` (passphrase `pass`), made at `T`.
fn vault(tmp: &Path) -> PathBuf {
    let dir = tmp.join("vault");
    let made = init(with(&dir, "pass"), &encrypted(), Now::at(T)).unwrap();
    assert!(made.encrypted);
    assert!(made.key_slot.is_some());
    dir
}

/// Every file under `dir` (relative path, bytes), sorted.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// Restores backup `id` of `repo` into `target` and returns what was restored.
fn restored(repo: RepoRef, id: &str, target: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let r = restore(
        repo,
        &RestoreOptions::new(target, RestoreSource::Backup(id.into())),
        Now::at(T + 600),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(r.backup_id, id);
    files(target)
}

/// Checks that every restored file is the data dir's file of that name, byte for byte, and
/// that the state's MANIFEST is among them.
fn assert_from(restored: &[(PathBuf, Vec<u8>)], data: &Path) {
    assert!(restored.iter().any(|(p, _)| p == Path::new("MANIFEST")));
    // The state's MANIFEST, its snapshot and the WAL segments after it.
    let has = |ext: &str| {
        restored
            .iter()
            .any(|(p, _)| p.extension().is_some_and(|e| e == ext))
    };
    assert!(has("snap") && has("wal"), "only {} files", restored.len());
    for (name, bytes) in restored {
        assert_eq!(
            &fs::read(data.join(name)).unwrap(),
            bytes,
            "{} differs from the data dir's",
            name.display()
        );
    }
}

#[test]
fn a_backup_round_trips_through_an_encrypted_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let dir = vault(tmp.path());
    let taken = create(
        with(&dir, "pass"),
        &CreateOptions::new(&data),
        Now::at(T),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(taken.backup.timestamp, T);

    let listed = list(with(&dir, "pass")).unwrap();
    assert_eq!(listed.backups.len(), 1);
    assert_eq!(listed.backups[0].id, taken.backup.id);
    assert_eq!(listed.backups[0].vector_count, taken.backup.vector_count);
    assert!(listed.warnings.is_empty(), "{:?}", listed.warnings);

    let back = restored(
        with(&dir, "pass"),
        &taken.backup.id,
        &tmp.path().join("restored"),
    );
    assert_from(&back, &data);

    // Nothing of it is readable without the key: every object but the marker and the key
    // slot is sealed.
    let stored = files(&dir);
    assert!(stored.len() > 2);
    for (name, bytes) in &stored {
        let plain = name == Path::new("kyrodb-backup.json") || name.starts_with("keys");
        assert_eq!(!bytes.starts_with(b"KYROSEAL"), plain, "{}", name.display());
    }
    let marker = fs::read_to_string(dir.join("kyrodb-backup.json")).unwrap();
    assert!(marker.contains("encryption"), "{marker}");
}

#[test]
fn an_encrypted_repository_needs_its_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let dir = vault(tmp.path());
    create(
        with(&dir, "pass"),
        &CreateOptions::new(&data),
        Now::at(T),
        &NoProgress,
    )
    .unwrap();
    let before = files(&dir);

    let e = list(&dir).unwrap_err();
    assert!(matches!(e, Error::KeyRequired { .. }), "{e}");
    let e = create(
        &dir,
        &CreateOptions::new(&data),
        Now::at(T + 1),
        &NoProgress,
    )
    .unwrap_err();
    assert!(matches!(e, Error::KeyRequired { .. }), "{e}");
    let e = list(with(&dir, "wrong")).unwrap_err();
    assert!(matches!(e, Error::WrongPassphrase { slots: 1, .. }), "{e}");
    let e = key_list(&dir).unwrap_err();
    assert!(matches!(e, Error::KeyRequired { .. }), "{e}");
    // An encrypted init without a passphrase, and a second init, are refused.
    let e = init(tmp.path().join("other"), &encrypted(), Now::at(T)).unwrap_err();
    assert!(matches!(e, Error::KeyRequired { .. }), "{e}");
    assert!(!tmp.path().join("other").join("kyrodb-backup.json").exists());
    let e = init(with(&dir, "pass"), &encrypted(), Now::at(T)).unwrap_err();
    assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
    let e = init(&dir, &InitOptions::plain(), Now::at(T)).unwrap_err();
    assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
    assert_eq!(
        files(&dir),
        before,
        "a refused command changed the repository"
    );
}

#[test]
fn keys_are_added_changed_and_never_all_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = vault(tmp.path());
    let first = key_list(with(&dir, "pass")).unwrap();
    assert_eq!(first.slots.len(), 1);
    assert!(first.slots[0].current);
    assert_eq!(first.slots[0].created, T);
    assert_eq!(first.slots[0].kdf, KDF);
    let first = first.slots[0].id.clone();

    let now = Now::at(T + 100);
    let added = key_add(with(&dir, "pass"), b"second", KDF, now).unwrap();
    let second = added.added.unwrap();
    assert_eq!(added.removed, None);
    let slots = key_list(with(&dir, "second")).unwrap().slots;
    assert_eq!(slots.len(), 2);
    let new = slots.iter().find(|s| s.id == second).unwrap();
    assert_eq!(
        (new.created, new.current, &new.problem),
        (now.secs, true, &None)
    );
    let old = slots.iter().find(|s| s.id == first).unwrap();
    assert_eq!((old.created, old.current), (T, false));
    list(with(&dir, "pass")).unwrap();
    list(with(&dir, "second")).unwrap();

    // A new passphrase for the second slot: the old one opens no slot, the new one does.
    let changed = key_passwd(with(&dir, "second"), b"third", KDF, Now::at(T + 200)).unwrap();
    assert_eq!(changed.removed.as_deref(), Some(second.as_str()));
    let third = changed.added.unwrap();
    let e = list(with(&dir, "second")).unwrap_err();
    assert!(matches!(e, Error::WrongPassphrase { slots: 2, .. }), "{e}");
    let slots = key_list(with(&dir, "third")).unwrap().slots;
    let mut ids: Vec<&str> = slots.iter().map(|s| s.id.as_str()).collect();
    ids.sort_unstable();
    let mut want = vec![first.as_str(), third.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);
    assert_eq!(
        slots.iter().find(|s| s.current).map(|s| s.created),
        Some(T + 200)
    );

    // The first slot goes; the last one stays, and still opens.
    let removed = key_remove(with(&dir, "third"), &first).unwrap();
    assert_eq!(removed.removed.as_deref(), Some(first.as_str()));
    let e = list(with(&dir, "pass")).unwrap_err();
    assert!(matches!(e, Error::WrongPassphrase { slots: 1, .. }), "{e}");
    let e = key_remove(with(&dir, "third"), &third).unwrap_err();
    assert!(matches!(e, Error::KeyRefused(_)), "{e}");
    let e = key_passwd(with(&dir, "pass"), b"fourth", KDF, Now::at(T + 300)).unwrap_err();
    assert!(matches!(e, Error::WrongPassphrase { slots: 1, .. }), "{e}");
    let slots = key_list(with(&dir, "third")).unwrap().slots;
    assert_eq!(slots.len(), 1);
    assert_eq!(slots[0].id, third);

    // A plain repository has no keys.
    let plain = tmp.path().join("plain");
    init(&plain, &InitOptions::plain(), Now::at(T)).unwrap();
    for e in [
        key_list(with(&plain, "pass")).unwrap_err(),
        key_add(with(&plain, "pass"), b"x", KDF, now).unwrap_err(),
        key_remove(with(&plain, "pass"), "abcd").unwrap_err(),
    ] {
        assert!(matches!(e, Error::KeyRefused(_)), "{e}");
    }
}

#[test]
fn a_passphrase_given_never_makes_a_plain_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let missing = tmp.path().join("missing");
    let meant = RepoRef::from(missing.as_path())
        .with_passphrase("pass")
        .never_made_plain();
    let e = create(&meant, &CreateOptions::new(&data), Now::at(T), &NoProgress).unwrap_err();
    assert!(matches!(e, Error::KeyRefused(_)), "{e}");
    assert!(
        !missing.exists(),
        "a refused create made {}",
        missing.display()
    );

    // Nor does a copy into it.
    let plain = tmp.path().join("plain");
    create(&plain, &CreateOptions::new(&data), Now::at(T), &NoProgress).unwrap();
    let e = copy(&plain, &meant, &CopyOptions::all(), Now::at(T)).unwrap_err();
    assert!(matches!(e, Error::KeyRefused(_)), "{e}");
    assert!(
        !missing.exists(),
        "a refused copy made {}",
        missing.display()
    );

    // Once made encrypted, the same reference backs up into it.
    init(&meant, &encrypted(), Now::at(T)).unwrap();
    create(&meant, &CreateOptions::new(&data), Now::at(T), &NoProgress).unwrap();
    assert_eq!(list(&meant).unwrap().backups.len(), 1);
}

#[test]
fn a_copy_from_plain_to_encrypted_and_back_keeps_the_state() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let plain = tmp.path().join("plain");
    let taken = create(&plain, &CreateOptions::new(&data), Now::at(T), &NoProgress).unwrap();
    let id = taken.backup.id.clone();
    let dir = vault(tmp.path());

    let there = copy(
        &plain,
        with(&dir, "pass"),
        &CopyOptions::all(),
        Now::at(T + 10),
    )
    .unwrap();
    assert_eq!(there.backups.len(), 1);
    assert_eq!(
        (
            there.backups[0].id.as_str(),
            there.backups[0].status.as_str()
        ),
        (id.as_str(), "copied")
    );
    // Again: it is there already.
    let again = copy(
        &plain,
        with(&dir, "pass"),
        &CopyOptions::all(),
        Now::at(T + 20),
    )
    .unwrap();
    assert_eq!(again.backups[0].status, "present");
    // Without the key, the encrypted repository is neither a source nor a target.
    let e = copy(
        &dir,
        tmp.path().join("nowhere"),
        &CopyOptions::all(),
        Now::at(T),
    )
    .unwrap_err();
    assert!(matches!(e, Error::KeyRequired { .. }), "{e}");
    assert!(!tmp.path().join("nowhere").exists());
    let e = copy(&plain, &dir, &CopyOptions::all(), Now::at(T)).unwrap_err();
    assert!(matches!(e, Error::KeyRequired { .. }), "{e}");

    let back = tmp.path().join("back");
    let home = copy(
        with(&dir, "pass"),
        &back,
        &CopyOptions::all(),
        Now::at(T + 30),
    )
    .unwrap();
    assert_eq!(home.backups.len(), 1);
    assert_eq!(home.backups[0].id, id);
    let listed = list(&back).unwrap();
    assert_eq!(listed.backups.len(), 1);
    assert_eq!(listed.backups[0].vector_count, taken.backup.vector_count);
    assert_eq!(listed.backups[0].timestamp, T);
    // Chunks are named the same way in both plain repositories again: the manifest is the
    // same backup, checksum and all.
    assert_eq!(listed.backups[0].checksum, taken.backup.checksum);

    let original = restored(RepoRef::from(plain.as_path()), &id, &tmp.path().join("r1"));
    let via_vault = restored(with(&dir, "pass"), &id, &tmp.path().join("r2"));
    let round_trip = restored(RepoRef::from(back.as_path()), &id, &tmp.path().join("r3"));
    assert_from(&original, &data);
    assert_eq!(via_vault, original);
    assert_eq!(round_trip, original);
}
