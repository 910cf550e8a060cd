//! The golden sampler: under its budget it keeps every live document; over it, exactly the
//! live documents whose id hash is under the limit it settled on (deletes and re-inserts
//! included), never more vector bytes than the budget, whatever the order of the inserts;
//! and `golden_check` searches the same sample of another copy of the state.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use kyrodb_backup_datadir::golden::{
    golden_check, golden_from_sample, GoldenFile, GoldenOptions, GoldenSampler, Sample,
};
use kyrodb_backup_format::engine::{
    DataDirManifest, DistanceMetric, StateSink, WalEntry, WalLayout, WalOp, WalWriter,
};

const DIM: usize = 8;
const SEED: u64 = 0x5eed_0f60_1d00;

/// A vector for a document and a version of it (distinct for each pair).
fn vector(id: u64, version: u64) -> Vec<f32> {
    let mut s =
        id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ version.wrapping_mul(0xd1b5_4a32_d192_ed03);
    (0..DIM)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// One operation of a state's history.
#[derive(Clone)]
enum Op {
    Insert(u64, Vec<f32>),
    Delete(u64),
}

/// A history with deletes and re-inserts: `n` documents (ids spread out), every third deleted,
/// every ninth of those inserted again with a new vector, and `n / 4` new ones.
fn history(n: u64) -> Vec<Op> {
    let id = |i: u64| i * 7919 + 3;
    let mut ops: Vec<Op> = (0..n)
        .map(|i| Op::Insert(id(i), vector(id(i), 0)))
        .collect();
    ops.extend((0..n).step_by(3).map(|i| Op::Delete(id(i))));
    ops.extend(
        (0..n)
            .step_by(9)
            .map(|i| Op::Insert(id(i), vector(id(i), 1))),
    );
    ops.extend((n..n + n / 4).map(|i| Op::Insert(id(i), vector(id(i), 0))));
    ops
}

/// The live documents after `ops`.
fn live(ops: &[Op]) -> BTreeMap<u64, Vec<f32>> {
    let mut docs = BTreeMap::new();
    for op in ops {
        match op {
            Op::Insert(id, v) => {
                docs.insert(*id, v.clone());
            }
            Op::Delete(id) => {
                docs.remove(id);
            }
        }
    }
    docs
}

fn feed(sampler: &mut GoldenSampler, ops: &[Op]) {
    for op in ops {
        match op {
            Op::Insert(id, v) => sampler.insert(*id, v.clone(), Vec::new()),
            Op::Delete(id) => sampler.delete(*id),
        }
    }
}

/// Every kept document as a query (so the file lists what the sampler kept).
fn all_kept(sampler: GoldenSampler, count: u64) -> GoldenFile {
    golden_from_sample(
        sampler,
        DistanceMetric::Euclidean,
        count,
        &GoldenOptions {
            queries: usize::MAX,
            k: 3,
            seed: SEED,
            distance: None,
            threads: 2,
            budget_bytes: None,
        },
    )
    .unwrap()
}

/// The kept documents: each query's source and vector.
fn kept(file: &GoldenFile) -> BTreeMap<u64, Vec<f32>> {
    file.queries
        .iter()
        .map(|q| (q.source_id, q.vector.clone()))
        .collect()
}

#[test]
fn under_its_budget_the_sampler_keeps_every_live_document() {
    let ops = history(90);
    let docs = live(&ops);
    // A budget of exactly the live vectors' bytes, and none at all.
    for budget in [Some((docs.len() * DIM * 4) as u64), None] {
        let mut sampler = GoldenSampler::new(SEED, budget);
        feed(&mut sampler, &ops);
        let file = all_kept(sampler, docs.len() as u64);
        assert_eq!(file.sample, None, "budget {budget:?}");
        assert_eq!(
            kept(&file),
            docs,
            "budget {budget:?}: the latest vector of each"
        );
        assert_eq!(file.count, docs.len() as u64);
        assert_eq!(file.dimension, DIM as u64);
    }
}

#[test]
fn over_its_budget_it_keeps_exactly_the_sampled_live_documents() {
    let ops = history(2000);
    let docs = live(&ops);
    for budget in [4096_u64, 1000, 20_000] {
        let mut sampler = GoldenSampler::new(SEED, Some(budget));
        feed(&mut sampler, &ops);
        let file = all_kept(sampler, docs.len() as u64);
        let sample = file.sample.expect("a sample");
        assert_eq!(sample.seed, SEED);
        assert!(sample.limit < u64::MAX);
        let got = kept(&file);
        let expected: BTreeMap<u64, Vec<f32>> = docs
            .iter()
            .filter(|(id, _)| Sample::holds(SEED, sample.limit, **id))
            .map(|(id, v)| (*id, v.clone()))
            .collect();
        assert!(!expected.is_empty(), "budget {budget}");
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "budget {budget}"
        );
        assert_eq!(got, expected, "budget {budget}: the latest vector of each");
        assert_eq!(sample.documents, got.len() as u64);
        assert!(
            sample.documents * (DIM as u64) * 4 <= budget,
            "budget {budget}: {} documents kept",
            sample.documents
        );
        // Every answer is over the sample only.
        for q in &file.queries {
            assert!(q.ids.iter().all(|id| got.contains_key(id)));
        }
        // The limit was halved only as far as needed: under the one before it (twice it,
        // plus one), more documents than the budget holds were live at some point, so more
        // than that were ever written.
        let twice = sample.limit.saturating_mul(2).saturating_add(1);
        let ever: BTreeSet<u64> = ops
            .iter()
            .map(|op| match op {
                Op::Insert(id, _) | Op::Delete(id) => *id,
            })
            .filter(|id| Sample::holds(SEED, twice, *id))
            .collect();
        assert!(
            ever.len() as u64 * (DIM as u64) * 4 > budget,
            "budget {budget}: the limit was halved more than needed"
        );
    }
}

#[test]
fn the_sample_does_not_depend_on_the_order_of_the_inserts() {
    let ops = history(1500);
    let inserts: Vec<Op> = live(&ops)
        .into_iter()
        .map(|(id, v)| Op::Insert(id, v))
        .collect();
    let mut reversed = inserts.clone();
    reversed.reverse();
    let files: Vec<GoldenFile> = [inserts, reversed]
        .iter()
        .map(|ops| {
            let mut sampler = GoldenSampler::new(SEED, Some(4096));
            feed(&mut sampler, ops);
            all_kept(sampler, ops.len() as u64)
        })
        .collect();
    assert!(files[0].sample.is_some());
    assert_eq!(files[0], files[1]);
}

/// Writes `ops` as a WAL-only data dir.
fn write_dir(dir: &Path, ops: &[Op]) {
    fs::create_dir_all(dir).unwrap();
    let mut wal = WalWriter::new(Vec::new()).unwrap();
    for (seq, op) in (1..).zip(ops) {
        let (op, doc_id, embedding) = match op {
            Op::Insert(id, v) => (WalOp::Insert, *id, v.clone()),
            Op::Delete(id) => (WalOp::Delete, *id, Vec::new()),
        };
        let e = WalEntry {
            op,
            doc_id,
            embedding,
            metadata: Vec::new(),
            seq_no: seq,
            timestamp: 1_800_000_000 + seq,
        };
        wal.append(&e, WalLayout::W3).unwrap();
    }
    let name = "wal_1800000000000000.wal".to_string();
    fs::write(dir.join(&name), wal.into_inner()).unwrap();
    let m = DataDirManifest::modern(None, None, vec![name], 1_800_000_000);
    fs::write(dir.join("MANIFEST"), m.to_bytes()).unwrap();
}

#[test]
fn golden_check_searches_the_recorded_sample_of_a_copy() {
    let ops = history(600);
    let docs = live(&ops);
    let mut sampler = GoldenSampler::new(SEED, Some(2048));
    feed(&mut sampler, &ops);
    let file = golden_from_sample(
        sampler,
        DistanceMetric::Euclidean,
        docs.len() as u64,
        &GoldenOptions {
            queries: 10,
            k: 4,
            seed: SEED,
            distance: None,
            threads: 2,
            budget_bytes: None,
        },
    )
    .unwrap();
    let sample = file.sample.expect("a sample");
    assert_eq!(file.queries.len(), 10);

    let tmp = tempfile::tempdir().unwrap();
    let same = tmp.path().join("same");
    write_dir(&same, &ops);
    let r = golden_check(&same, &file, 2).unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!((r.queries, r.count_differs), (10, None));

    // A document outside the sample moved next to a query: not searched, still a match.
    let q = &file.queries[0];
    let outside = *docs
        .keys()
        .find(|id| !Sample::holds(SEED, sample.limit, **id))
        .unwrap();
    let mut moved = ops.clone();
    moved.push(Op::Insert(outside, q.vector.clone()));
    let dir = tmp.path().join("outside");
    write_dir(&dir, &moved);
    assert!(golden_check(&dir, &file, 2).unwrap().ok);

    // A document of the sample moved there: the query finds it first.
    let inside = *docs
        .keys()
        .find(|id| Sample::holds(SEED, sample.limit, **id) && **id != q.source_id)
        .unwrap();
    let mut moved = ops.clone();
    moved.push(Op::Insert(inside, q.vector.clone()));
    let dir = tmp.path().join("inside");
    write_dir(&dir, &moved);
    let r = golden_check(&dir, &file, 2).unwrap();
    assert!(!r.ok);
    let m = r.first_mismatch.unwrap();
    assert_eq!((m.query, m.source_id), (0, q.source_id));
}

/// Resident memory of this process, in bytes (Linux).
fn resident_bytes() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    kib << 10
}

#[test]
fn deleted_documents_do_not_grow_the_sampler_past_its_budget() {
    // A history that churns: 100 000 documents of 64 floats (25.6 MB in all) each inserted and
    // deleted again, never more than one live. A 64 KiB budget must bound what is held.
    const BUDGET: u64 = 64 << 10;
    let mut sampler = GoldenSampler::new(SEED, Some(BUDGET));
    let before = resident_bytes();
    let mut held = 0;
    let mut s = SEED;
    for id in 0..100_000_u64 {
        let v: Vec<f32> = (0..64)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 1000) as f32
            })
            .collect();
        sampler.insert(id, v, Vec::new());
        sampler.delete(id);
        held = held.max(sampler.held_bytes());
    }
    let grown = resident_bytes().saturating_sub(before);
    // Deleted rows are compacted away once they outnumber the live ones (plus 64 rows).
    assert!(
        held <= 2 * BUDGET + 64 * 64 * 4 + 64 * 4,
        "the sampler held {held} bytes of vectors for a {BUDGET}-byte budget"
    );
    sampler.insert(7, vec![1.0; 64], Vec::new());
    let file = all_kept(sampler, 1);
    assert_eq!(kept(&file).keys().copied().collect::<Vec<_>>(), [7]);
    // The process as a whole (other tests run beside this one, so only a gross growth counts).
    assert!(
        grown < 16 << 20,
        "the sampler grew the process by {grown} bytes for a {BUDGET}-byte budget"
    );
}
