//! `prune` at pinned clocks: a few hundred backups spread over 100 days, created and pruned
//! through the commands library with a fixed `now` (no fake clock needed), pruned with several
//! policies; the survivors are compared with the rule computed here independently, then
//! verified and restored with the binary. A prune (the binary, at the real clock) killed at
//! random instants never loses a backup the rule keeps, and the next prune finishes the job.

// Unix times of this century fit i64; each scenario reads top to bottom.
#![allow(clippy::cast_possible_wrap, clippy::too_many_lines)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::*;
use kyrodb_backup_ops::types::RetentionPolicy;
use kyrodb_backup_ops::{CreateOptions, NoProgress, Now, PruneOptions, PruneReport, Reference};
use time::OffsetDateTime;

const DAY: u64 = 86_400;

/// The binary (its own clock).
fn kb_now() -> Command {
    kb_process()
}

/// Prunes through the library at `now`.
fn prune_at(
    repo: &Path,
    keep: [u32; 4],
    min_age_days: u32,
    dry_run: bool,
    now: u64,
) -> PruneReport {
    let mut opts = PruneOptions::new(RetentionPolicy {
        keep_hourly: keep[0],
        keep_daily: keep[1],
        keep_weekly: keep[2],
        keep_monthly: keep[3],
        min_age_days,
        keep_within_secs: 0,
    });
    opts.dry_run = dry_run;
    kyrodb_backup_ops::prune(repo, &opts, Now::at(now)).unwrap()
}

#[derive(Clone, Debug)]
struct B {
    id: String,
    chain: String,
    ts: u64,
    full: bool,
}

/// Backups taken at `times` (through the library, its clock pinned to each): a full every
/// `full_every`, incrementals against the latest between.
fn make_backups(data: &Path, repo: &Path, times: &[u64], full_every: usize) -> Vec<B> {
    let mut out: Vec<B> = Vec::new();
    for (i, &t) in times.iter().enumerate() {
        let mut opts = CreateOptions::new(data);
        if i % full_every != 0 {
            opts.reference = Some(Reference::Latest);
        }
        let b = kyrodb_backup_ops::create(repo, &opts, Now::at(t), &NoProgress)
            .unwrap()
            .backup;
        assert_eq!(b.timestamp, t);
        out.push(B {
            id: b.id,
            chain: b.chain_id.unwrap(),
            ts: b.timestamp,
            full: b.backup_type == "Full",
        });
    }
    out
}

fn month_index(ts: u64) -> i64 {
    let t = OffsetDateTime::from_unix_timestamp(ts as i64).unwrap();
    i64::from(t.year()) * 12 + i64::from(u8::from(t.month()))
}

/// The rule, written independently of the retention crate.
fn expected_kept(backups: &[B], keep: [u32; 4], min_age_days: u64, now: u64) -> BTreeSet<String> {
    let mut kept = BTreeSet::new();
    let newest_first = {
        let mut v: Vec<&B> = backups.iter().collect();
        v.sort_by(|a, b| (b.ts, &b.id).cmp(&(a.ts, &a.id)));
        v
    };
    if let Some(b) = newest_first.first() {
        kept.insert(b.id.clone());
    }
    let periods: [&dyn Fn(u64) -> i64; 4] = [
        &|t| (t / 3600) as i64,
        &|t| (t / DAY) as i64,
        &|t| ((t / DAY + 3) / 7) as i64,
        &month_index,
    ];
    for (n, period) in keep.iter().zip(periods) {
        for k in 0..i64::from(*n) {
            let p = period(now) - k;
            if let Some(b) = newest_first
                .iter()
                .find(|b| b.ts <= now && period(b.ts) == p)
            {
                kept.insert(b.id.clone());
            }
        }
    }
    for b in backups {
        if b.ts > now || now - b.ts < min_age_days * DAY {
            kept.insert(b.id.clone());
        }
    }
    let fulls: Vec<String> = backups
        .iter()
        .filter(|b| !b.full && kept.contains(&b.id))
        .map(|b| b.chain.clone())
        .filter(|c| backups.iter().any(|b| &b.id == c))
        .collect();
    kept.extend(fulls);
    kept
}

fn chunk_names(repo: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(chains) = fs::read_dir(repo.join("chains")) else {
        return out;
    };
    for chain in chains.flatten() {
        let Ok(subs) = fs::read_dir(chain.path().join("chunks")) else {
            continue;
        };
        for sub in subs.flatten() {
            for c in fs::read_dir(sub.path()).unwrap().flatten() {
                out.insert(format!(
                    "{}/{}",
                    chain.file_name().to_string_lossy(),
                    c.file_name().to_string_lossy()
                ));
            }
        }
    }
    out
}

fn referenced_chunks(repo: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for b in kyrodb_backup_ops::list(repo).unwrap().backups {
        let id = &b.id;
        // Chunk names come from the manifest file itself.
        let chain = b.chain_id.as_deref().unwrap();
        let text = fs::read_to_string(
            repo.join("chains")
                .join(chain)
                .join("manifests")
                .join(format!("{id}.manifest")),
        )
        .unwrap();
        let body: serde_json::Value =
            serde_json::from_str(text.split_once('\n').unwrap().1).unwrap();
        // The files' chunks and those of the snapshot id list incrementals count from.
        let lists = body["files"]
            .as_array()
            .unwrap()
            .iter()
            .chain(body.get("snapshot_ids"));
        for f in lists {
            for c in f["chunks"].as_array().unwrap() {
                out.insert(format!("{chain}/{}", c["hash"].as_str().unwrap()));
            }
        }
    }
    out
}

fn listed(repo: &Path) -> BTreeSet<String> {
    kyrodb_backup_ops::list(repo)
        .unwrap()
        .backups
        .into_iter()
        .map(|b| b.id)
        .collect()
}

#[test]
fn hundreds_of_backups_over_100_days_pruned_by_several_policies() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("backups");
    copy_fixture_data("v4-basic", &data);
    let start = 1_751_371_200; // 2025-07-01T12:00:00Z
                               // 300 backups over 100 days, at uneven hours.
    let times: Vec<u64> = (0..300u64)
        .map(|i| start + i * 8 * 3600 + (i * 7919 % 3000))
        .collect();
    let mut backups = make_backups(&data, &repo, &times, 10);
    assert_eq!(listed(&repo).len(), 300);
    let now = times[299] + 3600;
    let policies: [([u32; 4], u64); 3] =
        [([24, 30, 12, 6], 0), ([0, 7, 4, 3], 2), ([0, 2, 0, 1], 0)];
    for (keep, min_age) in policies {
        let want = expected_kept(&backups, keep, min_age, now);
        // A dry run decides the same and deletes nothing.
        let before = listed(&repo);
        let dry = prune_at(&repo, keep, min_age as u32, true, now);
        assert!(dry.dry_run);
        assert_eq!(listed(&repo), before);
        let v = prune_at(&repo, keep, min_age as u32, false, now);
        let kept: BTreeSet<String> = v.kept.iter().map(|k| k.id.clone()).collect();
        assert_eq!(kept, want, "policy {keep:?}");
        assert_eq!(dry.kept, v.kept);
        assert_eq!(listed(&repo), want);
        for k in &v.kept {
            assert!(!k.reasons.is_empty());
        }
        // No chunk is left that no backup needs.
        let names = chunk_names(&repo);
        assert_eq!(
            names,
            referenced_chunks(&repo),
            "policy {keep:?}: unreferenced chunks left"
        );
        backups.retain(|b| want.contains(&b.id));
    }
    // Every survivor verifies and restores.
    kb_now()
        .backup_dir(&repo)
        .args(["verify", "--all"])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success()
        .then_some(())
        .expect("verify --all");
    for b in &backups {
        let target = tmp.path().join(format!("r-{}", b.id));
        let ok = kb_now()
            .backup_dir(&repo)
            .data_dir(&target)
            .args(["restore", "--backup-id", &b.id])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "restore of survivor {}", b.id);
        assert_eq!(tree(&target), consistent_state_files(&data));
    }
}

#[test]
fn a_chain_whose_full_is_older_than_every_window_keeps_its_full() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("backups");
    copy_fixture_data("v4-wal-only", &data);
    let start = 1_735_732_800; // 2025-01-01T12:00:00Z
    let times: Vec<u64> = std::iter::once(start)
        .chain((0..5).map(|i| start + 200 * DAY + i * DAY))
        .collect();
    let backups = make_backups(&data, &repo, &times, 100);
    let now = times[5] + 3600;
    let v = prune_at(&repo, [0, 3, 0, 0], 0, false, now);
    let kept: BTreeMap<String, Vec<String>> = v
        .kept
        .iter()
        .map(|k| (k.id.clone(), k.reasons.clone()))
        .collect();
    let full = &backups[0].id;
    assert!(
        kept[full].iter().all(|r| r.starts_with("chain of ")),
        "{kept:?}"
    );
    assert_eq!(
        kept.len(),
        4,
        "the full and the last three days' incrementals"
    );
    let target = tmp.path().join("restored");
    assert!(kb_now()
        .backup_dir(&repo)
        .data_dir(&target)
        .args(["restore", "--backup-id", full])
        .status()
        .unwrap()
        .success());
}

#[test]
fn a_prune_killed_at_random_instants_never_loses_a_kept_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let pristine = tmp.path().join("pristine");
    copy_fixture_data("v4-rotated", &data);
    let start = 1_751_371_200;
    let times: Vec<u64> = (0..60u64).map(|i| start + i * 36 * 3600).collect();
    let backups = make_backups(&data, &pristine, &times, 3);
    // The binary prunes at the real clock: a year and more after these backups, so the
    // policy keeps few of them and a prune has plenty to delete.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let policy = [
        "--keep-hourly",
        "0",
        "--keep-daily",
        "5",
        "--keep-weekly",
        "2",
        "--keep-monthly",
        "1",
    ];
    let want = expected_kept(&backups, [0, 5, 2, 1], 0, now);
    let all = listed(&pristine);
    // How long an uninterrupted prune takes, to spread the kills over it.
    let repo = tmp.path().join("backups");
    copy_dir(&pristine, &repo);
    let t0 = std::time::Instant::now();
    assert!(kb_now()
        .backup_dir(&repo)
        .arg("prune")
        .args(policy)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    let full_run = t0.elapsed().as_micros() as u64;
    let mut interrupted = 0;
    let mut rng = Rng::new(0x2545_F491_4F6C_DD1D);
    let rounds: u64 = std::env::var("KYRODB_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    for round in 0..rounds {
        let delay = rng.below(full_run + 1);
        fs::remove_dir_all(&repo).unwrap();
        copy_dir(&pristine, &repo);
        let mut child = kb_now()
            .backup_dir(&repo)
            .arg("prune")
            .args(policy)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(delay));
        let _ = child.kill();
        child.wait().unwrap();
        // Every backup the rule keeps is still listed, and every listed backup verifies.
        let now_listed = listed(&repo);
        assert!(
            want.is_subset(&now_listed),
            "round {round}: a kept backup was lost"
        );
        if now_listed != want && now_listed != all || chunk_names(&repo) != referenced_chunks(&repo)
        {
            interrupted += 1;
        }
        let ok = kb_now()
            .backup_dir(&repo)
            .args(["verify", "--all"])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "round {round}: a listed backup does not verify");
        // The next prune finishes the job: exactly the kept backups, no orphaned chunks.
        assert!(kb_now()
            .backup_dir(&repo)
            .arg("prune")
            .args(policy)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success());
        assert_eq!(listed(&repo), want, "round {round}");
        assert_eq!(
            chunk_names(&repo),
            referenced_chunks(&repo),
            "round {round}"
        );
    }
    eprintln!(
        "prune kills: {interrupted} of {rounds} left a half-done prune (uninterrupted run {full_run} us)"
    );
    // The kills landed mid-work: across the rounds, some left a half-done prune and some did
    // not (they came before it changed anything, or after it finished). Fewer than 10 rounds
    // (`KYRODB_KILL_ROUNDS`) are too few to expect both.
    if rounds >= 10 {
        assert!(
            interrupted > 0,
            "no kill of {rounds} landed mid-prune (uninterrupted run {full_run} us)"
        );
        assert!(
            interrupted < rounds,
            "every kill of {rounds} left a half-done prune (uninterrupted run {full_run} us)"
        );
    }
    for id in &want {
        let target = tmp.path().join(format!("r-{id}"));
        assert!(kb_now()
            .backup_dir(&repo)
            .data_dir(&target)
            .args(["restore", "--backup-id", id])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success());
    }
}
