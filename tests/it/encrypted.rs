//! Encrypted repositories end to end, through the binary: no stored byte gives the data away
//! (proven against a plain repository of the same backups), restores are exact, passphrases
//! and key slots behave, a killed key operation never locks the repository, `copy` re-chunks
//! between plain and encrypted repositories both ways, and a bucket works the same.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Instant;

use assert_cmd::Command;

use crate::support::engine::Engine;
use crate::support::s3::S3Server;
use crate::support::*;

/// The magic every sealed object starts with.
const SEALED_MAGIC: &[u8] = b"KYROSEAL";

/// The binary with `passphrase` in `KYRODB_BACKUP_PASSWORD`.
fn kb_pass(passphrase: &str) -> Command {
    let mut c = kb();
    c.env("KYRODB_BACKUP_PASSWORD", passphrase);
    c
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The JSON a successful run printed.
fn ok_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed ({:?}): {}",
        out.status.code(),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

/// `create --format json` with `cmd` (which carries the passphrase, if any).
fn create_with(mut cmd: Command, data: &Path, repo: &Path, extra: &[&str]) -> serde_json::Value {
    ok_json(
        &cmd.data_dir(data)
            .backup_dir(repo)
            .args(["create", "--format", "json"])
            .args(extra)
            .output()
            .unwrap(),
    )
}

/// `restore --backup-id ID` of `repo` into `target` with `cmd`; must succeed.
fn restore_with(mut cmd: Command, repo: impl AsRef<Path>, target: &Path, id: &str) {
    let out = cmd
        .backup_dir(repo)
        .data_dir(target)
        .args(["restore", "--backup-id", id])
        .output()
        .unwrap();
    assert!(out.status.success(), "restore {id}: {}", text(&out.stderr));
}

/// A passphrase file holding `content`.
fn pass_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, content).unwrap();
    p
}

/// Every file of a repository but its key slots, with its bytes.
fn tree_without_keys(repo: &Path) -> BTreeMap<String, Vec<u8>> {
    tree(repo)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("keys/"))
        .collect()
}

/// The names of the files under `keys/`.
fn slot_files(repo: &Path) -> BTreeSet<String> {
    walk(&repo.join("keys"))
        .into_iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// `key list --format json` with `passphrase`: `Some(report)` when it opens the repository,
/// `None` when it is refused as a wrong passphrase (exit 1); anything else fails the test.
fn key_list(repo: &Path, passphrase: &str) -> Option<serde_json::Value> {
    let out = kb_pass(passphrase)
        .backup_dir(repo)
        .args(["key", "list", "--format", "json"])
        .output()
        .unwrap();
    match out.status.code() {
        Some(0) => Some(serde_json::from_slice(&out.stdout).unwrap()),
        Some(1) => {
            let err = text(&out.stderr);
            assert!(err.contains("the passphrase opens none of the"), "{err}");
            None
        }
        other => panic!("key list: exit {other:?}: {}", text(&out.stderr)),
    }
}

/// The ids of the slots a `key list` report shows, and the one marked current.
fn slots_of(report: &serde_json::Value) -> (BTreeSet<String>, Vec<String>) {
    let slots = report["slots"].as_array().unwrap();
    let ids = slots
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let current = slots
        .iter()
        .filter(|s| s["current"] == true)
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    (ids, current)
}

/// Flips the bits of `mask` in the byte at `offset` of a file.
fn flip(path: &Path, offset: usize, mask: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset] ^= mask;
    fs::write(path, bytes).unwrap();
}

/// The encrypted repository's marker: plain JSON, version 2, naming its key; returns the id.
fn check_marker(repo: &Path) -> String {
    let marker: serde_json::Value =
        serde_json::from_slice(&fs::read(repo.join("kyrodb-backup.json")).unwrap())
            .expect("the marker is plain JSON");
    assert_eq!(marker["version"], 2, "{marker}");
    let key_id = marker["encryption"]["key_id"].as_str().unwrap().to_string();
    assert_eq!(key_id.len(), 32, "{marker}");
    assert!(key_id.bytes().all(|b| b.is_ascii_hexdigit()), "{marker}");
    key_id
}

/// Every object of an encrypted repository is sealed but the marker and the key slots, which
/// are plain JSON (a slot named by its own id).
fn check_all_sealed(repo: &Path) {
    check_marker(repo);
    let files = tree(repo);
    assert!(files.len() > 2, "{:?}", files.keys());
    for (name, bytes) in &files {
        if name == "kyrodb-backup.json" {
            continue;
        }
        if let Some(id) = name.strip_prefix("keys/") {
            let slot: serde_json::Value = serde_json::from_slice(bytes)
                .unwrap_or_else(|e| panic!("{name} is not plain JSON: {e}"));
            assert_eq!(slot["id"], id, "{name}");
            continue;
        }
        assert!(
            bytes.starts_with(SEALED_MAGIC),
            "{name} is not sealed: {:?}",
            &bytes[..bytes.len().min(16)]
        );
    }
}

// ------------------------------------------------------------------------------------------
// 1. No plaintext in any object.
// ------------------------------------------------------------------------------------------

/// What a repository must not hold, of one kind.
#[derive(Debug)]
struct Needle {
    kind: &'static str,
    what: String,
    bytes: Vec<u8>,
}

/// Everything a plaintext repository would give away, to look for byte for byte.
#[derive(Default)]
struct Needles(Vec<Needle>);

impl Needles {
    fn add(&mut self, kind: &'static str, what: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        let bytes = bytes.into();
        let what = what.into();
        // Shorter strings could turn up by chance in random bytes.
        assert!(bytes.len() >= 8, "needle {kind} {what:?} is too short");
        if !self.0.iter().any(|n| n.kind == kind && n.bytes == bytes) {
            self.0.push(Needle { kind, what, bytes });
        }
    }

    fn kinds(&self) -> BTreeSet<&'static str> {
        self.0.iter().map(|n| n.kind).collect()
    }

    /// Every (file, needle) where the needle occurs in the file's bytes or in its name (the
    /// name relative to `repo`).
    fn found_in(&self, repo: &Path) -> Vec<(String, &Needle)> {
        let mut by_head: HashMap<&[u8], Vec<&Needle>> = HashMap::new();
        for n in &self.0 {
            by_head.entry(&n.bytes[..8]).or_default().push(n);
        }
        let mut out = Vec::new();
        for p in walk(repo) {
            let name = p.strip_prefix(repo).unwrap().to_string_lossy().into_owned();
            let mut hay = name.clone().into_bytes();
            hay.push(0);
            hay.extend_from_slice(&fs::read(&p).unwrap());
            let mut seen = BTreeSet::new();
            for i in 0..hay.len().saturating_sub(7) {
                if let Some(cands) = by_head.get(&hay[i..i + 8]) {
                    for n in cands {
                        if hay[i..].starts_with(&n.bytes) && seen.insert((n.kind, &n.bytes)) {
                            out.push((name.clone(), *n));
                        }
                    }
                }
            }
        }
        out
    }
}

/// The document ids of the scenario: far from the small numbers a header holds, and seeds the
/// engine writer can compute embeddings from.
fn doc_id(i: u64) -> u64 {
    3_141_592_653_589_000 + i * 7_919
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v & 0x7f) as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// The start of a snapshot's id list as the backup stores it (see the format crate's
/// `id_list`): the magic, then the zigzag varint of each id's difference to the one before.
fn id_list_head(ids: &[u64]) -> Vec<u8> {
    let mut out = b"KBIDS001".to_vec();
    let mut prev = 0u64;
    for &id in ids {
        let delta = id.wrapping_sub(prev).cast_signed();
        put_varint(&mut out, ((delta << 1) ^ (delta >> 63)).cast_unsigned());
        prev = id;
    }
    out
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario: data, three repositories, the search
fn no_object_of_an_encrypted_repository_holds_plaintext() {
    const DIM: usize = 16;
    const DESCRIPTION: &str = "DESCRIPTION-SECRET-7f3a";
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let enc = tmp.path().join("enc");
    let plain = tmp.path().join("plain");
    let copied = tmp.path().join("copied");
    init_encrypted(&enc);
    init_encrypted(&copied);

    let mut e = Engine::open(&data, DIM);
    for i in 0..200 {
        e.insert(doc_id(i), doc_id(i));
    }
    for i in (0..200).step_by(7) {
        e.update(doc_id(i), &format!("tag-SECRET-ALPHA-{i:04}"));
    }
    e.rotate();
    e.snapshot();
    for i in 200..260 {
        e.insert(doc_id(i), doc_id(i));
    }
    let mut names: BTreeSet<String> = walk(&data)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let full_enc = create_with(kb_enc(), &data, &enc, &["--description", DESCRIPTION]);
    let full_plain = create_with(kb(), &data, &plain, &["--description", DESCRIPTION]);
    assert_eq!(full_enc["backup_type"], "Full");
    for i in (1..260).step_by(11) {
        e.update(doc_id(i), &format!("tag-SECRET-BETA-{i:04}"));
    }
    e.rotate();
    for i in 260..300 {
        e.insert(doc_id(i), doc_id(i));
    }
    names.extend(
        walk(&data)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned()),
    );
    let inc = ["--incremental", "--reference", "latest"];
    let inc_enc = create_with(kb_enc(), &data, &enc, &inc);
    let inc_plain = create_with(kb(), &data, &plain, &inc);
    assert_eq!(inc_enc["parent_id"], full_enc["id"]);
    assert_eq!(inc_plain["parent_id"], full_plain["id"]);
    let copy = ok_json(
        &kb_enc()
            .args(["copy", "--format", "json", "--all", "--from"])
            .arg(&plain)
            .arg("--to")
            .arg(&copied)
            .output()
            .unwrap(),
    );
    assert_eq!(copy["backups"].as_array().unwrap().len(), 2, "{copy}");

    // The needles: what the data dir holds, in every form the backups could store it.
    let mut needles = Needles::default();
    needles.add("description", DESCRIPTION, DESCRIPTION);
    needles.add(
        "source path",
        data.display().to_string(),
        data.display().to_string(),
    );
    for n in &names {
        if n.len() >= 8 {
            needles.add("file name", n.clone(), n.as_bytes());
        }
    }
    let log = e.log.lock().unwrap().clone();
    let mut ids = BTreeSet::new();
    for entry in &log {
        ids.insert(entry.doc_id);
        for (k, v) in &entry.metadata {
            for s in [k, v] {
                if s.len() >= 8 {
                    needles.add("metadata", s.clone(), s.as_bytes());
                }
            }
        }
        if !entry.embedding.is_empty() {
            assert_eq!(entry.embedding.len(), DIM);
            let bytes: Vec<u8> = entry
                .embedding
                .iter()
                .flat_map(|f| f.to_le_bytes())
                .collect();
            needles.add("vector", format!("embedding of {}", entry.doc_id), bytes);
        }
    }
    for &id in &ids {
        needles.add("id as u64 LE", id.to_string(), id.to_le_bytes());
        needles.add("id as decimal", id.to_string(), id.to_string());
    }
    // The snapshot's id list, as the backup records it (ids in snapshot order, ascending).
    let snapshot_ids: Vec<u64> = (0..200).map(doc_id).collect();
    needles.add(
        "snapshot id list",
        "the list's first two ids",
        id_list_head(&snapshot_ids[..2]),
    );
    assert_eq!(
        needles.kinds().len(),
        8,
        "every kind has needles: {:?}",
        needles.kinds()
    );

    // Control: the plain repository of the same backups gives away every kind, so the search
    // finds what is there.
    let hits_in_plain = needles.found_in(&plain);
    let plain_kinds: BTreeSet<&str> = hits_in_plain.iter().map(|(_, n)| n.kind).collect();
    let count = |kind: &str| hits_in_plain.iter().filter(|(_, n)| n.kind == kind).count();
    eprintln!(
        "plain repository: {} needle hits: {:?}",
        hits_in_plain.len(),
        needles
            .kinds()
            .iter()
            .map(|k| (*k, count(k)))
            .collect::<Vec<_>>()
    );
    assert_eq!(plain_kinds, needles.kinds(), "the control finds every kind");

    // The encrypted repositories give away nothing, in any object (marker and key slots too)
    // or object name.
    for repo in [&enc, &copied] {
        check_all_sealed(repo);
        let found = needles.found_in(repo);
        assert!(
            found.is_empty(),
            "{}: plaintext found: {:?}",
            repo.display(),
            found
                .iter()
                .map(|(f, n)| format!("{f}: {} {:?}", n.kind, n.what))
                .collect::<Vec<_>>()
        );
        kb_enc()
            .backup_dir(repo)
            .args(["verify", "--all"])
            .assert()
            .success();
    }
    // And the encrypted backups are those backups: the newest restores to the data dir's state.
    let target = tmp.path().join("restored");
    restore_with(kb_enc(), &enc, &target, inc_enc["id"].as_str().unwrap());
    assert_eq!(tree(&target), consistent_state_files(&data));
}

// ------------------------------------------------------------------------------------------
// 2. Restores are exact.
// ------------------------------------------------------------------------------------------

/// `show`, `check` and `prune` read the sealed manifests as they read plain ones; prune deletes
/// sealed objects and what it keeps still verifies and restores.
#[test]
fn show_check_and_prune_work_on_an_encrypted_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("enc");
    copy_fixture_data("v4-rotated", &data);
    init_encrypted(&repo);
    let ids: Vec<String> = (0..3)
        .map(|_| {
            create_with(kb_enc(), &data, &repo, &[])["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let newest = ids.last().unwrap();

    let shown = ok_json(
        &kb_enc()
            .backup_dir(&repo)
            .args(["show", newest, "--format", "json"])
            .output()
            .unwrap(),
    );
    assert_eq!(shown["id"], newest.as_str(), "{shown}");
    assert!(shown.to_string().contains("snapshot_"), "{shown}");

    let check = ok_json(
        &kb_enc()
            .backup_dir(&repo)
            .args(["check", "--max-age", "1h", "--format", "json"])
            .output()
            .unwrap(),
    );
    assert_eq!(
        (check["ok"].clone(), check["newest_id"].clone()),
        (true.into(), newest.as_str().into())
    );
    // Without the passphrase, check cannot tell: exit 1, never a silent "ok".
    let out = kb()
        .backup_dir(&repo)
        .args(["check", "--max-age", "1h"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));

    let sealed_before = walk(&repo).len();
    let pruned = ok_json(
        &kb_enc()
            .backup_dir(&repo)
            .args(PRUNE_ALL_BUT_NEWEST)
            .args(["--format", "json"])
            .output()
            .unwrap(),
    );
    assert_eq!(pruned["pruned"].as_array().unwrap().len(), 2, "{pruned}");
    assert!(walk(&repo).len() < sealed_before);
    check_all_sealed(&repo);
    let out = kb_enc()
        .backup_dir(&repo)
        .args(["verify", "--all"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let target = tmp.path().join("restored");
    restore_with(kb_enc(), &repo, &target, newest);
    assert_eq!(
        recovered_as_expected_json(&target),
        expected_json("v4-rotated")
    );
}

#[test]
fn the_restore_of_an_encrypted_backup_is_the_data_exactly() {
    let fixture = "v4-rotated";
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("enc");
    copy_fixture_data(fixture, &data);
    init_encrypted(&repo);
    let b = create_with(kb_enc(), &data, &repo, &[]);
    let id = b["id"].as_str().unwrap();
    check_all_sealed(&repo);

    let target = tmp.path().join("restored");
    restore_with(kb_enc(), &repo, &target, id);
    assert_eq!(tree(&target), consistent_state_files(&data));
    assert_eq!(recovered_as_expected_json(&target), expected_json(fixture));

    // Point in time: from the snapshot's second to the fixture's last write.
    let snap = b["snapshot"]["timestamp"].as_u64().unwrap();
    let (_, hi) = ops_time_range(fixture);
    assert!(snap <= hi);
    let seconds: BTreeSet<u64> = [snap, snap + (hi - snap) / 2, hi].into_iter().collect();
    for t in seconds {
        let at = tmp.path().join(format!("at-{t}"));
        let r = ok_json(
            &kb_enc()
                .backup_dir(&repo)
                .data_dir(&at)
                .args(["restore", "--format", "json", "--point-in-time"])
                .arg(t.to_string())
                .output()
                .unwrap(),
        );
        assert_eq!(r["recovered_to"], t, "{r}");
        assert_eq!(
            recovered_as_expected_json(&at),
            ops_state_at(fixture, t),
            "T={t}"
        );
    }
    assert_eq!(ops_state_at(fixture, hi), expected_json(fixture));
}

// ------------------------------------------------------------------------------------------
// 3. Passphrases.
// ------------------------------------------------------------------------------------------

#[test]
#[allow(clippy::too_many_lines)] // every way to get the passphrase wrong, in turn
fn a_missing_wrong_or_damaged_key_is_refused_and_reads_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("enc");
    copy_fixture_data("v4-basic", &data);
    init_encrypted(&repo);
    let b = create_with(kb_enc(), &data, &repo, &[]);
    let id = b["id"].as_str().unwrap().to_string();
    let pristine = tree(&repo);

    // No passphrase: exit 1 with a hint, for every command, and nothing written or restored.
    for args in [
        vec!["list"],
        vec!["verify", "--all"],
        vec!["show", id.as_str()],
        vec!["restore", "--backup-id", id.as_str()],
        vec!["create"],
        vec!["key", "list"],
    ] {
        let target = tmp.path().join("no-pass-target");
        let out = kb()
            .backup_dir(&repo)
            .data_dir(if args[0] == "create" { &data } else { &target })
            .args(&args)
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("is encrypted and no passphrase was given"),
            "{args:?}: {err}"
        );
        assert!(
            err.lines()
                .any(|l| l.starts_with("hint:") && l.contains("--password-file")),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(!target.exists(), "{args:?}");
        assert_eq!(tree(&repo), pristine, "{args:?}");
    }

    // A wrong passphrase: exit 1, and the same nothing.
    for args in [vec!["list"], vec!["restore", "--backup-id", id.as_str()]] {
        let target = tmp.path().join("wrong-target");
        let out = kb_pass("not the passphrase")
            .backup_dir(&repo)
            .data_dir(&target)
            .args(&args)
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("the passphrase opens none of the 1 key slot(s)"),
            "{err}"
        );
        assert!(err.contains("hint:"), "{err}");
        assert!(out.stdout.is_empty());
        assert!(!target.exists());
    }

    // --password-file: its first line (a trailing newline, or CRLF, is no part of it), and it
    // wins over the variable.
    for (name, content) in [
        ("pass-lf", format!("{PASSPHRASE}\n")),
        ("pass-crlf", format!("{PASSPHRASE}\r\nsecond line\n")),
        ("pass-bare", PASSPHRASE.to_string()),
    ] {
        let f = pass_file(tmp.path(), name, &content);
        let out = kb()
            .backup_dir(&repo)
            .arg("--password-file")
            .arg(&f)
            .args(["list", "--format", "json"])
            .output()
            .unwrap();
        let list = ok_json(&out);
        assert_eq!(list[0]["id"], id.as_str(), "{name}");
    }
    let wrong = pass_file(tmp.path(), "wrong", "not the passphrase\n");
    let out = kb_enc()
        .backup_dir(&repo)
        .arg("--password-file")
        .arg(&wrong)
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let right = pass_file(tmp.path(), "right", &format!("{PASSPHRASE}\n"));
    let target = tmp.path().join("by-file");
    let out = kb_pass("not the passphrase")
        .backup_dir(&repo)
        .data_dir(&target)
        .arg("--password-file")
        .arg(&right)
        .args(["restore", "--backup-id", &id])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(tree(&target), consistent_state_files(&data));

    // The sole key slot damaged (a byte flipped anywhere): damage, exit 3, naming the slot.
    let slots = slot_files(&repo);
    assert_eq!(slots.len(), 1);
    let slot_id = slots.into_iter().next().unwrap();
    let slot = repo.join("keys").join(&slot_id);
    let slot_bytes = fs::read(&slot).unwrap();
    for offset in [0, 20, slot_bytes.len() / 2, slot_bytes.len() - 10] {
        flip(&slot, offset, 0x01);
        let target = tmp.path().join("damaged-slot-target");
        for args in [vec!["list"], vec!["restore", "--backup-id", id.as_str()]] {
            let out = kb_enc()
                .backup_dir(&repo)
                .data_dir(&target)
                .args(&args)
                .output()
                .unwrap();
            let err = text(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(3),
                "offset {offset} {args:?}: {err}"
            );
            assert!(err.contains(&format!("keys/{slot_id}")), "{err}");
            assert!(out.stdout.is_empty());
            assert!(!target.exists());
        }
        fs::write(&slot, &slot_bytes).unwrap();
    }

    // No keys/ at all: damage.
    fs::rename(repo.join("keys"), tmp.path().join("keys-aside")).unwrap();
    let out = kb_enc().backup_dir(&repo).arg("list").output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("keys/"), "{err}");
    assert!(out.stdout.is_empty());
    fs::rename(tmp.path().join("keys-aside"), repo.join("keys")).unwrap();
    assert_eq!(tree(&repo), pristine);

    // The marker's key id changed by one hex digit (still valid hex): the only slot names
    // another key than the marker, so it is not the repository's way in; nothing is trusted
    // and no backup is read.
    let marker_path = repo.join("kyrodb-backup.json");
    let marker = fs::read_to_string(&marker_path).unwrap();
    let key_id = check_marker(&repo);
    let digit = key_id.as_bytes()[7];
    let other = if digit == b'0' { '1' } else { '0' };
    let changed_id = format!("{}{other}{}", &key_id[..7], &key_id[8..]);
    fs::write(&marker_path, marker.replace(&key_id, &changed_id)).unwrap();
    let target = tmp.path().join("marker-target");
    for args in [
        vec!["list"],
        vec!["verify", "--all"],
        vec!["show", id.as_str()],
        vec!["restore", "--backup-id", id.as_str()],
    ] {
        let out = kb_enc()
            .backup_dir(&repo)
            .data_dir(&target)
            .args(&args)
            .output()
            .unwrap();
        let err = text(&out.stderr);
        eprintln!("changed key id, {args:?}: exit {:?}", out.status.code());
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(err.contains(&format!("keys/{slot_id}")), "{err}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
        assert!(!err.contains(&id), "{args:?} read a backup: {err}");
        assert!(!target.exists());
    }
    fs::write(&marker_path, marker).unwrap();
    assert_eq!(tree(&repo), pristine);
    kb_enc()
        .backup_dir(&repo)
        .args(["verify", "--all"])
        .assert()
        .success();
}

#[test]
fn init_makes_a_repository_only_where_there_is_none() {
    let tmp = tempfile::tempdir().unwrap();
    let enc = tmp.path().join("enc");
    let plain = tmp.path().join("plain");

    // Without a passphrase, --encrypt makes nothing.
    let out = kb()
        .backup_dir(&enc)
        .args(["init", "--encrypt"])
        .args(CHEAP_KDF)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(walk(&enc).is_empty(), "{:?}", walk(&enc));

    let made = ok_json(
        &kb_enc()
            .backup_dir(&enc)
            .args(["init", "--encrypt", "--format", "json"])
            .args(CHEAP_KDF)
            .output()
            .unwrap(),
    );
    assert_eq!(made["encrypted"], true, "{made}");
    let slot = made["key_slot"].as_str().unwrap();
    assert_eq!(slot_files(&enc), BTreeSet::from([slot.to_string()]));
    check_marker(&enc);
    let list = key_list(&enc, PASSPHRASE).unwrap();
    assert_eq!(list["slots"][0]["kdf"]["memory_kib"], 64, "{list}");

    kb().backup_dir(&plain).arg("init").assert().success();
    let marker: serde_json::Value =
        serde_json::from_slice(&fs::read(plain.join("kyrodb-backup.json")).unwrap()).unwrap();
    assert_eq!(marker["version"], 1, "{marker}");
    assert!(marker.get("encryption").is_none(), "{marker}");
    assert!(!plain.join("keys").exists());

    // A second init, of either kind, on either: exit 1, nothing changed.
    for repo in [&enc, &plain] {
        let before = tree(repo);
        for encrypt in [true, false] {
            let mut c = kb_enc();
            c.backup_dir(repo).arg("init");
            if encrypt {
                c.arg("--encrypt").args(CHEAP_KDF);
            }
            let out = c.output().unwrap();
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(err.contains("already holds a repository"), "{err}");
            assert_eq!(tree(repo), before);
        }
    }
    // Key commands on a plain repository are refused.
    let out = kb_enc()
        .backup_dir(&plain)
        .args(["key", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not encrypted"));
}

// ------------------------------------------------------------------------------------------
// 4. Key slots.
// ------------------------------------------------------------------------------------------

/// The passphrases the key slot tests add.
const SECOND: &str = "second passphrase, for the on-call";
const THIRD: &str = "the new passphrase after the rotation";
const FOURTH: &str = "a fourth passphrase, from the variable";
/// The passphrase of the copy test's second encrypted repository.
const OTHER: &str = "the other site's passphrase";

/// `key add|passwd` with the current passphrase `current` and the new one from `new_file`.
fn key_change(repo: &Path, current: &str, action: &str, new_file: &Path) -> serde_json::Value {
    ok_json(
        &kb_pass(current)
            .backup_dir(repo)
            .args(["key", action, "--format", "json", "--new-password-file"])
            .arg(new_file)
            .args(CHEAP_KDF)
            .output()
            .unwrap(),
    )
}

/// `key remove ID` with `passphrase`.
fn key_remove(repo: &Path, passphrase: &str, id: &str) -> Output {
    kb_pass(passphrase)
        .backup_dir(repo)
        .args(["key", "remove", "--format", "json", id])
        .output()
        .unwrap()
}

/// Whether `passphrase` lists the repository's backups (exit 0), or is refused as wrong.
fn opens(repo: &Path, passphrase: &str) -> bool {
    let out = kb_pass(passphrase)
        .backup_dir(repo)
        .args(["list", "--format", "json"])
        .output()
        .unwrap();
    match out.status.code() {
        Some(0) => {
            let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
            true
        }
        Some(1) => {
            let err = text(&out.stderr);
            assert!(err.contains("the passphrase opens none of the"), "{err}");
            false
        }
        other => panic!("list: exit {other:?}: {}", text(&out.stderr)),
    }
}

#[test]
#[allow(clippy::too_many_lines)] // add, list, remove, refuse, passwd, prefix, in turn
fn key_slots_are_added_listed_removed_and_changed_without_touching_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("enc");
    copy_fixture_data("v4-basic", &data);
    init_encrypted(&repo);
    create_with(kb_enc(), &data, &repo, &[]);
    let data_objects = tree_without_keys(&repo);
    let first = slot_files(&repo).into_iter().next().unwrap();

    // Add a second passphrase.
    let second_file = pass_file(tmp.path(), "second", &format!("{SECOND}\n"));
    let added = key_change(&repo, PASSPHRASE, "add", &second_file);
    assert_eq!(added["removed"], serde_json::Value::Null, "{added}");
    assert_eq!(added["location"], repo.display().to_string(), "{added}");
    let second = added["added"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    assert_eq!(
        slot_files(&repo),
        BTreeSet::from([first.clone(), second.clone()])
    );
    assert!(opens(&repo, SECOND));
    assert!(opens(&repo, PASSPHRASE));
    for (passphrase, current) in [(PASSPHRASE, &first), (SECOND, &second)] {
        let list = key_list(&repo, passphrase).unwrap();
        let (ids, cur) = slots_of(&list);
        assert_eq!(ids, BTreeSet::from([first.clone(), second.clone()]));
        assert_eq!(cur, vec![current.clone()], "{list}");
        for s in list["slots"].as_array().unwrap() {
            assert_eq!(s["problem"], serde_json::Value::Null, "{list}");
            assert_eq!(s["kdf"]["memory_kib"], 64, "{list}");
            assert_eq!(s["kdf"]["iterations"], 1, "{list}");
            assert_eq!(s["kdf"]["parallelism"], 1, "{list}");
        }
        // The text form marks the same slot.
        let out = kb_pass(passphrase)
            .backup_dir(&repo)
            .args(["key", "list"])
            .output()
            .unwrap();
        let listing = text(&out.stdout);
        let marked: Vec<&str> = listing.lines().filter(|l| l.starts_with('*')).collect();
        assert_eq!(marked.len(), 1, "{listing}");
        assert!(marked[0].contains(current.as_str()), "{listing}");
        assert!(listing.contains("2 key slot(s)"), "{listing}");
    }
    // A wrong passphrase tries both slots.
    let out = kb_pass("neither")
        .backup_dir(&repo)
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("the passphrase opens none of the 2 key slot(s)"));

    // Remove the second (with the first passphrase): it no longer opens.
    let r = ok_json(&key_remove(&repo, PASSPHRASE, &second));
    assert_eq!(r["removed"], second.as_str(), "{r}");
    assert_eq!(r["added"], serde_json::Value::Null, "{r}");
    assert_eq!(slot_files(&repo), BTreeSet::from([first.clone()]));
    assert!(!opens(&repo, SECOND));
    assert!(opens(&repo, PASSPHRASE));

    // The last slot is never removed, even by the passphrase that opens it.
    let out = key_remove(&repo, PASSPHRASE, &first);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("last intact key slot"), "{err}");
    assert!(err.contains("hint:"), "{err}");
    assert_eq!(slot_files(&repo), BTreeSet::from([first.clone()]));
    assert!(opens(&repo, PASSPHRASE));

    // passwd: a slot for the new passphrase, the old one's removed.
    let third_file = pass_file(tmp.path(), "third", THIRD);
    let changed = key_change(&repo, PASSPHRASE, "passwd", &third_file);
    assert_eq!(changed["removed"], first.as_str(), "{changed}");
    let third = changed["added"].as_str().unwrap().to_string();
    assert_eq!(slot_files(&repo), BTreeSet::from([third.clone()]));
    assert!(!opens(&repo, PASSPHRASE));
    assert!(opens(&repo, THIRD));
    let (ids, cur) = slots_of(&key_list(&repo, THIRD).unwrap());
    assert_eq!(
        (ids, cur),
        (BTreeSet::from([third.clone()]), vec![third.clone()])
    );

    // Removal by prefix: too short is refused, a 4+ character unique prefix removes.
    let out = kb_pass(THIRD)
        .env("KYRODB_BACKUP_NEW_PASSWORD", FOURTH)
        .backup_dir(&repo)
        .args(["key", "add", "--format", "json"])
        .args(CHEAP_KDF)
        .output()
        .unwrap();
    let fourth = ok_json(&out)["added"].as_str().unwrap().to_string();
    assert!(opens(&repo, FOURTH));
    let short = key_remove(&repo, THIRD, &fourth[..3]);
    assert_eq!(short.status.code(), Some(1), "{}", text(&short.stderr));
    assert_eq!(slot_files(&repo).len(), 2);
    let len = (4..fourth.len())
        .find(|&n| !third.starts_with(&fourth[..n]))
        .unwrap();
    let r = ok_json(&key_remove(&repo, THIRD, &fourth[..len]));
    assert_eq!(r["removed"], fourth.as_str(), "{r}");
    assert_eq!(slot_files(&repo), BTreeSet::from([third.clone()]));
    assert!(!opens(&repo, FOURTH));
    // A prefix that matches nothing is refused.
    let out = key_remove(&repo, THIRD, "zzzz");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));

    // Not one data object changed (nothing was re-encrypted), and the data is still there.
    assert_eq!(tree_without_keys(&repo), data_objects);
    kb_pass(THIRD)
        .backup_dir(&repo)
        .args(["verify", "--all"])
        .assert()
        .success();
}

// ------------------------------------------------------------------------------------------
// 5. Killed key operations.
// ------------------------------------------------------------------------------------------

/// The passphrase a killed `key add` or `key passwd` was adding.
const NEW_PASSPHRASE: &str = "the passphrase being added when the kill came";

/// `key add` or `key passwd` of `repo` at the default Argon2id cost, as a process.
fn key_op_process(repo: &Path, op: &str) -> std::process::Command {
    let mut c = kb_process();
    c.backup_dir(repo)
        .args(["key", op])
        .env("KYRODB_BACKUP_PASSWORD", PASSPHRASE)
        .env("KYRODB_BACKUP_NEW_PASSWORD", NEW_PASSPHRASE)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// What a repository looked like after a `key add` or `key passwd` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct AfterKeyOp {
    /// The old passphrase opens it.
    old: bool,
    /// The new passphrase opens it.
    new: bool,
    /// Its key slots.
    slots: usize,
    /// Files under `keys/` that are no slot (what a killed write may leave).
    strays: usize,
}

/// After a `key add` or `key passwd` ended (killed or not): the old passphrase opens the
/// repository, or the new one does (a key add never takes the old one away); `key list` shows
/// no damaged slot and marks one current; `verify --all` passes.
fn check_after_key_op(repo: &Path, op: &str, what: &str) -> AfterKeyOp {
    let old = key_list(repo, PASSPHRASE);
    let slots_listed = |r: &serde_json::Value| slots_of(r).0;
    let new = match &old {
        Some(r) if slots_listed(r).len() == 1 => None,
        _ => key_list(repo, NEW_PASSPHRASE),
    };
    assert!(
        old.is_some() || new.is_some(),
        "{what}: neither the old nor the new passphrase opens the repository"
    );
    if op == "add" {
        assert!(
            old.is_some(),
            "{what}: a key add took the old passphrase away"
        );
    }
    let mut listed = BTreeSet::new();
    for report in old.iter().chain(new.iter()) {
        let slots = report["slots"].as_array().unwrap();
        assert!((1..=2).contains(&slots.len()), "{what}: {report}");
        for s in slots {
            assert_eq!(s["problem"], serde_json::Value::Null, "{what}: {report}");
        }
        assert_eq!(slots_of(report).1.len(), 1, "{what}: {report}");
        if !listed.is_empty() {
            assert_eq!(listed, slots_listed(report), "{what}");
        }
        listed = slots_listed(report);
    }
    if listed.len() == 2 {
        // Both slots are there: both passphrases open the repository.
        assert!(old.is_some() && new.is_some(), "{what}: {listed:?}");
    }
    let passphrase = if old.is_some() {
        PASSPHRASE
    } else {
        NEW_PASSPHRASE
    };
    let out = kb_pass(passphrase)
        .backup_dir(repo)
        .args(["verify", "--all"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what}: verify: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    AfterKeyOp {
        old: old.is_some(),
        new: new.is_some(),
        slots: listed.len(),
        strays: slot_files(repo).difference(&listed).count(),
    }
}

/// Runs `key op` on a fresh copy of `template`, kills it (`SIGKILL`) after `delay`, and checks
/// the repository; returns whether the kill landed before the process ended, and the state.
fn kill_key_op(
    template: &Path,
    repo: &Path,
    op: &str,
    delay: std::time::Duration,
) -> (bool, AfterKeyOp) {
    use std::os::unix::process::ExitStatusExt;
    copy_dir(template, repo);
    let mut child = key_op_process(repo, op).spawn().unwrap();
    std::thread::sleep(delay);
    let _ = child.kill();
    let status = child.wait().unwrap();
    let killed = status.signal() == Some(9);
    if !killed {
        assert!(status.success(), "{op} after {delay:?}: {status:?}");
    }
    let what = format!("{op} killed after {delay:?} (landed: {killed})");
    let after = check_after_key_op(repo, op, &what);
    if !killed {
        assert_eq!(
            (after.old, after.new),
            (op == "add", true),
            "{what}: a whole run"
        );
    }
    fs::remove_dir_all(repo).unwrap();
    (killed, after)
}

#[test]
fn a_killed_key_operation_never_leaves_the_repository_unopenable() {
    const KILLS: u32 = 12;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let template = tmp.path().join("template");
    copy_fixture_data("v4-basic", &data);
    // The default Argon2id cost: the operations spend their time deriving keys.
    kb_enc()
        .backup_dir(&template)
        .args(["init", "--encrypt"])
        .assert()
        .success();
    create_with(kb_enc(), &data, &template, &[]);
    let listed = key_list(&template, PASSPHRASE).unwrap();
    assert_eq!(listed["slots"][0]["kdf"]["memory_kib"], 65536, "{listed}");
    let started = Instant::now();
    let mut rng = Rng::new(0x6b65_795f_6b69_6c6c);
    for op in ["add", "passwd"] {
        // Whole runs, two at a time as the kills below, to know how long one takes (the
        // shorter: the kills must land before the end).
        let whole = std::thread::scope(|s| {
            let runs: Vec<_> = (0..2)
                .map(|w| {
                    let (template, tmp) = (&template, tmp.path());
                    s.spawn(move || {
                        let repo = tmp.join(format!("{op}-whole-{w}"));
                        copy_dir(template, &repo);
                        let t = Instant::now();
                        let status = key_op_process(&repo, op).status().unwrap();
                        let took = t.elapsed();
                        assert!(status.success(), "{op}: {status:?}");
                        let after = check_after_key_op(&repo, op, &format!("{op} whole"));
                        assert_eq!(
                            (after.old, after.new, after.slots),
                            (op == "add", true, if op == "add" { 2 } else { 1 })
                        );
                        took
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).min().unwrap()
        });

        // One random instant in each twelfth of the run; two kills at a time.
        let part = whole / KILLS;
        let delays: Vec<_> = (0..KILLS)
            .map(|k| part * k + part.mul_f64(rng.below(1000) as f64 / 1000.0))
            .collect();
        let results: Vec<(bool, AfterKeyOp)> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..2)
                .map(|w| {
                    let (delays, template, tmp) = (&delays, &template, tmp.path());
                    s.spawn(move || {
                        delays
                            .iter()
                            .enumerate()
                            .filter(|(k, _)| k % 2 == w)
                            .map(|(k, &delay)| {
                                let repo = tmp.join(format!("{op}-{k}"));
                                kill_key_op(template, &repo, op, delay)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        let landed = results.iter().filter(|(killed, _)| *killed).count();
        let mut outcomes: BTreeMap<AfterKeyOp, usize> = BTreeMap::new();
        for (_, after) in &results {
            *outcomes.entry(*after).or_default() += 1;
        }
        eprintln!(
            "key {op}: a whole run takes {whole:?}; {landed} of {KILLS} kills landed before it \
             ended; the states after them: {outcomes:?}"
        );
        assert!(
            landed * 2 > KILLS as usize,
            "{op}: only {landed} of {KILLS} kills landed mid-run"
        );
    }
    eprintln!("killed key operations: {:?} in all", started.elapsed());
}

// ------------------------------------------------------------------------------------------
// 6. Copy between plain and encrypted repositories.
// ------------------------------------------------------------------------------------------

/// `copy --all --from FROM --to TO --format json` with `cmd`.
fn copy_all(mut cmd: Command, from: &Path, to: &Path, extra: &[&str]) -> serde_json::Value {
    ok_json(
        &cmd.args(["copy", "--format", "json", "--all", "--from"])
            .arg(from)
            .arg("--to")
            .arg(to)
            .args(extra)
            .output()
            .unwrap(),
    )
}

/// The chunk object names (the last part of each path under `chains/*/chunks/`).
fn chunk_names(repo: &Path) -> BTreeSet<String> {
    tree(repo)
        .into_keys()
        .filter(|k| k.contains("/chunks/"))
        .map(|k| k.rsplit('/').next().unwrap().to_string())
        .collect()
}

#[test]
#[allow(clippy::too_many_lines)] // one round trip, checked at every stop
fn backups_copied_plain_to_encrypted_to_plain_restore_the_same_data() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain");
    let enc = tmp.path().join("enc");
    let back = tmp.path().join("back");
    let other = tmp.path().join("other-enc");
    init_encrypted(&enc);

    // Two chains in the plain repository, each a full and incrementals.
    let mut ids = Vec::new();
    for (n, fixture) in ["v4-basic", "v4-rotated"].into_iter().enumerate() {
        let data = tmp.path().join(format!("data-{fixture}"));
        copy_fixture_data(fixture, &data);
        ids.push(
            create_with(kb(), &data, &plain, &[])["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        let mut e = Engine::open(&data, 8);
        for round in 0..2u64 {
            for i in 0..25 {
                e.insert(10_000 * (n as u64 + 1) + round * 100 + i, i + round);
            }
            e.update(1, &format!("copied-{fixture}-{round}"));
            e.rotate();
            let inc = create_with(
                kb(),
                &data,
                &plain,
                &["--incremental", "--reference", "latest"],
            );
            ids.push(inc["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(ids.len(), 6);

    let restored = |cmd: Command, repo: &Path, id: &str, name: &str| {
        let target = tmp.path().join(format!("r-{name}-{id}"));
        restore_with(cmd, repo, &target, id);
        (tree(&target), recovered_as_expected_json(&target))
    };
    let originals: Vec<_> = ids
        .iter()
        .map(|id| restored(kb(), &plain, id, "plain"))
        .collect();

    // Plain to encrypted.
    let r = copy_all(kb_enc(), &plain, &enc, &[]);
    let copied: Vec<&str> = r["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        copied.iter().copied().collect::<BTreeSet<_>>(),
        ids.iter().map(String::as_str).collect(),
        "{r}"
    );
    assert!(
        r["backups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["status"] != "present"),
        "{r}"
    );
    check_all_sealed(&enc);
    let plain_chunks = chunk_names(&plain);
    let enc_chunks = chunk_names(&enc);
    assert!(!enc_chunks.is_empty());
    let shared: Vec<_> = plain_chunks.intersection(&enc_chunks).collect();
    assert!(shared.is_empty(), "chunk names shared: {shared:?}");
    // Again: everything is there already.
    let again = copy_all(kb_enc(), &plain, &enc, &[]);
    assert_eq!(again["backups"].as_array().unwrap().len(), 6, "{again}");
    assert!(
        again["backups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["status"] == "present"),
        "{again}"
    );
    assert_eq!(again["chunks_copied"], 0, "{again}");

    // Encrypted back to a new plain repository. The run's passphrase would be the target's
    // too, and a passphrase given makes no plain repository implicitly: refused, nothing made.
    let out = kb_enc()
        .args(["copy", "--all", "--from"])
        .arg(&enc)
        .arg("--to")
        .arg(&back)
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("holds no repository"), "{err}");
    assert!(walk(&back).is_empty(), "{:?}", walk(&back));
    // The passphrase given as the source's only: the plain target is made.
    let from_file = pass_file(tmp.path(), "from", &format!("{PASSPHRASE}\n"));
    let from_arg = from_file.display().to_string();
    let r = copy_all(kb(), &enc, &back, &["--from-password-file", &from_arg]);
    assert_eq!(r["backups"].as_array().unwrap().len(), 6, "{r}");
    // Again, now with the run's passphrase (the plain target needs none): all there.
    let again = copy_all(kb_enc(), &enc, &back, &[]);
    assert!(
        again["backups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["status"] == "present"),
        "{again}"
    );
    assert!(!back.join("keys").exists());
    assert!(tree(&back)
        .values()
        .all(|bytes| !bytes.starts_with(SEALED_MAGIC)));
    let back_chunks = chunk_names(&back);
    assert!(back_chunks.intersection(&enc_chunks).next().is_none());

    // Encrypted under one passphrase to encrypted under another.
    kb_pass(OTHER)
        .backup_dir(&other)
        .args(["init", "--encrypt"])
        .args(CHEAP_KDF)
        .assert()
        .success();
    // Without the source's passphrase the target's is tried on it, and is wrong.
    let out = kb_pass(OTHER)
        .args(["copy", "--all", "--from"])
        .arg(&enc)
        .arg("--to")
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let r = copy_all(
        kb_pass(OTHER),
        &enc,
        &other,
        &["--from-password-file", &from_arg],
    );
    assert_eq!(r["backups"].as_array().unwrap().len(), 6, "{r}");
    check_all_sealed(&other);
    assert!(chunk_names(&other)
        .intersection(&enc_chunks)
        .next()
        .is_none());
    // The variable does the same.
    let again = copy_all(
        {
            let mut c = kb_pass(OTHER);
            c.env("KYRODB_BACKUP_FROM_PASSWORD", PASSPHRASE);
            c
        },
        &enc,
        &other,
        &[],
    );
    assert!(
        again["backups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["status"] == "present"),
        "{again}"
    );

    // Every backup restores to the same data from every repository.
    for (id, original) in ids.iter().zip(&originals) {
        for (cmd, repo, name) in [
            (kb_enc(), &enc, "enc"),
            (kb(), &back, "back"),
            (kb_pass(OTHER), &other, "other"),
        ] {
            let got = restored(cmd, repo, id, name);
            assert_eq!(got.1, original.1, "{name} {id}");
            assert_eq!(got.0, original.0, "{name} {id}: the files");
        }
    }
    for (cmd, repo) in [(kb_enc(), &enc), (kb(), &back), (kb_pass(OTHER), &other)] {
        let mut cmd = cmd;
        cmd.backup_dir(repo)
            .args(["verify", "--all"])
            .assert()
            .success();
    }
}

// ------------------------------------------------------------------------------------------
// 7. On a bucket.
// ------------------------------------------------------------------------------------------

#[test]
#[allow(clippy::too_many_lines)] // one scenario, command after command
fn an_encrypted_repository_in_a_bucket_works_and_its_damage_is_found() {
    let s3 = S3Server::start();
    s3.create_bucket("vault");
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    fs::create_dir_all(&home).unwrap();
    let kb_s3 = || {
        let mut c = kb_enc();
        c.env_remove("AWS_PROFILE")
            .env("HOME", &home)
            .envs(s3.env())
            .env("KYRODB_BACKUP_S3_RETRY_SECS", "3");
        c
    };
    let url = "s3://vault/site/enc";
    let keys = || -> Vec<String> {
        s3.list_keys("vault", "site/enc/")
            .into_iter()
            .map(|(k, _)| k["site/enc/".len()..].to_string())
            .collect()
    };

    kb_s3()
        .backup_dir(url)
        .args(["init", "--encrypt"])
        .args(CHEAP_KDF)
        .assert()
        .success();
    let data = tmp.path().join("data");
    let mut e = Engine::open(&data, 8);
    for i in 0..150 {
        e.insert(i, i);
    }
    e.snapshot();
    for i in 150..200 {
        e.insert(i, i);
        e.update(i - 100, "bucket-SECRET-tag");
    }
    let b = ok_json(
        &kb_s3()
            .data_dir(&data)
            .backup_dir(url)
            .args(["create", "--format", "json"])
            .output()
            .unwrap(),
    );
    let id = b["id"].as_str().unwrap().to_string();
    let state = consistent_state_files(&data);

    // The bucket holds the layout, sealed.
    let names = keys();
    assert!(names.iter().any(|k| k == "kyrodb-backup.json"), "{names:?}");
    assert_eq!(
        names.iter().filter(|k| k.starts_with("keys/")).count(),
        1,
        "{names:?}"
    );
    let chunks: Vec<&String> = names.iter().filter(|k| k.contains("/chunks/")).collect();
    assert!(!chunks.is_empty(), "{names:?}");
    for k in &names {
        let bytes = s3.get("vault", &format!("site/enc/{k}")).unwrap();
        if k == "kyrodb-backup.json" || k.starts_with("keys/") {
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap();
        } else {
            assert!(bytes.starts_with(SEALED_MAGIC), "{k}");
            assert!(!bytes.windows(17).any(|w| w == b"bucket-SECRET-tag"), "{k}");
        }
    }

    let list = ok_json(
        &kb_s3()
            .backup_dir(url)
            .args(["list", "--format", "json"])
            .output()
            .unwrap(),
    );
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], id.as_str());
    // Without the passphrase, the bucket's repository is refused like a local one.
    let out = kb()
        .env_remove("AWS_PROFILE")
        .env("HOME", &home)
        .envs(s3.env())
        .backup_dir(url)
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is encrypted and no passphrase was given"));

    let target = tmp.path().join("restored");
    restore_with(kb_s3(), url, &target, &id);
    assert_eq!(tree(&target), state);
    kb_s3()
        .backup_dir(url)
        .args(["verify", "--all"])
        .assert()
        .success();

    // One chunk with one byte flipped: verify names it (exit 3), restore refuses before
    // touching its target.
    let chunk = chunks[chunks.len() / 2].clone();
    let key = format!("site/enc/{chunk}");
    let mut bytes = s3.get("vault", &key).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    s3.put("vault", &key, &bytes);
    let out = kb_s3()
        .backup_dir(url)
        .args(["verify", "--all"])
        .output()
        .unwrap();
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{report}");
    let chunk_name = chunk.rsplit('/').next().unwrap();
    assert!(report.contains(chunk_name), "{report}");

    let fresh = tmp.path().join("fresh-target");
    let out = kb_s3()
        .backup_dir(url)
        .data_dir(&fresh)
        .args(["restore", "--backup-id", &id])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(!fresh.exists());
    // Over a data dir that holds another state, allowed to replace it: still untouched.
    let occupied = tmp.path().join("occupied");
    copy_fixture_data("v4-basic", &occupied);
    let before = tree(&occupied);
    let out = kb_s3()
        .env("BACKUP_ALLOW_CLEAR", "true")
        .backup_dir(url)
        .data_dir(&occupied)
        .args(["restore", "--backup-id", &id])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(tree(&occupied), before);

    // Put back, the chunk is whole again.
    bytes[mid] ^= 0x10;
    s3.put("vault", &key, &bytes);
    kb_s3()
        .backup_dir(url)
        .args(["verify", "--all"])
        .assert()
        .success();
}
