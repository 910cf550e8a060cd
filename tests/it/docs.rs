//! Runs every shell block and every cron line of `docs/guide.md`, so the guide cannot drift
//! from the tool, and parses every JSON block of it.
//!
//! Each ```sh block and each command of a ```crontab block runs in a fresh sandbox (a copy of
//! one built at the start of the test):
//! - `/var/lib/kyrodb/data` is a copy of the `v4-basic` fixture, `/var/lib/kyrodb/legacy` a
//!   legacy data dir (`LegacySnapshotV2` snapshot, W2 WAL, plain-text MANIFEST);
//! - `/backups` is a repository with a full and an incremental backup of the data dir;
//! - `golden.json` (of the data dir) and `golden-legacy.json` (of the legacy dir, euclidean)
//!   are in the working directory;
//! - a block that names an `s3://` URL gets a real S3 server (moto; see [`Bucket`]) holding
//!   only the bucket `kyrodb-backups`, whose `prod/` is a copy of `/backups` made object by
//!   object (as any copying tool would), and runs with the server's endpoint and credentials
//!   in `AWS_*` and `KYRODB_BACKUP_S3_RETRY_SECS=5`. Every block runs with `HOME` in the
//!   sandbox and no other `AWS_*` variable, so the machine's AWS settings never reach it;
//! - `<ID>` is the id of the newest backup, when the line runs, in the repository the line
//!   reads: its `--from`, else its `--backup-dir`, else the default (read from
//!   `list --format json` with grep and cut, so the harness needs no jq); `systemctl` is a
//!   no-op;
//! - `jq` is a recorder that keeps the JSON piped into it and its arguments, then runs the
//!   machine's real jq if there is one (see [`JQ`]);
//! - lines that build the tool (`cargo build ...`) are skipped: the test runs the binary cargo
//!   built for it.
//!
//! A block passes when bash runs it with `set -euo pipefail` and exits 0, and every `| jq`
//! in it was reached, was fed one JSON document, and its filter finds what it names in that
//! document (checked here with `serde_json`, jq or not). A block fenced as `json` (the guide's
//! IAM policies) passes when it is one JSON document.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::s3::S3Server;
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

/// The sandbox every block starts from, built once per test (its two backups and two golden
/// files take about half a second) and copied for each block by [`sandbox`].
fn template() -> Sandbox {
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
        kb().data_dir(dir)
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
    write_exe(&bin.join("jq"), JQ);
    fs::create_dir_all(root.join("jq-record")).unwrap();
    Sandbox { _tmp: tmp, root }
}

/// A fresh sandbox: a copy of `template` (`cp -a`: modes, times and the link to the binary
/// kept; the data dir's files get new inodes, so an incremental in a block reads them again
/// rather than taking them over from its reference).
fn sandbox(template: &Sandbox) -> Sandbox {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(template.root.join("."))
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success(), "cp -a of the sandbox template: {status}");
    Sandbox { _tmp: tmp, root }
}

/// The bucket the guide's `s3://kyrodb-backups/...` URLs name.
const BUCKET: &str = "kyrodb-backups";

/// The S3 server of one test: moto, started in the background when the test starts (it takes
/// about a second, which the first sandboxes hide) and waited for by the first block that
/// names an `s3://` URL.
struct Bucket {
    starting: Option<std::thread::JoinHandle<S3Server>>,
    server: Option<S3Server>,
}

impl Bucket {
    fn start() -> Self {
        Self {
            starting: Some(std::thread::spawn(S3Server::start)),
            server: None,
        }
    }

    /// Empties the server (moto's reset), makes the bucket [`BUCKET`], copies the sandbox's
    /// repository into its `prod/` object by object, and returns the environment that points
    /// the tool at it.
    fn holding_copy_of(&mut self, repo: &Path) -> Vec<(String, String)> {
        if let Some(starting) = self.starting.take() {
            let server = starting
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            self.server = Some(server);
        }
        let server = self.server.as_ref().expect("the server was started");
        let reset = server.raw("POST", "/moto-api/reset", &[], &[]);
        assert_eq!(reset.status(), 200, "moto reset: {}", reset.text());
        server.create_bucket(BUCKET);
        for file in walk(repo) {
            let key = format!("prod/{}", file.strip_prefix(repo).unwrap().display());
            server.put(BUCKET, &key, &fs::read(&file).unwrap());
        }
        let mut env = server.env();
        env.push(("KYRODB_BACKUP_S3_RETRY_SECS".into(), "5".into()));
        env
    }
}

/// The sandbox's `jq`: it records its arguments and the JSON piped into it (for
/// [`check_jq_uses`]), then hands that JSON to the machine's real jq when there is one, so a
/// guide line prints what it prints for an operator. Without jq (no jq on the test machine's
/// PATH) nothing runs the filter: the pipeline before `| jq` still runs, its output is
/// recorded, and [`check_jq_uses`] checks that it is one JSON document in which the filter's
/// path exists; the line then prints nothing. No guide line uses jq's output as input to
/// another command, so the rest of the block runs the same either way.
const JQ: &str = r#"#!/bin/sh
f="$KB_JQ_RECORD/$$"
printf '%s\n' "$@" > "$f.args"
if [ -n "$KB_REAL_JQ" ]; then
    tee "$f.json" | "$KB_REAL_JQ" "$@"
else
    cat > "$f.json"
fi
"#;

/// The machine's jq, if it has one on PATH.
fn real_jq() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("jq"))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Checks every `| jq FILTER` of `script` after it ran: each was reached (one recording per
/// use), was fed exactly one JSON document, and `FILTER` finds what it names in it. Returns
/// how many were checked.
fn check_jq_uses(script: &str, s: &Sandbox, what: &str) -> usize {
    let uses = script
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.matches("| jq ").count())
        .sum::<usize>();
    let dir = s.root.join("jq-record");
    let mut recorded: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "args"))
        .collect();
    recorded.sort();
    assert_eq!(
        recorded.len(),
        uses,
        "docs/guide.md {what}: {uses} uses of jq, {} ran",
        recorded.len()
    );
    for args in &recorded {
        let args_text = fs::read_to_string(args).unwrap();
        let filter = args_text
            .lines()
            .find(|a| !a.starts_with('-'))
            .unwrap_or_else(|| panic!("docs/guide.md {what}: jq without a filter"));
        let input = fs::read(args.with_extension("json")).unwrap();
        let doc: Value = serde_json::from_slice(&input).unwrap_or_else(|e| {
            panic!(
                "docs/guide.md {what}: jq {filter} was fed no JSON document ({e}):\n{}",
                String::from_utf8_lossy(&input)
            )
        });
        if let Err(e) = jq_eval(filter, doc) {
            panic!("docs/guide.md {what}: jq {filter}: {e}");
        }
    }
    uses
}

/// One step of a jq path.
enum Step {
    /// `.name`
    Key(String),
    /// `[n]`
    Index(usize),
    /// `[]`
    Each,
}

/// Evaluates the jq filters the guide uses, stricter than jq: stages joined by `|`, each a path
/// (`.`, `.a`, `.a.b`, `.[0]`, `.a[]`, ...) or an object of keys (`{id, reasons}`), where
/// every key and index must exist. A filter of another form is an error: the guide gained a
/// filter this check does not understand (extend it).
fn jq_eval(filter: &str, input: Value) -> Result<Vec<Value>, String> {
    let mut values = vec![input];
    for stage in filter.split('|').map(str::trim) {
        if let Some(keys) = stage.strip_prefix('{').and_then(|k| k.strip_suffix('}')) {
            let keys: Vec<&str> = keys.split(',').map(str::trim).collect();
            values = values
                .into_iter()
                .map(|v| {
                    keys.iter()
                        .map(|k| match v.get(*k) {
                            Some(x) => Ok(((*k).to_string(), x.clone())),
                            None => Err(format!("no key {k:?} in {v}")),
                        })
                        .collect::<Result<serde_json::Map<_, _>, _>>()
                        .map(Value::Object)
                })
                .collect::<Result<_, _>>()?;
            continue;
        }
        for step in parse_path(stage)? {
            let mut next = Vec::new();
            for v in values {
                match &step {
                    Step::Key(k) => next.push(
                        v.get(k)
                            .cloned()
                            .ok_or_else(|| format!("no key {k:?} in {v}"))?,
                    ),
                    Step::Index(i) => next.push(
                        v.get(i)
                            .cloned()
                            .ok_or_else(|| format!("no element {i} in {v}"))?,
                    ),
                    Step::Each => match v {
                        Value::Array(a) => next.extend(a),
                        Value::Object(o) => next.extend(o.into_iter().map(|(_, x)| x)),
                        other => return Err(format!("cannot iterate over {other}")),
                    },
                }
            }
            values = next;
        }
    }
    Ok(values)
}

/// The steps of a path such as `.kept[]` or `.[0].id`.
fn parse_path(path: &str) -> Result<Vec<Step>, String> {
    let unknown = || format!("{path:?} is not a filter this check understands");
    let mut steps = Vec::new();
    let mut rest = path.strip_prefix('.').ok_or_else(unknown)?;
    loop {
        let key_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if key_len > 0 {
            steps.push(Step::Key(rest[..key_len].to_string()));
            rest = &rest[key_len..];
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let (index, after) = inner.split_once(']').ok_or_else(unknown)?;
            steps.push(if index.is_empty() {
                Step::Each
            } else {
                Step::Index(index.parse().map_err(|_| unknown())?)
            });
            rest = after;
        }
        if rest.is_empty() {
            return Ok(steps);
        }
        rest = rest.strip_prefix('.').ok_or_else(unknown)?;
        if rest.is_empty() || rest.starts_with('.') {
            return Err(unknown());
        }
    }
}

fn localise(script: &str, s: &Sandbox) -> String {
    let r = s.root.display().to_string();
    script
        .lines()
        .filter(|l| !l.trim_start().starts_with("cargo build"))
        .map(|l| {
            let l = l
                .replace("/var/lib/kyrodb/", &format!("{r}/var/lib/kyrodb/"))
                .replace(" /backups", &format!(" {r}/backups"));
            let list = match repository_read_by(&l) {
                Some(repo) => format!("kyrodb_backup list --backup-dir {repo}"),
                None => "kyrodb_backup list".into(),
            };
            l.replace(
                "<ID>",
                &format!("$({list} --format json | grep -m1 '\"id\"' | cut -d'\"' -f4)"),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The repository a guide line reads backups from: the value of its `--from`, else of its
/// `--backup-dir`; `None` for the default (`./backups`, the sandbox's, as `run` removes
/// `KYRODB_BACKUP_DIR`).
fn repository_read_by(line: &str) -> Option<&str> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let value = |flag: &str| words.windows(2).find(|w| w[0] == flag).map(|w| w[1]);
    value("--from").or_else(|| value("--backup-dir"))
}

/// Runs `script` in the sandbox, with `env` (the S3 server's, for a block that uses it) and
/// none of the machine's AWS settings.
fn run(script: &str, s: &Sandbox, env: &[(String, String)]) -> std::process::Output {
    let path = format!(
        "{}:{}",
        s.root.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = std::process::Command::new("bash");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    command
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(&s.root)
        .env("PATH", path)
        .env("HOME", &s.root)
        .env("KB_JQ_RECORD", s.root.join("jq-record"))
        .env("KB_REAL_JQ", real_jq().unwrap_or_default())
        .env_remove("KYRODB_DATA_DIR")
        .env_remove("KYRODB_BACKUP_DIR")
        .env_remove("KYRODB_BACKUP_S3_RETRY_SECS")
        .env_remove("BACKUP_ALLOW_CLEAR")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

/// Builds a sandbox for `block`, with the S3 server holding a copy of its repository when the
/// block names an `s3://` URL, and runs the block there.
fn run_in_sandbox(
    block: &str,
    template: &Sandbox,
    bucket: &mut Bucket,
) -> (String, Sandbox, std::process::Output) {
    let s = sandbox(template);
    let script = localise(block, &s);
    let env = if script.contains("s3://") {
        bucket.holding_copy_of(&s.root.join("backups"))
    } else {
        Vec::new()
    };
    let out = run(&script, &s, &env);
    (script, s, out)
}

fn guide() -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/guide.md")).unwrap()
}

#[test]
fn every_shell_block_and_cron_line_of_the_guide_runs() {
    let guide = guide();
    let sh = blocks(&guide, "sh");
    let cron = blocks(&guide, "crontab");
    assert!(
        sh.len() >= 20,
        "the guide's shell blocks were found ({})",
        sh.len()
    );
    assert!(!cron.is_empty(), "the guide has a crontab");
    let mut bucket = Bucket::start();
    let template = template();
    let mut ran = 0;
    let mut jq_checked = 0;
    for (line, block) in &sh {
        let (script, s, out) = run_in_sandbox(block, &template, &mut bucket);
        assert!(
            out.status.success(),
            "docs/guide.md block at line {line} failed ({}):\n{block}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        jq_checked += check_jq_uses(&script, &s, &format!("block at line {line}"));
        ran += 1;
    }
    for (line, block) in &cron {
        for entry in block
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        {
            // Five schedule fields, then the command as cron's sh runs it (`\%` is `%`).
            let command: String = entry.splitn(6, ' ').nth(5).unwrap().replace("\\%", "%");
            let (script, s, out) = run_in_sandbox(&command, &template, &mut bucket);
            assert!(
                out.status.success(),
                "docs/guide.md crontab at line {line}: {entry}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            jq_checked += check_jq_uses(&script, &s, &format!("crontab at line {line}"));
            ran += 1;
        }
    }
    assert!(jq_checked > 0, "the guide's jq lines were checked");
    eprintln!(
        "docs: {ran} blocks and cron lines ran, {jq_checked} jq filters checked ({})",
        match real_jq() {
            Some(jq) => format!("and run by {}", jq.display()),
            None => "no jq on PATH: JSON and paths checked here only".into(),
        }
    );
}

#[test]
fn every_json_block_of_the_guide_is_one_json_document() {
    let json = blocks(&guide(), "json");
    assert!(
        json.len() >= 2,
        "the guide's JSON blocks were found ({})",
        json.len()
    );
    for (line, block) in &json {
        if let Err(e) = serde_json::from_str::<Value>(block) {
            panic!("docs/guide.md JSON block at line {line}: {e}\n{block}");
        }
    }
}

#[test]
fn id_placeholders_name_a_backup_of_the_repository_the_line_reads() {
    for (line, repo) in [
        (
            "kyrodb_backup copy --from s3://b/p --to /r/backups <ID>",
            Some("s3://b/p"),
        ),
        (
            "kyrodb_backup copy --backup-dir /r/backups --to s3://b/p <ID>",
            Some("/r/backups"),
        ),
        (
            "kyrodb_backup show --backup-dir s3://b/p <ID>",
            Some("s3://b/p"),
        ),
        ("kyrodb_backup restore --backup-id <ID>", None),
    ] {
        assert_eq!(repository_read_by(line), repo, "{line}");
    }
}

#[test]
fn the_check_of_jq_filters_finds_what_they_name_and_nothing_else() {
    let doc = serde_json::json!({
        "ok": true,
        "age_seconds": 12,
        "kept": [{"id": "a", "reasons": ["newest"], "x": 1}, {"id": "b", "reasons": []}],
    });
    let list = serde_json::json!([{"id": "newest"}, {"id": "older"}]);
    assert_eq!(jq_eval(".[0].id", list.clone()).unwrap(), ["newest"]);
    assert_eq!(jq_eval(".ok", doc.clone()).unwrap(), [true]);
    assert_eq!(jq_eval(".age_seconds", doc.clone()).unwrap(), [12]);
    assert_eq!(
        jq_eval(".kept[] | {id, reasons}", doc.clone()).unwrap(),
        [
            serde_json::json!({"id": "a", "reasons": ["newest"]}),
            serde_json::json!({"id": "b", "reasons": []}),
        ]
    );
    assert_eq!(jq_eval(".", list.clone()).unwrap(), vec![list.clone()]);
    for (filter, input) in [
        (".[2].id", &list),
        (".[0].name", &list),
        (".nope", &doc),
        (".kept[] | {id, why}", &doc),
        (".ok[]", &doc),
        ("select(.ok)", &doc),
        (".kept | length", &doc),
        ("..", &doc),
    ] {
        assert!(
            jq_eval(filter, input.clone()).is_err(),
            "{filter} should be refused"
        );
    }
}
