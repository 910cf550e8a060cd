//! Runs every shell block and every cron line of `docs/guide.md`, so the guide cannot drift
//! from the tool.
//!
//! Each ```sh block and each command of a ```crontab block runs in a fresh sandbox:
//! - `/var/lib/kyrodb/data` is a copy of the `v4-basic` fixture, `/var/lib/kyrodb/legacy` a
//!   legacy data dir (`LegacySnapshotV2` snapshot, W2 WAL, plain-text MANIFEST);
//! - `/backups` is a repository with a full and an incremental backup of the data dir;
//! - `golden.json` (of the data dir) and `golden-legacy.json` (of the legacy dir, euclidean)
//!   are in the working directory;
//! - `<ID>` is the id of the newest backup when the line runs; `systemctl` is a no-op and
//!   `aws s3 sync` copies between the sandbox and a local stand-in for the bucket;
//! - lines that build the tool (`cargo build ...`) are skipped: the test runs the binary cargo
//!   built for it.
//!
//! A block passes when bash runs it with `set -euo pipefail` and exits 0.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::*;

fn blocks(markdown: &str, lang: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in markdown.lines().enumerate() {
        let t = line.trim_start();
        match &mut current {
            None if t == format!("```{lang}") => current = Some((n + 1, String::new())),
            Some(_) if t == "```" => out.push(current.take().unwrap()),
            Some((_, body)) => {
                body.push_str(t);
                body.push('\n');
            }
            None => {}
        }
    }
    out
}

fn write_exe(path: &Path, body: &str) {
    fs::write(path, body).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

struct Sandbox {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
}

fn sandbox() -> Sandbox {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let data = root.join("var/lib/kyrodb/data");
    copy_fixture_data("v4-basic", &data);
    let legacy = root.join("var/lib/kyrodb/legacy");
    legacy_dir(&legacy, "snapshot_v2.snap", "wal_v2.wal");
    let backups = root.join("backups");
    create(&data, &backups, &[]);
    create(&data, &backups, &["--incremental", "--reference", "latest"]);
    for (dir, out, extra) in [
        (&data, "golden.json", vec![]),
        (
            &legacy,
            "golden-legacy.json",
            vec!["--distance", "euclidean"],
        ),
    ] {
        kb().arg("--data-dir")
            .arg(dir)
            .args(["golden", "create", "--queries", "5", "--k", "3", "--out"])
            .arg(root.join(out))
            .args(extra)
            .assert()
            .success();
    }
    let bin = root.join("bin");
    fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(
        assert_cmd::cargo::cargo_bin("kyrodb_backup"),
        bin.join("kyrodb_backup"),
    )
    .unwrap();
    write_exe(&bin.join("systemctl"), "#!/bin/sh\necho \"systemctl $*\"\n");
    write_exe(
        &bin.join("aws"),
        &format!(
            "#!/bin/sh\n# aws s3 sync SRC DST, with s3://BUCKET/PATH kept under {s3}\n\
             [ \"$1 $2\" = \"s3 sync\" ] || exit 64\n\
             map() {{ case \"$1\" in s3://*) echo \"{s3}/${{1#s3://}}\";; *) echo \"$1\";; esac; }}\n\
             src=$(map \"$3\"); dst=$(map \"$4\")\nmkdir -p \"$src\" \"$dst\" && cp -a \"$src/.\" \"$dst/\"\n",
            s3 = root.join("s3").display()
        ),
    );
    Sandbox { _tmp: tmp, root }
}

fn localise(script: &str, s: &Sandbox) -> String {
    let r = s.root.display().to_string();
    script
        .lines()
        .filter(|l| !l.trim_start().starts_with("cargo build"))
        .map(|l| {
            l.replace("/var/lib/kyrodb/", &format!("{r}/var/lib/kyrodb/"))
                .replace(" /backups", &format!(" {r}/backups"))
                .replace(
                    "<ID>",
                    &format!("$(kyrodb_backup list --backup-dir {r}/backups --format json | jq -r '.[0].id')"),
                )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn run(script: &str, s: &Sandbox) -> std::process::Output {
    let path = format!(
        "{}:{}",
        s.root.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(&s.root)
        .env("PATH", path)
        .env_remove("KYRODB_DATA_DIR")
        .env_remove("KYRODB_BACKUP_DIR")
        .env_remove("BACKUP_ALLOW_CLEAR")
        .output()
        .unwrap()
}

#[test]
fn every_shell_block_and_cron_line_of_the_guide_runs() {
    let guide =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/guide.md")).unwrap();
    let sh = blocks(&guide, "sh");
    let cron = blocks(&guide, "crontab");
    assert!(
        sh.len() >= 20,
        "the guide's shell blocks were found ({})",
        sh.len()
    );
    assert!(!cron.is_empty(), "the guide has a crontab");
    let mut ran = 0;
    for (line, block) in &sh {
        let s = sandbox();
        let out = run(&localise(block, &s), &s);
        assert!(
            out.status.success(),
            "docs/guide.md block at line {line} failed ({}):\n{block}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ran += 1;
    }
    for (line, block) in &cron {
        for entry in block
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        {
            // Five schedule fields, then the command as cron's sh runs it (`\%` is `%`).
            let command: String = entry.splitn(6, ' ').nth(5).unwrap().replace("\\%", "%");
            let s = sandbox();
            let out = run(&localise(&command, &s), &s);
            assert!(
                out.status.success(),
                "docs/guide.md crontab at line {line}: {entry}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            ran += 1;
        }
    }
    eprintln!("docs: {ran} blocks and cron lines ran");
}
