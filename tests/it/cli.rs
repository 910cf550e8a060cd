//! The command line against copies of the engine's fixtures: create, list, show, verify,
//! restore, check, and the contract's safety rules and exit codes.

use std::fs;
use std::path::Path;

use crate::support::*;
use predicates::prelude::*;
use tempfile::TempDir;

const FIXTURES: [&str; 3] = ["v4-basic", "v4-rotated", "v4-wal-only"];

struct Env {
    _tmp: TempDir,
    data: std::path::PathBuf,
    repo: std::path::PathBuf,
    target: std::path::PathBuf,
}

fn env(fixture: &str) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_fixture_data(fixture, &data);
    Env {
        data,
        repo: tmp.path().join("backups"),
        target: tmp.path().join("restored"),
        _tmp: tmp,
    }
}

/// Every chunk file: `chains/<chain>/chunks/<xx>/<hash>`.
fn chunk_files(repo: &Path) -> Vec<std::path::PathBuf> {
    let chains = repo.join("chains");
    walk(&chains)
        .into_iter()
        .filter(|p| {
            p.strip_prefix(&chains).unwrap().components().nth(1)
                == Some(std::path::Component::Normal("chunks".as_ref()))
        })
        .collect()
}

/// The chunk files of the repository's snapshot id lists (not data-dir bytes).
fn id_list_chunks(repo: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for chain in fs::read_dir(repo.join("chains")).unwrap() {
        let chain = chain.unwrap().path();
        for m in fs::read_dir(chain.join("manifests")).unwrap() {
            let bytes = fs::read(m.unwrap().path()).unwrap();
            let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
            let v: serde_json::Value = serde_json::from_slice(&bytes[nl + 1..]).unwrap();
            for c in v["snapshot_ids"]["chunks"].as_array().into_iter().flatten() {
                let hash = c["hash"].as_str().unwrap();
                out.push(chain.join("chunks").join(&hash[..2]).join(hash));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn full_backup_of_every_fixture_restores_byte_identical_and_recovers_expected_state() {
    for fixture in FIXTURES {
        let e = env(fixture);
        let b = create(&e.data, &e.repo, &["--description", "daily"]);
        let id = b["id"].as_str().unwrap();
        let expected = expected_json(fixture);
        assert_eq!(b["backup_type"], "Full");
        assert_eq!(b["parent_id"], serde_json::Value::Null);
        assert_eq!(b["description"], "daily");
        assert_eq!(
            b["vector_count"], expected["count"],
            "{fixture}: vector_count is the live count"
        );
        assert_eq!(b["dimension"], 8);
        let state = consistent_state_files(&e.data);
        let size: usize = state.values().map(Vec::len).sum();
        assert_eq!(b["size_bytes"], size as u64);

        kb().backup_dir(&e.repo)
            .args(["verify", id])
            .assert()
            .success()
            .stdout(predicate::str::contains("ok"));

        kb().backup_dir(&e.repo)
            .data_dir(&e.target)
            .args(["restore", "--backup-id", id])
            .assert()
            .success();
        assert_eq!(
            tree(&e.target),
            state,
            "{fixture}: restored files are exactly the consistent state"
        );
        assert_eq!(recovered_as_expected_json(&e.target), expected, "{fixture}");
    }
}

#[test]
fn metrics_and_coverage_are_recorded() {
    let cases = [
        ("v4-basic", serde_json::json!("cosine")),
        ("v4-rotated", serde_json::json!("euclidean")),
        ("v4-wal-only", serde_json::Value::Null),
    ];
    for (fixture, distance) in cases {
        let e = env(fixture);
        let b = create(&e.data, &e.repo, &[]);
        assert_eq!(b["distance"], distance, "{fixture}");
        assert!(b["wal"]["last_seq"].as_u64().unwrap() >= b["wal"]["first_seq"].as_u64().unwrap());
        if fixture == "v4-wal-only" {
            assert_eq!(b["snapshot"], serde_json::Value::Null);
        } else {
            assert_eq!(b["snapshot"]["version"], 4);
        }
    }
}

#[test]
fn unnamed_snapshots_and_foreign_files_are_skipped_and_reported() {
    let e = env("v4-rotated");
    fs::write(e.data.join("notes.txt"), b"operator notes").unwrap();
    fs::write(e.data.join("MANIFEST.tmp"), b"{").unwrap();
    let b = create(&e.data, &e.repo, &[]);
    let skipped: Vec<&str> = b["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(skipped.contains(&"notes.txt"));
    assert!(skipped.contains(&"MANIFEST.tmp"));
    assert!(skipped.contains(&"snapshot_1795529686027375.snap"));
    assert!(skipped.contains(&"snapshot_1795529687035422.snap"));
    assert!(!skipped.contains(&"snapshot_1795529689025180.snap"));
}

#[test]
fn list_json_is_newest_first_and_empty_is_an_array() {
    let e = env("v4-basic");
    fs::create_dir_all(&e.repo).unwrap();
    kb().backup_dir(&e.repo)
        .args(["list", "--format", "json"])
        .assert()
        .success()
        .stdout("[]\n");
    let a = create(&e.data, &e.repo, &[]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = create(&e.data, &e.repo, &[]);
    let out = kb()
        .backup_dir(&e.repo)
        .args(["list", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["id"], b["id"]);
    assert_eq!(v[1]["id"], a["id"]);
    let mut printed = b.clone();
    printed.as_object_mut().unwrap().remove("skipped");
    assert_eq!(v[0], printed, "list shows the same object create printed");
}

#[test]
fn global_options_go_before_or_after_the_command_and_come_from_the_environment() {
    let e = env("v4-basic");
    kb().arg("create")
        .data_dir(&e.data)
        .backup_dir(&e.repo)
        .assert()
        .success();
    kb().env("KYRODB_BACKUP_DIR", &e.repo)
        .args(["list", "--format", "json"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"backup_type\": \"Full\""));
    // Defaults are ./data and ./backups.
    kb().current_dir(e.data.parent().unwrap())
        .arg("create")
        .assert()
        .success();
    assert!(e.repo.join("kyrodb-backup.json").is_file());
}

#[test]
fn ids_can_be_abbreviated_to_eight_characters() {
    let e = env("v4-basic");
    let b = create(&e.data, &e.repo, &[]);
    let id = b["id"].as_str().unwrap();
    kb().backup_dir(&e.repo)
        .args(["show", &id[..8], "--format", "json"])
        .assert()
        .success()
        .stdout(predicate::str::contains(id));
    kb().backup_dir(&e.repo)
        .args(["show", &id[..7]])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("at least 8 characters"))
        .stderr(predicate::str::contains("hint: run `kyrodb_backup list`"));
    kb().backup_dir(&e.repo)
        .args(["show", "ffffffff-ffff"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no backup matches"));
}

#[test]
fn usage_errors_exit_2() {
    kb().args(["create", "--no-such-flag"]).assert().code(2);
    kb().args(["restore"]).assert().code(2);
    kb().args(["check", "--max-age", "26x"]).assert().code(2);
    kb().args(["create", "--reference", "latest"])
        .assert()
        .code(2);
}

#[test]
fn restore_over_a_non_empty_dir_needs_backup_allow_clear_and_checks_it_first() {
    let e = env("v4-basic");
    let b = create(&e.data, &e.repo, &[]);
    let id = b["id"].as_str().unwrap();
    let other = env("v4-rotated");
    let before = tree(&other.data);
    // Refused before any work: even the repository is not opened (a missing one is no excuse).
    kb().backup_dir(e.repo.join("nonexistent"))
        .data_dir(&other.data)
        .args(["restore", "--backup-id", id])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("is not empty"))
        .stderr(predicate::str::contains(
            "hint: set BACKUP_ALLOW_CLEAR=true",
        ));
    kb().backup_dir(&e.repo)
        .data_dir(&other.data)
        .args(["restore", "--backup-id", id])
        .env("BACKUP_ALLOW_CLEAR", "false")
        .assert()
        .code(4);
    assert_eq!(tree(&other.data), before);

    // Allowed: the target now holds exactly the backup, the old contents are gone.
    kb().backup_dir(&e.repo)
        .data_dir(&other.data)
        .args(["restore", "--backup-id", id])
        .env("BACKUP_ALLOW_CLEAR", "true")
        .assert()
        .success();
    assert_eq!(tree(&other.data), consistent_state_files(&e.data));
    let leftovers: Vec<_> = fs::read_dir(other.data.parent().unwrap())
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("restore") || n.contains("previous"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn keep_previous_keeps_the_old_contents_and_says_where() {
    let e = env("v4-basic");
    let b = create(&e.data, &e.repo, &[]);
    let other = env("v4-rotated");
    let before = tree(&other.data);
    let out = kb()
        .backup_dir(&e.repo)
        .data_dir(&other.data)
        .args([
            "restore",
            "--keep-previous",
            "--format",
            "json",
            "--backup-id",
        ])
        .arg(b["id"].as_str().unwrap())
        .env("BACKUP_ALLOW_CLEAR", "true")
        .output()
        .unwrap();
    assert!(out.status.success());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kept = Path::new(r["previous"].as_str().unwrap());
    assert_eq!(tree(kept), before);
    assert_eq!(r["vector_count"], b["vector_count"]);
    assert_eq!(r["point_in_time"], serde_json::Value::Null);
    assert_eq!(r["recovered_to"], b["timestamp"]);
    assert_eq!(tree(&other.data), consistent_state_files(&e.data));
}

#[test]
fn dry_run_changes_nothing() {
    let e = env("v4-basic");
    let b = create(&e.data, &e.repo, &[]);
    let other = env("v4-rotated");
    let before = tree(&other.data);
    kb().backup_dir(&e.repo)
        .data_dir(&other.data)
        .args(["restore", "--dry-run", "--backup-id"])
        .arg(b["id"].as_str().unwrap())
        .env("BACKUP_ALLOW_CLEAR", "true")
        .assert()
        .success()
        .stdout(predicate::str::contains("would restore"));
    assert_eq!(tree(&other.data), before);
    kb().backup_dir(&e.repo)
        .data_dir(&e.target)
        .args(["restore", "--dry-run", "--backup-id"])
        .arg(b["id"].as_str().unwrap())
        .assert()
        .success();
    assert!(!e.target.exists());
}

#[test]
fn a_damaged_chunk_is_reported_by_verify_and_refused_by_restore_before_the_target_is_touched() {
    let e = env("v4-basic");
    let b = create(&e.data, &e.repo, &[]);
    let id = b["id"].as_str().unwrap();
    let lists = id_list_chunks(&e.repo);
    assert_eq!(lists.len(), 1, "the snapshot's id list is stored");
    let chunks: Vec<_> = chunk_files(&e.repo)
        .into_iter()
        .filter(|c| !lists.contains(c))
        .collect();
    assert!(!chunks.is_empty());
    for (i, chunk) in chunks.iter().enumerate() {
        let original = fs::read(chunk).unwrap();
        let mut bad = original.clone();
        let at = bad.len() / 2 + i;
        let at = at.min(bad.len() - 1);
        bad[at] ^= 0x40;
        fs::write(chunk, &bad).unwrap();

        kb().backup_dir(&e.repo)
            .args(["verify", "--all"])
            .assert()
            .code(3)
            .stdout(predicate::str::contains("DAMAGED"))
            .stdout(predicate::str::contains(id));

        let other = env("v4-rotated");
        let before = tree(&other.data);
        kb().backup_dir(&e.repo)
            .data_dir(&other.data)
            .args(["restore", "--backup-id", id])
            .env("BACKUP_ALLOW_CLEAR", "true")
            .assert()
            .code(3)
            .stderr(predicate::str::contains("hint:"));
        assert_eq!(tree(&other.data), before, "target untouched");
        let names: Vec<_> = fs::read_dir(other.data.parent().unwrap())
            .unwrap()
            .map(|d| d.unwrap().file_name())
            .collect();
        assert_eq!(names, ["data"], "no staging left behind");
        fs::write(chunk, &original).unwrap();
    }
    // A deleted chunk and a damaged manifest are damage too.
    fs::remove_file(&chunks[0]).unwrap();
    kb().backup_dir(&e.repo)
        .args(["verify", "--format", "json", id])
        .assert()
        .code(3)
        .stdout(predicate::str::contains("is missing"));
}

#[test]
fn a_damaged_snapshot_id_list_is_reported_by_verify_and_refused_by_restore_but_not_by_incrementals()
{
    let e = env("v4-basic");
    let full = create(&e.data, &e.repo, &[]);
    let id = full["id"].as_str().unwrap();
    let list = id_list_chunks(&e.repo).remove(0);
    let original = fs::read(&list).unwrap();
    let mut bad = original.clone();
    let end = bad.len() - 1;
    bad[end] ^= 0x01;
    fs::write(&list, &bad).unwrap();
    kb().backup_dir(&e.repo)
        .args(["verify", id])
        .assert()
        .code(3)
        .stdout(predicate::str::contains(".ids"));
    // The list is not written to the data dir, but every stored byte of a backup is checked
    // before a restore starts: a damaged backup is refused whole.
    kb().backup_dir(&e.repo)
        .data_dir(&e.target)
        .args(["restore", "--backup-id", id])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(".ids"));
    assert!(!e.target.exists());
    // An incremental cannot use the damaged list, so it reads the snapshot and counts right.
    let inc = create(
        &e.data,
        &e.repo,
        &["--incremental", "--reference", "latest"],
    );
    assert_eq!(inc["vector_count"], full["vector_count"]);
    fs::write(&list, &original).unwrap();
    kb().backup_dir(&e.repo)
        .args(["verify", id])
        .assert()
        .success();
}

#[test]
fn a_damaged_manifest_is_reported() {
    let e = env("v4-basic");
    let b = create(&e.data, &e.repo, &[]);
    let id = b["id"].as_str().unwrap();
    let mpath = e
        .repo
        .join("chains")
        .join(id)
        .join("manifests")
        .join(format!("{id}.manifest"));
    let mut bytes = fs::read(&mpath).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0x01;
    fs::write(&mpath, bytes).unwrap();
    let out = kb()
        .backup_dir(&e.repo)
        .args(["verify", "--all", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["unreadable"][0]["problem"]
        .as_str()
        .unwrap()
        .contains("checksum mismatch"));
    kb().backup_dir(&e.repo)
        .data_dir(&e.target)
        .args(["restore", "--backup-id", id])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("cannot be read"));
    assert!(!e.target.exists());
}

#[test]
fn incremental_of_unchanged_data_stores_nothing_new_and_restores() {
    let e = env("v4-basic");
    let full = create(&e.data, &e.repo, &[]);
    let inc = create(
        &e.data,
        &e.repo,
        &["--incremental", "--reference", "latest"],
    );
    assert_eq!(inc["backup_type"], "Incremental");
    assert_eq!(inc["parent_id"], full["id"]);
    assert_eq!(inc["chain_id"], full["id"]);
    assert_eq!(inc["stored_bytes"], 0);
    kb().backup_dir(&e.repo)
        .data_dir(&e.target)
        .args(["restore", "--backup-id", inc["id"].as_str().unwrap()])
        .assert()
        .success();
    assert_eq!(tree(&e.target), consistent_state_files(&e.data));
}

#[test]
fn a_locked_repository_is_refused_with_exit_4() {
    // A prune runs elsewhere (its lease, from another host, has not expired): a second prune
    // is refused; readers and creates of other chains are not its business.
    let e = env("v4-basic");
    create(&e.data, &e.repo, &[]);
    fs::create_dir_all(e.repo.join("locks")).unwrap();
    fs::write(
        e.repo.join("locks/prune.json"),
        br#"{"kind":"prune","host":"another-host","pid":1,"expires":18446744073709551615}"#,
    )
    .unwrap();
    kb().backup_dir(&e.repo)
        .arg("prune")
        .assert()
        .code(4)
        .stderr(predicate::str::contains("locked"));
    kb().backup_dir(&e.repo)
        .args(["verify", "--all"])
        .assert()
        .success();
    // A stale prune lease (its holder gone: this host, a pid that is not running) is replaced.
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let space = format!(
        "{}/{}",
        fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .unwrap()
            .trim(),
        fs::read_link("/proc/self/ns/pid").unwrap().display()
    );
    fs::write(
        e.repo.join("locks/prune.json"),
        format!(
            r#"{{"kind":"prune","host":"{}","pid_space":"{space}","pid":4000000,"expires":18446744073709551615}}"#,
            host.trim()
        ),
    )
    .unwrap();
    kb().backup_dir(&e.repo).arg("prune").assert().success();
    assert!(!e.repo.join("locks/prune.json").exists());
}

#[test]
fn restore_refuses_while_a_process_holds_data_dir_files_open() {
    let e = env("v4-basic");
    let b = create(&e.data, &e.repo, &[]);
    let other = env("v4-rotated");
    let wal = fs::read_dir(&other.data)
        .unwrap()
        .map(|d| d.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "wal"))
        .unwrap();
    let mut holder = std::process::Command::new("sh")
        .arg("-c")
        .arg("exec 3<\"$0\"; echo ready; exec sleep 30")
        .arg(&wal)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let before = tree(&other.data);
    let assert = kb()
        .backup_dir(&e.repo)
        .data_dir(&other.data)
        .args(["restore", "--backup-id", b["id"].as_str().unwrap()])
        .env("BACKUP_ALLOW_CLEAR", "true")
        .assert();
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert
        .code(4)
        .stderr(predicate::str::contains(format!("process {}", holder.id())))
        .stderr(predicate::str::contains("hint: stop the KyroDB server"));
    assert_eq!(tree(&other.data), before);
}

#[test]
fn repository_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let e = env("v4-basic");
    create(&e.data, &e.repo, &[]);
    for p in walk_all(&e.repo) {
        let m = fs::metadata(&p).unwrap();
        let want = if m.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(m.permissions().mode() & 0o777, want, "{p:?}");
    }
}

#[test]
fn check_reports_the_newest_backup_age() {
    let e = env("v4-basic");
    fs::create_dir_all(&e.repo).unwrap();
    kb().backup_dir(&e.repo)
        .args(["check", "--max-age", "26h"])
        .assert()
        .code(3)
        .stdout(predicate::str::contains("ALERT: no backup"));
    let b = create(&e.data, &e.repo, &[]);
    let out = kb()
        .backup_dir(&e.repo)
        .args(["check", "--max-age", "26h", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["newest_id"], b["id"]);
    assert!(v["age_seconds"].as_u64().unwrap() < 600);
}

#[test]
fn a_missing_data_dir_and_a_non_kyrodb_dir_fail_with_a_hint() {
    let e = env("v4-basic");
    kb().backup_dir(&e.repo)
        .data_dir(e.data.join("nope"))
        .arg("create")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("does not exist"))
        .stderr(predicate::str::contains("hint:"));
    fs::remove_file(e.data.join("MANIFEST")).unwrap();
    kb().backup_dir(&e.repo)
        .data_dir(&e.data)
        .arg("create")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no MANIFEST"));
}

#[test]
fn an_incremental_against_a_missing_reference_suggests_a_new_full_backup() {
    let e = env("v4-basic");
    create(&e.data, &e.repo, &[]);
    kb().backup_dir(&e.repo)
        .data_dir(&e.data)
        .args(["create", "--incremental", "--reference", "0123abcd-0000"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no backup matches"))
        .stderr(predicate::str::contains("hint: create a new full backup"));
}

#[test]
fn an_incremental_repairs_chain_chunks_that_went_missing_or_were_truncated() {
    let e = env("v4-rotated");
    let full = create(&e.data, &e.repo, &[]);
    let chunks = chunk_files(&e.repo);
    fs::remove_file(&chunks[0]).unwrap();
    let bytes = fs::read(&chunks[1]).unwrap();
    fs::write(&chunks[1], &bytes[..bytes.len() / 2]).unwrap();
    kb().backup_dir(&e.repo)
        .args(["verify", full["id"].as_str().unwrap()])
        .assert()
        .code(3);
    let inc = create(
        &e.data,
        &e.repo,
        &["--incremental", "--reference", "latest"],
    );
    assert!(
        inc["stored_bytes"].as_u64().unwrap() > 0,
        "the two chunks were written again"
    );
    kb().backup_dir(&e.repo)
        .args(["verify", "--all"])
        .assert()
        .success();
}

#[test]
fn verbose_adds_detail_and_quiet_silences_notes() {
    let e = env("v4-rotated");
    kb().arg("-v")
        .backup_dir(&e.repo)
        .data_dir(&e.data)
        .arg("create")
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "opened every file the MANIFEST names",
        ))
        .stderr(predicate::str::contains("manifest committed"));
    // A leftover temporary file is cleaned with a note; -q keeps stderr empty.
    let chain = fs::read_dir(e.repo.join("chains"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    fs::write(
        chain.join("manifests").join("x.manifest.kbtmp-1-0"),
        b"partial",
    )
    .unwrap();
    kb().arg("-q")
        .backup_dir(&e.repo)
        .data_dir(&e.data)
        .arg("create")
        .assert()
        .success()
        .stderr("");
    kb().args(["-q", "-v", "list"]).assert().code(2);
}

#[test]
fn quiet_runs_print_nothing_on_success_but_json_and_failures_still_speak() {
    let e = env("v4-rotated");
    let silent = |c: &mut assert_cmd::Command| {
        let out = c.arg("-q").output().unwrap();
        assert!(
            out.status.success(),
            "{c:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "{c:?} printed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // The guide's cron lines, and the rest of the commands a script runs.
    silent(
        kb().data_dir(&e.data)
            .backup_dir(&e.repo)
            .args(["create", "--description", "nightly"]),
    );
    silent(kb().data_dir(&e.data).backup_dir(&e.repo).args([
        "create",
        "--incremental",
        "--reference",
        "latest",
    ]));
    silent(kb().backup_dir(&e.repo).args(["verify", "--all"]));
    silent(
        kb().backup_dir(&e.repo)
            .args(["prune", "--keep-daily", "30", "--min-age-days", "1"]),
    );
    silent(kb().backup_dir(&e.repo).args(["check", "--max-age", "26h"]));
    silent(kb().backup_dir(&e.repo).arg("list"));
    let id = create(&e.data, &e.repo, &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    silent(kb().backup_dir(&e.repo).args(["show", &id]));
    silent(
        kb().backup_dir(&e.repo)
            .data_dir(&e.target)
            .args(["restore", "--backup-id", &id]),
    );
    // JSON was asked for: it is still printed.
    let out = kb()
        .backup_dir(&e.repo)
        .args(["-q", "check", "--max-age", "26h", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["ok"],
        true
    );
    // A failure still says why, and a failed check still says what it found.
    kb().backup_dir(&e.repo)
        .data_dir(&e.target)
        .args(["-q", "restore", "--backup-id", &id])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("is not empty"));
    let empty = e.target.with_file_name("empty");
    fs::create_dir(&empty).unwrap();
    kb().backup_dir(&empty)
        .args(["-q", "check", "--max-age", "26h"])
        .assert()
        .code(3)
        .stdout(predicate::str::contains("ALERT: no backup"));
}

#[test]
fn a_reader_that_stops_early_is_not_a_crash() {
    // `kyrodb_backup list --format json | head -1`, or `| grep -m1 id`: the reader goes away
    // while the tool still prints. (Before this was handled, the first print panicked with
    // "failed printing to stdout: Broken pipe" and exit 101.)
    let e = env("v4-basic");
    for _ in 0..3 {
        create(&e.data, &e.repo, &[]);
    }
    for args in [
        &["list", "--format", "json"][..],
        &["list"],
        &["verify", "--all"],
    ] {
        let mut child = kb_process()
            .backup_dir(&e.repo)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Closed before the tool writes (it reads the repository first): every write fails.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            out.status.code().is_some_and(|c| c < 101),
            "{args:?}: {:?}",
            out.status
        );
    }
}

#[test]
fn create_dry_run_writes_nothing_and_says_what_the_backup_would_add() {
    let e = env("v4-rotated");
    let dry = |extra: &[&str]| -> serde_json::Value {
        let out = kb()
            .data_dir(&e.data)
            .backup_dir(&e.repo)
            .args(["create", "--dry-run", "--format", "json"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // No repository yet: nothing is made, not even the directory.
    let would = dry(&[]);
    assert_eq!(would["dry_run"], true);
    assert!(!e.repo.exists());
    // The real create adds what the dry run said (the manifest's digits aside).
    let made = create(&e.data, &e.repo, &[]);
    let id = made["id"].as_str().unwrap();
    let manifest = fs::metadata(e.repo.join(format!("chains/{id}/manifests/{id}.manifest")))
        .unwrap()
        .len();
    let added = made["stored_bytes"].as_u64().unwrap() + manifest;
    assert!(would["stored_bytes"].as_u64().unwrap().abs_diff(added) < 64);
    // An incremental of unchanged data would add only its manifest; nothing is written.
    let before = tree(&e.repo);
    let inc = dry(&["--incremental", "--reference", "latest"]);
    assert!(inc["stored_bytes"].as_u64().unwrap() < manifest + 64);
    assert_eq!(tree(&e.repo), before);
    assert!(
        made.get("dry_run").is_none(),
        "a real create's JSON is unchanged"
    );
}

#[test]
fn a_repository_at_a_bare_relative_path_is_made_in_the_working_directory() {
    let e = env("v4-basic");
    kb().current_dir(e.repo.parent().unwrap())
        .data_dir(&e.data)
        .args(["--backup-dir", "relative-repo", "create"])
        .assert()
        .success();
    assert!(e
        .repo
        .parent()
        .unwrap()
        .join("relative-repo/kyrodb-backup.json")
        .is_file());
}
