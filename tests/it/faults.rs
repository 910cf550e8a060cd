//! The corruption matrix: every kind of file the repository stores, damaged in every way at
//! many offsets. `verify` must report each case (exit 3, naming the backup and file) and
//! `restore` must refuse it before touching its target. CI runs a representative sample;
//! `cargo xtask faults` runs every case (`KYRODB_FAULT_CASES=all`).

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
    /// (backup id, chain id)
    backups: Vec<(String, String)>,
}

fn pristine() -> Pristine {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("backups");
    copy_fixture_data("v4-basic", &data);
    let mut backups = Vec::new();
    let b1 = create(&data, &repo, &[]);
    {
        let mut e = Engine::open(&data, 8);
        for i in 0..30 {
            e.insert(500 + i, i);
        }
        e.rotate();
        e.insert(600, 1);
    }
    let b2 = create(&data, &repo, &["--incremental", "--reference", "latest"]);
    let other = tmp.path().join("other");
    copy_fixture_data("v4-rotated", &other);
    let b3 = create(&other, &repo, &[]);
    for b in [&b1, &b2, &b3] {
        backups.push((
            b["id"].as_str().unwrap().into(),
            b["chain_id"].as_str().unwrap().into(),
        ));
    }
    Pristine {
        _tmp: tmp,
        repo,
        backups,
    }
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

/// Backups whose stored bytes the damage touches.
fn affected(repo: &Path, rel: &Path, d: &Damage, backups: &[(String, String)]) -> Vec<String> {
    let name = rel.file_name().unwrap().to_string_lossy().into_owned();
    let manifest_text = |id: &str, chain: &str| {
        fs::read_to_string(
            repo.join("chains")
                .join(chain)
                .join("manifests")
                .join(format!("{id}.manifest")),
        )
        .unwrap_or_default()
    };
    let mut hit: Vec<String> = backups
        .iter()
        .filter(|(id, chain)| {
            name == format!("{id}.manifest")
                || manifest_text(id, chain).contains(&format!("\"{name}\""))
        })
        .map(|(id, _)| id.clone())
        .collect();
    if let Damage::SwapWith(other) = d {
        let oname = other.file_name().unwrap().to_string_lossy().into_owned();
        hit.extend(
            backups
                .iter()
                .filter(|(id, chain)| manifest_text(id, chain).contains(&format!("\"{oname}\"")))
                .map(|(id, _)| id.clone()),
        );
    }
    hit
}

#[test]
fn every_damage_to_stored_files_is_reported_by_verify_and_refused_by_restore() {
    let p = pristine();
    let all = cases(&p.repo);
    let selected: Vec<&(PathBuf, Damage)> = match std::env::var("KYRODB_FAULT_CASES").as_deref() {
        Ok("all") => all.iter().collect(),
        _ => all.iter().step_by((all.len() / 60).max(1)).collect(),
    };
    let work = tempfile::tempdir().unwrap();
    let mut caught = 0;
    for (i, (rel, damage)) in selected.iter().enumerate() {
        let repo = work.path().join(format!("repo-{i}"));
        copy_dir(&p.repo, &repo);
        // Which backups the damage concerns is read before damaging (manifests may go).
        let hit = affected(&repo, rel, damage, &p.backups);
        apply(&repo, rel, damage);
        let out = kb()
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
            "case {rel:?} {damage:?}: verify did not report damage:\n{text}"
        );
        if rel.ends_with("kyrodb-backup.json") {
            assert!(text.contains("kyrodb-backup.json"), "{text}");
        } else {
            assert!(
                hit.iter().any(|id| text.contains(id.as_str())),
                "case {rel:?} {damage:?}: no affected backup named:\n{text}"
            );
        }
        // Restoring an affected backup refuses before touching the target.
        for id in hit.iter().take(1) {
            let target = work.path().join(format!("target-{i}"));
            copy_fixture_data("v4-wal-only", &target);
            let before = tree(&target);
            let out = kb()
                .backup_dir(&repo)
                .data_dir(&target)
                .args(["restore", "--backup-id", id])
                .env("BACKUP_ALLOW_CLEAR", "true")
                .output()
                .unwrap();
            assert!(
                !out.status.success(),
                "case {rel:?} {damage:?}: restore of {id} succeeded"
            );
            assert_eq!(
                tree(&target),
                before,
                "case {rel:?} {damage:?}: target touched"
            );
            fs::remove_dir_all(&target).unwrap();
        }
        fs::remove_dir_all(&repo).unwrap();
        caught += 1;
    }
    eprintln!(
        "corruption matrix: {caught} of {} cases run and caught ({} in the full matrix)",
        selected.len(),
        all.len()
    );
}
