//! The corruption matrix: every kind of file the repository stores, damaged in every way at
//! many offsets. `verify` must report each case (exit 3, naming the backup and file) and
//! `restore` must refuse it before touching its target. The matrix runs on a plain repository
//! and on an encrypted one (where every object but the marker and the key slots is sealed, bound
//! to its name, and the key slots are damaged too). CI runs a representative sample;
//! `cargo xtask faults` runs every case (`KYRODB_FAULT_CASES=all`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::support::engine::Engine;
use crate::support::*;

#[derive(Debug, Clone)]
enum Damage {
    Flip(usize),
    Truncate(usize),
    Zero(usize),
    Delete,
    SwapWith(PathBuf),
    ReplaceWith(PathBuf),
}

struct Pristine {
    _tmp: tempfile::TempDir,
    repo: PathBuf,
    encrypted: bool,
    /// Each manifest and chunk (relative to the repository) with the backups whose stored
    /// bytes it holds: a manifest its own backup, a chunk every backup that names it.
    owners: BTreeMap<PathBuf, Vec<String>>,
}

/// A repository of three backups over two chains (a full and an incremental of one data dir,
/// a full of another); an encrypted one when `encrypted`.
fn pristine(encrypted: bool) -> Pristine {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("backups");
    if encrypted {
        init_encrypted(&repo);
    }
    copy_fixture_data("v4-basic", &data);
    let b1 = create_in(encrypted, &data, &repo, &[]);
    {
        let mut e = Engine::open(&data, 8);
        for i in 0..30 {
            e.insert(500 + i, i);
        }
        e.rotate();
        e.insert(600, 1);
    }
    let b2 = create_in(
        encrypted,
        &data,
        &repo,
        &["--incremental", "--reference", "latest"],
    );
    let other = tmp.path().join("other");
    copy_fixture_data("v4-rotated", &other);
    let b3 = create_in(encrypted, &other, &repo, &[]);
    let owners = owners(&repo, encrypted);
    let ids: Vec<&str> = owners.values().flatten().map(String::as_str).collect();
    for b in [&b1, &b2, &b3] {
        let id = b["id"].as_str().unwrap();
        assert!(ids.contains(&id), "{id} is in no stored object: {owners:?}");
    }
    // Every stored object of the chains is one the library names (so that the backups a
    // damage affects are known for each).
    for f in walk(&repo.join("chains")) {
        let rel = f.strip_prefix(&repo).unwrap();
        assert!(
            owners.contains_key(rel),
            "{} belongs to no backup: {owners:?}",
            rel.display()
        );
    }
    Pristine {
        _tmp: tmp,
        repo,
        encrypted,
        owners,
    }
}

/// The stored objects of each backup, as the library reads the repository (an encrypted one's
/// manifests are sealed, and its chunks named by a keyed hash): see [`Pristine::owners`].
fn owners(repo: &Path, encrypted: bool) -> BTreeMap<PathBuf, Vec<String>> {
    use kyrodb_backup_storage::{backend::Location, Repository, Unlocker};
    let unlock = Unlocker::passphrase(PASSPHRASE);
    let r = Repository::open_at_with(&Location::local(repo), encrypted.then_some(&unlock)).unwrap();
    let listing = r.list().unwrap();
    assert!(listing.problems.is_empty(), "{:?}", listing.problems);
    let mut out: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    for b in &listing.backups {
        let m = &b.manifest;
        out.entry(
            Path::new("chains")
                .join(&m.chain_id)
                .join("manifests")
                .join(format!("{}.manifest", m.id)),
        )
        .or_default()
        .push(m.id.clone());
        let store = r.chain_store(&m.chain_id).unwrap();
        for c in m.chunk_refs() {
            out.entry(PathBuf::from(store.chunk_key(c.hash)))
                .or_default()
                .push(m.id.clone());
        }
    }
    out
}

/// Every case: (file relative to the repository, damage).
fn cases(repo: &Path) -> Vec<(PathBuf, Damage)> {
    let files: Vec<PathBuf> = walk(repo)
        .into_iter()
        .filter(|p| !p.ends_with("kyrodb-backup.lock"))
        .collect();
    let chunks: Vec<&PathBuf> = files
        .iter()
        .filter(|p| p.to_string_lossy().contains("/chunks/"))
        .collect();
    let manifests: Vec<&PathBuf> = files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "manifest"))
        .collect();
    let mut out = Vec::new();
    for f in &files {
        let len = fs::metadata(f).unwrap().len() as usize;
        let rel = f.strip_prefix(repo).unwrap().to_path_buf();
        let mut offsets: Vec<usize> = vec![
            0,
            3,
            4,
            5,
            8,
            12,
            15,
            16,
            20,
            40,
            len / 3,
            len / 2,
            len - 2,
            len - 1,
        ];
        offsets.retain(|&o| o < len);
        offsets.dedup();
        for &o in &offsets {
            out.push((rel.clone(), Damage::Flip(o)));
        }
        for t in [0, 1, len / 2, len - 1] {
            out.push((rel.clone(), Damage::Truncate(t)));
        }
        for z in [0, len / 2] {
            out.push((rel.clone(), Damage::Zero(z)));
        }
        let is_manifest = manifests.contains(&f);
        let is_full_manifest = is_manifest && {
            let id = f.file_stem().unwrap().to_string_lossy().into_owned();
            f.parent().unwrap().parent().unwrap().ends_with(&id)
        };
        let chain_has_others = fs::read_dir(f.parent().unwrap()).map_or(0, Iterator::count) > 1;
        // A deleted incremental's manifest is indistinguishable from a pruned backup, and the
        // only manifest of a chain from a create killed before its commit point: the deletion
        // cases are the ones a repository can prove.
        if !is_manifest || (is_full_manifest && chain_has_others) {
            out.push((rel.clone(), Damage::Delete));
        }
        if chunks.contains(&f) {
            if let Some(other) = chunks.iter().find(|c| **c != f) {
                out.push((
                    rel.clone(),
                    Damage::SwapWith(other.strip_prefix(repo).unwrap().to_path_buf()),
                ));
            }
        }
        if is_manifest {
            if let Some(other) = manifests.iter().find(|m| **m != f) {
                out.push((
                    rel.clone(),
                    Damage::ReplaceWith(other.strip_prefix(repo).unwrap().to_path_buf()),
                ));
            }
        }
    }
    out
}

fn apply(repo: &Path, rel: &Path, d: &Damage) {
    let path = repo.join(rel);
    match d {
        Damage::Flip(o) => {
            let mut b = fs::read(&path).unwrap();
            b[*o] ^= 0x20;
            fs::write(&path, b).unwrap();
        }
        Damage::Truncate(n) => {
            let b = fs::read(&path).unwrap();
            fs::write(&path, &b[..*n]).unwrap();
        }
        Damage::Zero(o) => {
            let mut b = fs::read(&path).unwrap();
            let end = (*o + 64).min(b.len());
            let orig = b.clone();
            b[*o..end].iter_mut().for_each(|x| *x = 0);
            if b == orig {
                // Already zeros there: flip instead so the case damages something.
                b[*o] = 0xFF;
            }
            fs::write(&path, b).unwrap();
        }
        Damage::Delete => fs::remove_file(&path).unwrap(),
        Damage::SwapWith(other) => {
            let a = fs::read(&path).unwrap();
            let b = fs::read(repo.join(other)).unwrap();
            fs::write(&path, b).unwrap();
            fs::write(repo.join(other), a).unwrap();
        }
        Damage::ReplaceWith(other) => {
            fs::write(&path, fs::read(repo.join(other)).unwrap()).unwrap();
        }
    }
}

/// Backups whose stored bytes the damage touches (none for the marker and the key slots,
/// which every backup needs).
fn affected(p: &Pristine, rel: &Path, d: &Damage) -> Vec<String> {
    let owners = |f: &Path| p.owners.get(f).cloned().unwrap_or_default();
    let mut hit = owners(rel);
    if let Damage::SwapWith(other) = d {
        hit.extend(owners(other));
    }
    hit
}

/// Whether `rel` is an object that opens the repository rather than one of a backup's: the
/// marker, or (in an encrypted repository) a key slot.
fn opens_repository(rel: &Path) -> bool {
    rel == Path::new("kyrodb-backup.json") || rel.starts_with("keys")
}

#[test]
fn every_damage_to_stored_files_is_reported_by_verify_and_refused_by_restore() {
    damage_matrix(false);
}

#[test]
fn every_damage_to_an_encrypted_repository_is_reported_by_verify_and_refused_by_restore() {
    damage_matrix(true);
}

/// The sample of `all` that a run checks: every case with `KYRODB_FAULT_CASES=all`; by default
/// about 60 spread evenly over the matrix, and every third case on the objects that open the
/// repository (the marker, the key slots), which every command reads first.
fn sample(all: &[(PathBuf, Damage)]) -> Vec<&(PathBuf, Damage)> {
    if std::env::var("KYRODB_FAULT_CASES").as_deref() == Ok("all") {
        return all.iter().collect();
    }
    let step = (all.len() / 60).max(1);
    let mut opening = 0;
    all.iter()
        .enumerate()
        .filter(|(i, (rel, _))| {
            let every_third = opens_repository(rel) && {
                opening += 1;
                opening % 3 == 1
            };
            i % step == 0 || every_third
        })
        .map(|(_, c)| c)
        .collect()
}

/// Damages a copy of a pristine repository (encrypted or not) in each case of the sample, and
/// checks that `verify --all` reports it and that `restore` refuses it.
fn damage_matrix(encrypted: bool) {
    let started = std::time::Instant::now();
    let p = pristine(encrypted);
    let all = cases(&p.repo);
    if encrypted {
        assert!(
            all.iter().any(|(rel, _)| rel.starts_with("keys")),
            "no key slot among the cases"
        );
    }
    let selected = sample(&all);
    let first_backup = p.owners.values().flatten().next().unwrap().clone();
    let work = tempfile::tempdir().unwrap();
    let mut caught = 0;
    for (i, (rel, damage)) in selected.iter().enumerate() {
        let repo = work.path().join(format!("repo-{i}"));
        copy_dir(&p.repo, &repo);
        let case = format!("{} {damage:?}", rel.display());
        let hit = affected(&p, rel, damage);
        apply(&repo, rel, damage);
        let out = kb_for(p.encrypted)
            .backup_dir(&repo)
            .args(["verify", "--all"])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.status.code(),
            Some(3),
            "case {case}: verify did not report damage:\n{text}"
        );
        if opens_repository(rel) {
            // No backup can be read, so none is named: the object is (a deleted key slot,
            // whose name nothing else records, by its folder: the repository has no slot).
            let name = match damage {
                Damage::Delete if rel.starts_with("keys") => "keys/".into(),
                _ => rel.to_string_lossy(),
            };
            assert!(
                text.contains(name.as_ref()),
                "case {case}: {name} not named:\n{text}"
            );
        } else {
            assert!(
                hit.iter().any(|id| text.contains(id.as_str())),
                "case {case}: no affected backup named:\n{text}"
            );
        }
        // Restoring an affected backup (any backup, when what opens the repository is
        // damaged) refuses before touching the target.
        let restore = if opens_repository(rel) {
            vec![first_backup.clone()]
        } else {
            hit.into_iter().take(1).collect()
        };
        for id in &restore {
            let target = work.path().join(format!("target-{i}"));
            copy_fixture_data("v4-wal-only", &target);
            let before = tree(&target);
            let out = kb_for(p.encrypted)
                .backup_dir(&repo)
                .data_dir(&target)
                .args(["restore", "--backup-id", id])
                .env("BACKUP_ALLOW_CLEAR", "true")
                .output()
                .unwrap();
            assert!(
                !out.status.success(),
                "case {case}: restore of {id} succeeded"
            );
            assert_eq!(tree(&target), before, "case {case}: target touched");
            fs::remove_dir_all(&target).unwrap();
        }
        fs::remove_dir_all(&repo).unwrap();
        caught += 1;
    }
    eprintln!(
        "corruption matrix ({}): {caught} of {} cases run and caught ({} on the marker and key \
         slots; {} in the full matrix) in {:.1} s",
        if encrypted { "encrypted" } else { "plain" },
        selected.len(),
        selected
            .iter()
            .filter(|(rel, _)| opens_repository(rel))
            .count(),
        all.len(),
        started.elapsed().as_secs_f64()
    );
}
