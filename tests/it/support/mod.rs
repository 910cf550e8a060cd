//! Shared helpers of the CLI tests: fixture copies, running the binary, comparing trees.

pub mod engine;
pub mod proxy;
pub mod s3;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// The repository's `fixtures/` directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Copies a fixture's `data/` into `dest` (created), with writable permissions.
pub fn copy_fixture_data(fixture: &str, dest: &Path) {
    copy_dir(&fixtures().join("kyrodb").join(fixture).join("data"), dest);
}

/// Copies a directory tree (files only), making the copies writable.
pub fn copy_dir(src: &Path, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    for p in walk_all(src) {
        let to = dest.join(p.strip_prefix(src).unwrap());
        if is_dir(&p) {
            fs::create_dir_all(&to).unwrap();
        } else {
            fs::write(&to, fs::read(&p).unwrap()).unwrap();
        }
    }
}

/// Every file under `dir` with its bytes (relative paths).
pub fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    walk(dir)
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            let bytes = fs::read(&p).unwrap();
            (rel, bytes)
        })
        .collect()
}

/// Every file under `dir`, at any depth, sorted (none when `dir` does not exist).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    walk_all(dir).into_iter().filter(|p| !is_dir(p)).collect()
}

/// `dir` itself and every directory and file under it, sorted (none when `dir` does not
/// exist). Symbolic links are listed, not followed.
pub fn walk_all(dir: &Path) -> Vec<PathBuf> {
    fn visit(dir: &Path, out: &mut Vec<PathBuf>) {
        out.push(dir.to_path_buf());
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                visit(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }
    let mut out = Vec::new();
    if dir.is_dir() {
        visit(dir, &mut out);
    }
    out.sort();
    out
}

/// A directory itself, not a link to one.
fn is_dir(p: &Path) -> bool {
    fs::symlink_metadata(p).unwrap().is_dir()
}

/// The tests' one source of pseudo-random numbers: xorshift64 (13, 7, 17), deterministic for
/// a seed, so that a failing round can be replayed.
pub struct Rng(u64);

impl Rng {
    /// A generator started at `seed` (0, which xorshift cannot leave, is replaced).
    pub fn new(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x2545_F491_4F6C_DD1D
        } else {
            seed
        })
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        self.next_u64() % n
    }
}

/// The directory options every command takes, for `assert_cmd::Command` and
/// `std::process::Command` alike: `kb().data_dir(&data).backup_dir(&repo).args([...])` runs
/// `kyrodb_backup --data-dir DATA --backup-dir REPO ...` (the options in the order called).
pub trait DirArgs {
    /// Adds `--data-dir DIR`.
    fn data_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self;
    /// Adds `--backup-dir DIR`.
    fn backup_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self;
}

impl DirArgs for Command {
    fn data_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.arg("--data-dir").arg(dir.as_ref())
    }
    fn backup_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.arg("--backup-dir").arg(dir.as_ref())
    }
}

impl DirArgs for std::process::Command {
    fn data_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.arg("--data-dir").arg(dir.as_ref())
    }
    fn backup_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.arg("--backup-dir").arg(dir.as_ref())
    }
}

/// The variables the binary reads that a test never inherits.
const CLEARED: [&str; 6] = [
    "KYRODB_DATA_DIR",
    "KYRODB_BACKUP_DIR",
    "BACKUP_ALLOW_CLEAR",
    "KYRODB_BACKUP_PASSWORD",
    "KYRODB_BACKUP_NEW_PASSWORD",
    "KYRODB_BACKUP_FROM_PASSWORD",
];

/// The binary, with a clean environment for the variables it reads.
pub fn kb() -> Command {
    let mut c = Command::cargo_bin("kyrodb_backup").unwrap();
    for v in CLEARED {
        c.env_remove(v);
    }
    c
}

/// A prune whose policy keeps only what it must: the newest backup and the full it needs.
pub const PRUNE_ALL_BUT_NEWEST: [&str; 11] = [
    "prune",
    "--keep-hourly",
    "0",
    "--keep-daily",
    "0",
    "--keep-weekly",
    "0",
    "--keep-monthly",
    "0",
    "--min-age-days",
    "0",
];

/// The passphrase of the tests' encrypted repositories.
pub const PASSPHRASE: &str = "correct horse battery staple";

/// Cheap Argon2id parameters for tests' key slots (recorded in each slot, so every later
/// command derives keys at this cost; real repositories use the defaults).
pub const CHEAP_KDF: [&str; 6] = [
    "--argon2-memory-kib",
    "64",
    "--argon2-iterations",
    "1",
    "--argon2-lanes",
    "1",
];

/// [`kb`] with [`PASSPHRASE`] in `KYRODB_BACKUP_PASSWORD`.
pub fn kb_enc() -> Command {
    let mut c = kb();
    c.env("KYRODB_BACKUP_PASSWORD", PASSPHRASE);
    c
}

/// Makes an encrypted repository at `repo` (a directory or `s3://` URL; for a bucket, the
/// caller's environment names the endpoint) with [`PASSPHRASE`] and [`CHEAP_KDF`].
pub fn init_encrypted(repo: impl AsRef<Path>) {
    let out = kb_enc()
        .backup_dir(repo)
        .arg("init")
        .arg("--encrypt")
        .args(CHEAP_KDF)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init --encrypt failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `create` and returns the backup object it printed.
pub fn create(data: &Path, repo: &Path, extra: &[&str]) -> serde_json::Value {
    create_in(false, data, repo, extra)
}

/// The binary, with [`PASSPHRASE`] when the repository is encrypted.
pub fn kb_for(encrypted: bool) -> Command {
    if encrypted {
        kb_enc()
    } else {
        kb()
    }
}

/// [`create`] in a repository that is encrypted (with [`PASSPHRASE`]) or not.
pub fn create_in(encrypted: bool, data: &Path, repo: &Path, extra: &[&str]) -> serde_json::Value {
    let out = kb_for(encrypted)
        .data_dir(data)
        .backup_dir(repo)
        .args(["create", "--format", "json"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("create prints one JSON document")
}

/// The files of a data dir that form its consistent state (MANIFEST, the snapshot it names,
/// the WAL segments it lists), with their bytes.
pub fn consistent_state_files(data: &Path) -> BTreeMap<String, Vec<u8>> {
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(data.join("MANIFEST")).unwrap()).unwrap();
    let mut names = vec!["MANIFEST".to_string()];
    if let Some(s) = manifest["latest_snapshot"].as_str() {
        names.push(s.to_string());
    }
    for w in manifest["wal_segments"].as_array().unwrap() {
        names.push(w.as_str().unwrap().to_string());
    }
    names
        .into_iter()
        .map(|n| {
            let bytes = fs::read(data.join(&n)).unwrap();
            (n, bytes)
        })
        .collect()
}

/// Recovers a data dir as the engine does and renders it like the fixtures' `expected.json`
/// (`count`, and `docs` keyed by id with `emb` and `meta`).
pub fn recovered_as_expected_json(data: &Path) -> serde_json::Value {
    let mut state = kyrodb_backup_format::engine::FullState::default();
    kyrodb_backup_format::engine::recover(
        &mut kyrodb_backup_format::engine::DirSource::new(data),
        &mut state,
        &kyrodb_backup_format::engine::RecoveryOptions {
            torn_tail_is_error: false,
        },
    )
    .unwrap();
    state.to_expected_json()
}

/// A fixture's `expected.json`, normalised the same way (f32 values).
pub fn expected_json(fixture: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(
        &fs::read(
            fixtures()
                .join("kyrodb")
                .join(fixture)
                .join("expected.json"),
        )
        .unwrap(),
    )
    .unwrap();
    kyrodb_backup_format::engine::FullState::from_expected_json(&v)
        .unwrap()
        .to_expected_json()
}

/// The binary as a plain `std::process::Command` (for spawning and killing).
pub fn kb_process() -> std::process::Command {
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("kyrodb_backup"));
    for v in CLEARED {
        c.env_remove(v);
    }
    c
}

/// The state at second `t` by the fixture's own log: the replay of the `ops.jsonl` lines with
/// `ts <= t` (`update` merges its `meta` into the document's), rendered like `expected.json`.
pub fn ops_state_at(fixture: &str, t: u64) -> serde_json::Value {
    let text =
        fs::read_to_string(fixtures().join("kyrodb").join(fixture).join("ops.jsonl")).unwrap();
    let mut docs: BTreeMap<
        u64,
        (
            serde_json::Value,
            serde_json::Map<String, serde_json::Value>,
        ),
    > = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let op: serde_json::Value = serde_json::from_str(line).unwrap();
        if op["ts"].as_u64().unwrap() > t {
            continue;
        }
        let id = op["id"].as_u64().unwrap();
        match op["op"].as_str().unwrap() {
            "insert" => {
                let meta = op["meta"].as_object().cloned().unwrap_or_default();
                docs.insert(id, (op["emb"].clone(), meta));
            }
            "delete" => {
                docs.remove(&id);
            }
            "update" => {
                if let Some(d) = docs.get_mut(&id) {
                    for (k, v) in op["meta"].as_object().unwrap() {
                        d.1.insert(k.clone(), v.clone());
                    }
                }
            }
            other => panic!("unknown op {other}"),
        }
    }
    let docs: serde_json::Map<String, serde_json::Value> = docs
        .into_iter()
        .map(|(id, (emb, meta))| {
            (
                id.to_string(),
                serde_json::json!({"emb": emb, "meta": meta}),
            )
        })
        .collect();
    let v = serde_json::json!({"count": docs.len(), "docs": docs});
    kyrodb_backup_format::engine::FullState::from_expected_json(&v)
        .unwrap()
        .to_expected_json()
}

/// The `ts` range of a fixture's `ops.jsonl`.
pub fn ops_time_range(fixture: &str) -> (u64, u64) {
    let text =
        fs::read_to_string(fixtures().join("kyrodb").join(fixture).join("ops.jsonl")).unwrap();
    let ts: Vec<u64> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["ts"]
                .as_u64()
                .unwrap()
        })
        .collect();
    (*ts.iter().min().unwrap(), *ts.iter().max().unwrap())
}

/// A legacy data dir: the legacy fixture `snapshot` as `snapshot_1760970600`, `wal` as one
/// segment, and the plain-text MANIFEST layout.
pub fn legacy_dir(dir: &Path, snapshot: &str, wal: &str) {
    let legacy = fixtures().join("kyrodb/legacy");
    fs::create_dir_all(dir).unwrap();
    fs::copy(legacy.join(snapshot), dir.join("snapshot_1760970600")).unwrap();
    fs::copy(legacy.join(wal), dir.join("wal_1760970600000001.wal")).unwrap();
    fs::write(dir.join("MANIFEST"), "snapshot_number: 1760970600\n").unwrap();
}
