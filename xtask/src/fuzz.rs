//! `cargo xtask fuzz [--seconds S] [TARGET...]`: a mutation fuzzer for the decoders of untrusted
//! bytes.
//!
//! `cargo fuzz` needs a nightly toolchain, which this project's machines cannot fetch, so this
//! is the stable equivalent: seeds from `fuzz/corpus/<target>/` (the engine's fixtures and
//! encodings of our own), mutated by bit flips, byte sets, interesting integers, truncation,
//! insertion, deletion and splicing; each input runs the decoder under `catch_unwind`. A panic
//! is a crash: the input is saved to `fuzz/crashes/<target>-<hash>` and the run fails. Inputs
//! that decode successfully after mutation join the corpus in memory, so later mutations start
//! from deeper valid structure.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::builder::PossibleValuesParser;
use kyrodb_backup_format::engine::{
    read_members, BuiltinMeta, DataDirManifest, Snapshot, WalReader,
};
use kyrodb_backup_format::repo::{decode_chunk, decode_manifest, read_id_list, ContentHash};

use crate::util::root;

/// Arguments of `cargo xtask fuzz`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Seconds to fuzz each target for.
    #[arg(long, value_name = "S", default_value_t = 20)]
    seconds: u64,
    /// Targets to fuzz [default: all].
    #[arg(value_name = "TARGET", value_parser = PossibleValuesParser::new(TARGETS.map(|(name, _)| name)))]
    targets: Vec<String>,
}

type Target = fn(&[u8]) -> bool;

/// Every target: name and a function that decodes fully and says whether it succeeded.
const TARGETS: [(&str, Target); 8] = [
    ("snapshot", |b| Snapshot::read(b).is_ok()),
    ("wal", |b| {
        let Ok(mut r) = WalReader::new(b) else {
            return false;
        };
        loop {
            match r.next_frame() {
                Ok(Some(_)) => {}
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    }),
    ("manifest", |b| DataDirManifest::parse(b).is_ok()),
    ("repo-manifest", |b| decode_manifest(b).is_ok()),
    ("chunk", |b| {
        // The plain size and hash a manifest would claim are fuzzed too: taken from the tail.
        if b.len() < 20 {
            return false;
        }
        let (body, tail) = b.split_at(b.len() - 20);
        let size = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        let hash = u128::from_le_bytes(tail[4..20].try_into().expect("16 bytes"));
        decode_chunk(body, ContentHash(hash), size).is_ok()
    }),
    ("id-list", |b| {
        // The id count a manifest would claim comes first, the list after it.
        let Some((count, list)) = b.split_first_chunk::<4>() else {
            return false;
        };
        let mut list = list;
        read_id_list(&mut list, u64::from(u32::from_le_bytes(*count)), |_| {}).is_ok()
    }),
    ("builtin-archive", |b| {
        read_members(std::io::Cursor::new(b), b.len() as u64).is_ok()
    }),
    ("builtin-meta", |b| {
        BuiltinMeta::decode(b, "3e49cddd-41ba-46a7-86c3-b628ba72b85b").is_ok()
    }),
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: [u64; 10] = [
    0,
    1,
    0x7F,
    0xFF,
    0xFFFF,
    0x7FFF_FFFF,
    0xFFFF_FFFF,
    100 * 1024 * 1024 + 1,
    u64::MAX,
    1 << 40,
];

fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = v.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next() as u8;
            }
            2 if len >= 8 => {
                let i = rng.below(len - 7);
                let x = INTERESTING[rng.below(INTERESTING.len())];
                let w = [1usize, 2, 4, 8][rng.below(4)];
                v[i..i + w].copy_from_slice(&x.to_le_bytes()[..w]);
            }
            3 => v.truncate(rng.below(len + 1)),
            4 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(i..i, bytes);
            }
            5 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                v.drain(i..i + n);
            }
            6 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                if !other.is_empty() {
                    let a = rng.below(other.len());
                    let b = a + rng.below(other.len() - a);
                    let at = rng.below(len + 1);
                    v.splice(at..at, other[a..b].iter().copied());
                }
            }
            _ if len > 1 => {
                let i = rng.below(len);
                let j = rng.below(len);
                v.swap(i, j);
            }
            _ => {}
        }
    }
    v
}

fn load_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if let Ok(b) = fs::read(e.path()) {
                out.push(b);
            }
        }
    }
    out
}

/// Set in the environment of the child process that does the fuzzing.
const CHILD: &str = "KYRODB_FUZZ_CHILD";

/// Runs every named target (all when none) for `--seconds` each (default 20), in a child
/// process limited to 4 GiB of address space, so an input that makes a decoder allocate
/// without bound aborts the run instead of passing unnoticed.
pub(crate) fn run(args: Args) -> Result<()> {
    if std::env::var_os(CHILD).is_none() {
        // The shell only sets the limit; the arguments reach the child as they are, unquoted.
        let status = Command::new("sh")
            .arg("-c")
            .arg("ulimit -v 4194304 && exec \"$0\" \"$@\"")
            .arg(std::env::current_exe()?)
            .args(["fuzz", "--seconds", &args.seconds.to_string()])
            .args(&args.targets)
            .env(CHILD, "1")
            .status()?;
        if !status.success() {
            bail!("fuzzing failed ({status}): a panic, or an allocation over the 4 GiB limit");
        }
        return Ok(());
    }
    let Args { seconds, targets } = args;
    let root = root();
    // Panics are findings, not noise on the terminal.
    std::panic::set_hook(Box::new(|_| {}));
    let mut crashed = Vec::new();
    for (name, target) in TARGETS {
        if !targets.is_empty() && !targets.iter().any(|t| t == name) {
            continue;
        }
        let mut corpus = load_corpus(&root.join("fuzz/corpus").join(name));
        if corpus.is_empty() {
            bail!("fuzz/corpus/{name} is empty");
        }
        let seeds = corpus.len();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64);
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let (mut execs, mut valid) = (0u64, 0u64);
        while Instant::now() < deadline {
            for _ in 0..64 {
                let base = &corpus[rng.below(corpus.len())];
                let input = mutate(&mut rng, base, &corpus);
                execs += 1;
                match std::panic::catch_unwind(|| target(&input)) {
                    Ok(true) => {
                        valid += 1;
                        if corpus.len() < 4096 && rng.below(16) == 0 {
                            corpus.push(input);
                        }
                    }
                    Ok(false) => {}
                    Err(_) => {
                        let dir = root.join("fuzz/crashes");
                        fs::create_dir_all(&dir)?;
                        let path = dir.join(format!("{name}-{}", ContentHash::of(&input)));
                        fs::write(&path, &input)?;
                        crashed.push(path.display().to_string());
                    }
                }
            }
        }
        println!(
            "{name:<14} {execs:>10} executions in {seconds} s, {valid} decoded, {seeds} seeds, corpus {}, crashes so far {}",
            corpus.len(),
            crashed.len()
        );
    }
    if !crashed.is_empty() {
        bail!("decoder panics, inputs saved: {}", crashed.join(", "));
    }
    Ok(())
}
