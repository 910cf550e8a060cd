//! `cargo xtask bench-s3 [--vectors N] [--pairs N] [--backups N]`: the same data dir backed up
//! into a local repository and into a bucket of a local S3-compatible server (moto, on
//! 127.0.0.1), in interleaved pairs (local, S3, local, S3, ...), each from a removed target and
//! after `sync` and dropped caches; reports the median of the per-pair ratios S3/local for
//! `create` and `restore`, peak RSS, the bytes an incremental after a 1% WAL append uploads,
//! the time `list` takes over `--backups` backups, and the requests each command sent (read
//! from the server's request log).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::util::{build_binary, drop_caches, du, fixtures, median, peak_rss_kib, root};
use crate::{append_wal, gen_data};

/// Arguments of `cargo xtask bench-s3`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Vectors in the generated data dir (600,000: about 1 GB).
    #[arg(long, value_name = "N", default_value_t = 600_000)]
    vectors: u64,
    /// Interleaved pairs (local, S3) of each step; the median ratio is reported (at least 1).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pairs: u64,
    /// Backups in the repository that `list` is timed on.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    backups: u64,
    /// The S3 server: `moto` (Python, objects in memory, request counts from its log) or
    /// `s3s-fs` (Rust, objects in files; `cargo install s3s-fs@0.14.1 --features binary`).
    #[arg(long, value_name = "NAME", default_value = "moto")]
    server: String,
    /// Where to put the data dir and repositories [default: target/bench-s3].
    #[arg(long, value_name = "D")]
    dir: Option<PathBuf>,
}

/// An S3 server on a free loopback port (moto, its requests logged to a file; or s3s-fs,
/// its objects under `root`).
pub(crate) struct Moto {
    child: Child,
    port: u16,
    log: PathBuf,
    /// s3s-fs's directory of buckets.
    root: Option<PathBuf>,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    pub(crate) fn start(dir: &Path, kind: &str) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = dir.join(format!("{kind}.log"));
        let (child, root) = if kind == "s3s-fs" {
            let root = dir.join("s3s-root");
            fs::create_dir_all(&root)?;
            let server = which("s3s-fs", &root_of_tools().join("bin/s3s-fs"))?;
            let child = Command::new(&server)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", "testing", "--secret-key", "testing"])
                .arg(&root)
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log)?)
                .spawn()
                .with_context(|| format!("starting {}", server.display()))?;
            (child, Some(root))
        } else {
            let server = which_moto()?;
            let child = Command::new(&server)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log)?)
                .spawn()
                .with_context(|| format!("starting {}", server.display()))?;
            (child, None)
        };
        let moto = Self {
            child,
            port,
            log,
            root,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            ensure!(
                Instant::now() < deadline,
                "moto did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(moto)
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn create_bucket(&self, name: &str) -> Result<()> {
        if let Some(root) = &self.root {
            fs::create_dir_all(root.join(name))?;
            return Ok(());
        }
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        write!(
            s,
            "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        ensure!(
            answer.starts_with("HTTP/1.1 200"),
            "create bucket: {answer}"
        );
        Ok(())
    }

    /// Requests logged so far, by method.
    fn requests(&self) -> BTreeMap<String, u64> {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = BTreeMap::new();
        for line in text.lines() {
            for m in ["GET", "PUT", "HEAD", "DELETE", "POST"] {
                if line.contains(&format!("\"{m} /")) {
                    *out.entry(m.to_string()).or_insert(0) += 1;
                }
            }
        }
        out
    }
}

/// Where `cargo install --root` put tools for the benchmarks.
fn root_of_tools() -> PathBuf {
    std::env::var_os("KYRODB_BENCH_TOOLS")
        .map_or_else(|| root().join("target/tools"), PathBuf::from)
}

/// `name` on `PATH`, else `fallback`.
fn which(name: &str, fallback: &Path) -> Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    match on_path {
        Some(p) => Ok(p),
        None if fallback.is_file() => Ok(fallback.to_path_buf()),
        None => bail!("{name} not found on PATH or at {}", fallback.display()),
    }
}

fn which_moto() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("MOTO_SERVER") {
        return Ok(PathBuf::from(p));
    }
    let venv = root().join("target/tmp/moto-venv/bin/moto_server");
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("moto_server"))
        .find(|p| p.is_file());
    match on_path {
        Some(p) => Ok(p),
        None if venv.is_file() => Ok(venv),
        None => bail!("moto_server not found: `pip install 'moto[server]'` (or run the S3 tests once, which install it under target/tmp)"),
    }
}

/// Runs the binary with the S3 settings; returns (seconds, peak RSS KiB, stdout).
fn timed(bin: &Path, moto: &Moto, args: &[&str]) -> Result<(f64, u64, String)> {
    drop_caches();
    let start = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(bin)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .output()
        .context("running /usr/bin/time (Debian package `time`)")?;
    let secs = start.elapsed().as_secs_f64();
    ensure!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rss = peak_rss_kib(&out.stderr);
    Ok((secs, rss, String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn diff(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> String {
    after
        .iter()
        .map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn json_id(stdout: &str) -> Result<String> {
    let v: serde_json::Value = serde_json::from_str(stdout)?;
    Ok(v["id"].as_str().context("no id")?.to_string())
}

/// Runs the benchmark; see the module documentation.
#[allow(clippy::too_many_lines)] // one measurement after another, printed as it goes
pub(crate) fn run(args: Args) -> Result<()> {
    let base = args.dir.unwrap_or_else(|| root().join("target/bench-s3"));
    let bin = build_binary(true)?;
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base)?;
    let data = base.join("data");
    gen_data::run(gen_data::Args::new(data.clone(), args.vectors))?;
    let size = du(&data);
    let moto = Moto::start(&base, &args.server)?;
    moto.create_bucket("bench")?;
    let (dir_arg, b) = (data.display().to_string(), &bin);
    let mut ratios: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut rss: BTreeMap<&str, u64> = BTreeMap::new();
    let mut requests: BTreeMap<&str, String> = BTreeMap::new();
    let mut last_s3 = String::new();
    for pair in 0..args.pairs.max(1) {
        let local = base.join("repo");
        let _ = fs::remove_dir_all(&local);
        let local_arg = local.display().to_string();
        let s3 = format!("s3://bench/run-{pair}");
        let (lc, create_rss_local, out) = timed(
            b,
            &moto,
            &[
                "-q",
                "--format",
                "json",
                "--data-dir",
                &dir_arg,
                "--backup-dir",
                &local_arg,
                "create",
            ],
        )?;
        let lid = json_id(&out)?;
        let before = moto.requests();
        let (sc, create_rss_s3, out) = timed(
            b,
            &moto,
            &[
                "-q",
                "--format",
                "json",
                "--data-dir",
                &dir_arg,
                "--backup-dir",
                &s3,
                "create",
            ],
        )?;
        requests.insert("create (full)", diff(&moto.requests(), &before));
        let sid = json_id(&out)?;
        let target = base.join("restored");
        let target_arg = target.display().to_string();
        let _ = fs::remove_dir_all(&target);
        let (lr, restore_rss_local, _) = timed(
            b,
            &moto,
            &[
                "-q",
                "--backup-dir",
                &local_arg,
                "--data-dir",
                &target_arg,
                "restore",
                "--backup-id",
                &lid,
            ],
        )?;
        fs::remove_dir_all(&target)?;
        let before = moto.requests();
        let (sr, restore_rss_s3, _) = timed(
            b,
            &moto,
            &[
                "-q",
                "--backup-dir",
                &s3,
                "--data-dir",
                &target_arg,
                "restore",
                "--backup-id",
                &sid,
            ],
        )?;
        requests.insert("restore", diff(&moto.requests(), &before));
        fs::remove_dir_all(&target)?;
        println!(
            "pair {}: create local {lc:.2}s S3 {sc:.2}s; restore local {lr:.2}s S3 {sr:.2}s",
            pair + 1
        );
        ratios.entry("create (full)").or_default().push(sc / lc);
        ratios.entry("restore").or_default().push(sr / lr);
        for (k, v) in [
            ("create local", create_rss_local),
            ("create S3", create_rss_s3),
            ("restore local", restore_rss_local),
            ("restore S3", restore_rss_s3),
        ] {
            let e = rss.entry(k).or_default();
            *e = (*e).max(v);
        }
        last_s3 = s3;
    }
    // An incremental after a 1% WAL append, into the last S3 repository.
    append_wal::run(append_wal::Args {
        dir: data.clone(),
        mb: (size / 100 / (1 << 20)).max(1),
    })?;
    let before = moto.requests();
    let (ic, _, out) = timed(
        b,
        &moto,
        &[
            "-q",
            "--format",
            "json",
            "--data-dir",
            &dir_arg,
            "--backup-dir",
            &last_s3,
            "create",
            "--incremental",
            "--reference",
            "latest",
        ],
    )?;
    requests.insert("create (incremental)", diff(&moto.requests(), &before));
    let inc: serde_json::Value = serde_json::from_str(&out)?;
    let uploaded = inc["stored_bytes"].as_u64().unwrap_or(0);
    let before = moto.requests();
    timed(
        b,
        &moto,
        &["-q", "--backup-dir", &last_s3, "verify", "--all"],
    )?;
    requests.insert("verify --all (2 backups)", diff(&moto.requests(), &before));

    // `list` over many backups, in chains as the guide's schedule makes them (a full and 24
    // incrementals each), made locally from a small fixture and copied to a bucket of their
    // own.
    let small = fixtures().join("kyrodb/v4-basic/data");
    let many = base.join("many");
    for i in 0..args.backups {
        let mut cmd = Command::new(b);
        cmd.args(["-q", "--data-dir"])
            .arg(&small)
            .args(["--backup-dir"])
            .arg(&many)
            .arg("create");
        if i % 25 != 0 {
            cmd.args(["--incremental", "--reference", "latest"]);
        }
        let out = cmd.output()?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    moto.create_bucket("many")?;
    let many_arg = many.display().to_string();
    let (copy_secs, _, _) = timed(
        b,
        &moto,
        &[
            "-q",
            "copy",
            "--from",
            &many_arg,
            "--to",
            "s3://many/r",
            "--all",
        ],
    )?;
    let before = moto.requests();
    let (list_secs, list_rss, out) = timed(
        b,
        &moto,
        &["--format", "json", "--backup-dir", "s3://many/r", "list"],
    )?;
    requests.insert("list", diff(&moto.requests(), &before));
    let listed = serde_json::from_str::<serde_json::Value>(&out)?
        .as_array()
        .map_or(0, Vec::len);
    println!(
        "server {}; data dir: {:.2} GB ({} vectors of dimension 384 + WAL); {} interleaved pairs (local, S3), caches dropped before each run",
        args.server,
        size as f64 / 1e9,
        args.vectors,
        args.pairs.max(1)
    );
    for (step, r) in &ratios {
        println!(
            "{step:<24} S3/local median ratio {:.2} (pairs: {})",
            median(r.clone()),
            r.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    for (k, v) in &rss {
        println!("peak RSS {k:<14} {:>6} MiB", v / 1024);
    }
    println!(
        "incremental after +1% WAL: {ic:.2}s, uploaded {uploaded} bytes = {:.2}% of the data dir",
        uploaded as f64 / size as f64 * 100.0
    );
    println!(
        "list of {listed} backups ({} chains) on S3: {list_secs:.2}s, peak RSS {} MiB (copy --all of them from disk: {copy_secs:.1}s)",
        listed.div_ceil(25),
        list_rss / 1024
    );
    for (cmd, r) in &requests {
        println!("requests, {cmd:<26} {r}");
    }
    Ok(())
}
