//! Pins the text and JSON the CLI prints, and the hint of each documented failure (insta).
//! Ids, times, hashes and temporary paths are replaced by placeholders.

use std::fs;

use crate::support::*;

fn settings(tmp: &std::path::Path) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(&regex_escape(&tmp.display().to_string()), "[TMP]");
    s.add_filter(
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "[ID]",
    );
    s.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "[TIME]");
    // Retention reasons name the periods of today's clock.
    s.add_filter(r"\d{4}-\d\d-\d\dT\d\d\b", "[HOUR]");
    s.add_filter(r"\d{4}-W\d\d", "[WEEK]");
    s.add_filter(r"\d{4}-\d\d-\d\d\b", "[DAY]");
    s.add_filter(r"\b\d{4}-\d\d\b", "[MONTH]");
    s.add_filter(r#""(age_seconds|newest_timestamp)": \d+"#, r#""$1": [N]"#);
    s.add_filter(r"\(\d+\.\d+ s\)", "([SECONDS] s)");
    s.add_filter(r"\.\.=1[7-9]\d{8}", "..=[NOW-1]");
    s.add_filter(r#""to": 1[7-9]\d{8}"#, r#""to": [NOW-1]"#);
    s.add_filter(
        r#""(timestamp|recovered_to)": 1[7-9]\d{8}"#,
        r#""$1": [NOW]"#,
    );
    s.add_filter(r"\(1[7-9]\d{8}\)", "([NOW])");
    s.add_filter(r"[0-9a-f]{32}", "[HASH]");
    s.add_filter(r"previous-\d+", "previous-[NOW]");
    s.add_filter(r"is \d+s old", "is [AGE] old");
    s.add_filter(r"process \d+ \(\w+\)", "process [PID] ([CMD])");
    s
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if "\\.+*?()|[]{}^$".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

fn run(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = kb().args(args).envs(env.iter().copied()).output().unwrap();
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, step by step, each output pinned
fn output_of_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("backups");
    copy_fixture_data("v4-rotated", &data);
    let d = data.to_str().unwrap();
    let r = repo.to_str().unwrap();
    let _guard = settings(tmp.path()).bind_to_scope();

    insta::assert_snapshot!(
        "create_text",
        run(
            &[
                "--data-dir",
                d,
                "--backup-dir",
                r,
                "create",
                "--description",
                "nightly"
            ],
            &[]
        )
    );
    insta::assert_snapshot!(
        "create_json",
        run(
            &[
                "--data-dir",
                d,
                "--backup-dir",
                r,
                "create",
                "--incremental",
                "--reference",
                "latest",
                "--format",
                "json"
            ],
            &[]
        )
    );
    let list = kb()
        .backup_dir(r)
        .args(["list", "--format", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let full = v[1]["id"].as_str().unwrap().to_string();
    // `list` defaults to a table: boxed with the cli-tools feature, plain text without.
    let mut table = insta::Settings::clone_current();
    if cfg!(feature = "cli-tools") {
        table.set_snapshot_suffix("cli-tools");
    }
    table.bind(|| {
        insta::assert_snapshot!("list_text", run(&["--backup-dir", r, "list"], &[]));
    });
    insta::assert_snapshot!("show_text", run(&["--backup-dir", r, "show", &full], &[]));
    insta::assert_snapshot!(
        "verify_text",
        run(&["--backup-dir", r, "verify", &full[..8]], &[])
    );
    let target = tmp.path().join("restored");
    let t = target.to_str().unwrap();
    insta::assert_snapshot!(
        "restore_json",
        run(
            &[
                "--backup-dir",
                r,
                "--data-dir",
                t,
                "restore",
                "--backup-id",
                &full,
                "--format",
                "json"
            ],
            &[]
        )
    );
    insta::assert_snapshot!(
        "restore_refused",
        run(
            &[
                "--backup-dir",
                r,
                "--data-dir",
                t,
                "restore",
                "--backup-id",
                &full
            ],
            &[]
        )
    );
    insta::assert_snapshot!(
        "restore_text_keep_previous",
        run(
            &[
                "--backup-dir",
                r,
                "--data-dir",
                t,
                "restore",
                "--backup-id",
                &full,
                "--keep-previous"
            ],
            &[("BACKUP_ALLOW_CLEAR", "true")]
        )
    );
    insta::assert_snapshot!(
        "check_text",
        run(&["--backup-dir", r, "check", "--max-age", "1d"], &[])
    );
}

#[test]
fn hints_of_documented_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("backups");
    let r = repo.to_str().unwrap();
    let _guard = settings(tmp.path()).bind_to_scope();
    insta::assert_snapshot!("no_repository", run(&["--backup-dir", r, "list"], &[]));
    insta::assert_snapshot!(
        "not_a_data_dir",
        run(
            &[
                "--backup-dir",
                r,
                "--data-dir",
                tmp.path().to_str().unwrap(),
                "create"
            ],
            &[]
        )
    );
    std::fs::create_dir_all(&repo).unwrap();
    insta::assert_snapshot!(
        "reference_latest_without_backups",
        run(
            &[
                "--backup-dir",
                r,
                "--data-dir",
                tmp.path().to_str().unwrap(),
                "create",
                "--incremental",
                "--reference",
                "latest"
            ],
            &[]
        )
    );
    insta::assert_snapshot!(
        "unknown_id",
        run(&["--backup-dir", r, "show", "deadbeef"], &[])
    );
    insta::assert_snapshot!("short_id", run(&["--backup-dir", r, "show", "dead"], &[]));
    insta::assert_snapshot!(
        "check_no_backup",
        run(&["--backup-dir", r, "check", "--max-age", "26h"], &[])
    );
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, step by step, each output pinned
fn output_of_prune_migrate_golden_and_json_views() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("backups");
    copy_fixture_data("v4-basic", &data);
    let d = data.to_str().unwrap();
    let r = repo.to_str().unwrap();
    let _guard = settings(tmp.path()).bind_to_scope();
    create(&data, &repo, &[]);
    let id = create(&data, &repo, &["--incremental", "--reference", "latest"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    insta::assert_snapshot!(
        "prune_dry_run_text",
        run(&["--backup-dir", r, "prune", "--dry-run"], &[])
    );
    insta::assert_snapshot!(
        "prune_json",
        run(
            &[
                "--backup-dir",
                r,
                "prune",
                "--format",
                "json",
                "--keep-hourly",
                "0",
                "--keep-daily",
                "0",
                "--keep-weekly",
                "0",
                "--keep-monthly",
                "0"
            ],
            &[]
        )
    );
    insta::assert_snapshot!(
        "show_json",
        run(&["--backup-dir", r, "show", &id, "--format", "json"], &[])
    );
    insta::assert_snapshot!(
        "verify_json",
        run(&["--backup-dir", r, "verify", "--format", "json"], &[])
    );
    insta::assert_snapshot!(
        "check_json",
        run(
            &[
                "--backup-dir",
                r,
                "check",
                "--max-age",
                "1000d",
                "--format",
                "json"
            ],
            &[]
        )
    );
    let golden = tmp.path().join("g.json");
    let g = golden.to_str().unwrap();
    insta::assert_snapshot!(
        "golden_create_text",
        run(
            &[
                "--data-dir",
                d,
                "golden",
                "create",
                "--queries",
                "4",
                "--k",
                "3",
                "--out",
                g
            ],
            &[]
        )
    );
    insta::assert_snapshot!(
        "golden_check_text",
        run(&["--data-dir", d, "golden", "check", g], &[])
    );
    insta::assert_snapshot!(
        "golden_check_json",
        run(
            &["--data-dir", d, "golden", "check", g, "--format", "json"],
            &[]
        )
    );
    insta::assert_snapshot!(
        "list_json",
        run(&["--backup-dir", r, "list", "--format", "json"], &[])
    );
    let legacy = tmp.path().join("legacy");
    legacy_dir(&legacy, "snapshot_v2.snap", "wal_v2.wal");
    let l = legacy.to_str().unwrap();
    insta::assert_snapshot!(
        "migrate_dry_run_json",
        run(
            &["--data-dir", l, "migrate", "--dry-run", "--format", "json"],
            &[]
        )
    );
    insta::assert_snapshot!(
        "migrate_dry_run_text",
        run(
            &[
                "--data-dir",
                legacy.to_str().unwrap(),
                "migrate",
                "--dry-run"
            ],
            &[]
        )
    );
}

#[test]
fn hints_of_refusals_and_integrity_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("backups");
    copy_fixture_data("v4-rotated", &data);
    let r = repo.to_str().unwrap();
    let _guard = settings(tmp.path()).bind_to_scope();
    let id = create(&data, &repo, &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let target = tmp.path().join("t");
    let t = target.to_str().unwrap();
    insta::assert_snapshot!(
        "pitr_not_recoverable",
        run(
            &[
                "--backup-dir",
                r,
                "--data-dir",
                t,
                "restore",
                "--point-in-time",
                "1795529600"
            ],
            &[]
        )
    );
    insta::assert_snapshot!(
        "distance_conflict",
        run(
            &[
                "--backup-dir",
                r,
                "--data-dir",
                t,
                "restore",
                "--backup-id",
                &id,
                "--distance",
                "cosine"
            ],
            &[]
        )
    );
    fs::create_dir_all(repo.join("locks")).unwrap();
    fs::write(
        repo.join("locks/prune.json"),
        br#"{"kind":"prune","host":"another-host","pid":7,"expires":18446744073709551615}"#,
    )
    .unwrap();
    insta::assert_snapshot!("locked", run(&["--backup-dir", r, "prune"], &[]));
    // Chunks are named by content, so the smallest name is the same chunk on every run.
    let first = |dir: std::path::PathBuf| {
        let mut v: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v.remove(0)
    };
    let chunk = first(first(repo.join("chains").join(&id).join("chunks")));
    fs::write(&chunk, b"KBCK garbage").unwrap();
    insta::assert_snapshot!(
        "damaged_restore",
        run(
            &[
                "--backup-dir",
                r,
                "--data-dir",
                t,
                "restore",
                "--backup-id",
                &id
            ],
            &[]
        )
    );
}

/// Timings and rates vary between runs: placeholders for them, on top of [`settings`].
fn drill_settings(tmp: &std::path::Path) -> insta::Settings {
    let mut s = settings(tmp);
    s.add_filter(r"\d+\.\d\d s\b", "[S] s");
    s.add_filter(r"at \d+ MB/s", "at [R] MB/s");
    s.add_filter(r"\(\d+ MB/s\)", "([R] MB/s)");
    s.add_filter(
        r#""(restore_seconds|check_seconds|golden_seconds|cleanup_seconds|total_seconds|restore_mb_per_s)": [0-9.e-]+"#,
        r#""$1": [X]"#,
    );
    s.add_filter(r"kyrodb-drill-[0-9a-f]{8}", "kyrodb-drill-[D]");
    s.add_filter(r"/\d{10}-\d{9}-", "/[NOW]-[NS]-");
    s.add_filter(r"ran \d+s ago", "ran [AGE] ago");
    s.add_filter(r"ran \d+d \d+h ago", "ran [AGE] ago");
    s
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, step by step, each output pinned
fn output_of_golden_backups_drills_config_and_check() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("backups");
    let scratch = tmp.path().join("scratch");
    copy_fixture_data("v4-basic", &data);
    let (d, r, s) = (
        data.to_str().unwrap(),
        repo.to_str().unwrap(),
        scratch.to_str().unwrap(),
    );
    // A command on this repository and data dir.
    let on = |args: &[&str]| run(&[&["--backup-dir", r, "--data-dir", d], args].concat(), &[]);
    let _guard = drill_settings(tmp.path()).bind_to_scope();
    insta::assert_snapshot!(
        "config_set",
        on(&["create", "-q"])
            + &on(&["config", "--golden", "5"])
            + &on(&["config", "--format", "json"])
    );
    insta::assert_snapshot!("drill_none_yet", on(&["check", "--max-drill-age", "35d"]));
    insta::assert_snapshot!(
        "create_golden_text",
        on(&["create", "--golden-k", "3", "--golden", "4"])
    );
    insta::assert_snapshot!("drill_text", on(&["drill", "--scratch", s]));
    insta::assert_snapshot!(
        "drill_json",
        on(&["drill", "--scratch", s, "--format", "json"])
    );
    insta::assert_snapshot!(
        "check_drill",
        on(&["check", "--max-drill-age", "35d"])
            + &on(&["check", "--max-drill-age", "35d", "--format", "json"])
    );
    let id = {
        let out = kb()
            .args(["--backup-dir", r, "list", "--format", "json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["id"].as_str().unwrap().to_string()
    };
    insta::assert_snapshot!(
        "list_and_show_after_drills",
        on(&["list", "--format", "text"]) + &on(&["show", &id])
    );
    let inside = data.join("drill");
    insta::assert_snapshot!(
        "drill_scratch_inside_data_dir",
        on(&["drill", "--scratch", inside.to_str().unwrap()])
    );
    assert!(!inside.exists(), "nothing made inside the live data dir");
}
