//! Runs at the same time either serialise through the repository lock or one is refused with
//! exit 4; nothing is corrupted. Permissions hold whatever the umask.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Stdio};

use crate::support::*;

fn spawn(args: &[&str], repo: &Path, data: &Path, allow_clear: bool) -> Child {
    let mut c = kb_process();
    c.backup_dir(repo).data_dir(data).args(args);
    if allow_clear {
        c.env("BACKUP_ALLOW_CLEAR", "true");
    }
    c.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn code(c: Child) -> i32 {
    let out = c.wait_with_output().unwrap();
    let code = out.status.code().unwrap();
    if code != 0 && code != 4 {
        eprintln!("exit {code}: {}", String::from_utf8_lossy(&out.stderr));
    }
    code
}

#[test]
fn creates_restores_and_prunes_at_once_serialise_or_refuse() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("backups");
    copy_fixture_data("v4-rotated", &data);
    let first = create(&data, &repo, &[]);
    let id = first["id"].as_str().unwrap().to_string();
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for round in 0..12 {
        let target = tmp.path().join(format!("t{round}"));
        let (a, b) = match round % 3 {
            0 => (
                spawn(&["create"], &repo, &data, false),
                spawn(&["create"], &repo, &data, false),
            ),
            1 => (
                spawn(
                    &["create", "--incremental", "--reference", "latest"],
                    &repo,
                    &data,
                    false,
                ),
                spawn(&["restore", "--backup-id", &id], &repo, &target, true),
            ),
            _ => (
                // Keeps everything (the restore's backup too) but still locks and collects.
                spawn(&["prune", "--min-age-days", "1"], &repo, &data, false),
                spawn(&["restore", "--backup-id", &id], &repo, &target, true),
            ),
        };
        let (ca, cb) = (code(a), code(b));
        for c in [ca, cb] {
            assert!(c == 0 || c == 4, "round {round}: exit {c}");
        }
        assert!(ca == 0 || cb == 0, "round {round}: one of the two ran");
        *outcomes.entry(format!("{ca}/{cb}")).or_default() += 1;
        if cb == 0 && round % 3 != 0 {
            assert_eq!(
                tree(&target),
                consistent_state_files(&data),
                "round {round}: restore completed"
            );
        }
        kb().backup_dir(&repo)
            .args(["verify", "--all"])
            .assert()
            .success();
    }
    eprintln!("concurrent pairs (exit codes): {outcomes:?}");
}

/// `dir` and everything under it: (path, permission bits, is a directory).
fn modes_under(dir: &Path) -> Vec<(String, u32, bool)> {
    walk_all(dir)
        .into_iter()
        .map(|p| {
            let m = fs::metadata(&p).unwrap();
            (
                p.display().to_string(),
                m.permissions().mode() & 0o777,
                m.is_dir(),
            )
        })
        .collect()
}

fn with_umask(umask: &str, args: &[&str], repo: &Path, data: &Path) {
    let bin = assert_cmd::cargo::cargo_bin("kyrodb_backup");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
        .arg(bin)
        .backup_dir(repo)
        .data_dir(data)
        .args(args)
        .env_remove("BACKUP_ALLOW_CLEAR")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn repository_permissions_hold_whatever_the_umask_and_restores_get_the_engines() {
    for umask in ["000", "022", "077"] {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let repo = tmp.path().join("backups");
        copy_fixture_data("v4-basic", &data);
        with_umask(umask, &["create"], &repo, &data);
        with_umask(
            umask,
            &["create", "--incremental", "--reference", "latest"],
            &repo,
            &data,
        );
        for (path, mode, is_dir) in modes_under(&repo) {
            assert_eq!(
                mode,
                if is_dir { 0o700 } else { 0o600 },
                "umask {umask}: {path}"
            );
        }
        // Restored files get what the engine's own files get: the default modes under the umask.
        let list: serde_json::Value = serde_json::from_slice(
            &kb()
                .backup_dir(&repo)
                .args(["list", "--format", "json"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let target = tmp.path().join("restored");
        with_umask(
            umask,
            &["restore", "--backup-id", list[0]["id"].as_str().unwrap()],
            &repo,
            &target,
        );
        let mask = u32::from_str_radix(umask, 8).unwrap();
        for (path, mode, is_dir) in modes_under(&target) {
            let want = if is_dir { 0o777 & !mask } else { 0o666 & !mask };
            assert_eq!(mode, want, "umask {umask}: {path}");
        }
    }
}
