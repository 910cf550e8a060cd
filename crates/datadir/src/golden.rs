//! Offline golden top-k checks: does a data dir still answer queries as it did?

use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

use kyrodb_backup_format::engine::{
    recover, DirSource, DistanceMetric, Metadata, RecoveryOptions, StateSink,
};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Scores may differ by this much and still match (float summation order differs).
pub const SCORE_TOLERANCE: f32 = 1e-4;

/// What `golden create` is asked for.
#[derive(Debug, Clone, Copy)]
pub struct GoldenOptions {
    /// Number of stored vectors sampled as queries.
    pub queries: usize,
    /// Results per query.
    pub k: usize,
    /// Seed of the sampling.
    pub seed: u64,
    /// Metric to use when the data dir records none.
    pub distance: Option<DistanceMetric>,
    /// Worker threads.
    pub threads: usize,
}

/// One golden query: the vector and its exact top-k.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldenQuery {
    /// The stored document the query vector was taken from.
    pub source_id: u64,
    /// The query vector.
    pub vector: Vec<f32>,
    /// Result ids, nearest first (ties by smaller id).
    pub ids: Vec<u64>,
    /// Their distances under the metric.
    pub scores: Vec<f32>,
}

/// A golden file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldenFile {
    /// Format version (1).
    pub version: u32,
    /// The metric the results were computed with.
    pub metric: DistanceMetric,
    /// Vector dimension.
    pub dimension: u64,
    /// Live documents of the data dir.
    pub count: u64,
    /// Results per query.
    pub k: usize,
    /// Sampling seed.
    pub seed: u64,
    /// The queries.
    pub queries: Vec<GoldenQuery>,
}

/// The first difference `golden check` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mismatch {
    /// Index of the query in the file.
    pub query: usize,
    /// Its source document.
    pub source_id: u64,
    /// Rank where results first differ.
    pub rank: usize,
    /// Expected (id, score) at that rank, if any.
    pub expected: Option<(u64, f32)>,
    /// Found (id, score) at that rank, if any.
    pub found: Option<(u64, f32)>,
}

/// What `golden check` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GoldenReport {
    /// Whether everything matched.
    pub ok: bool,
    /// The data dir's metric, when it differs from the file's.
    pub metric_differs: Option<(DistanceMetric, DistanceMetric)>,
    /// Documents in the data dir, when the count differs from the file's.
    pub count_differs: Option<(u64, u64)>,
    /// The first differing query.
    pub first_mismatch: Option<Mismatch>,
    /// Queries checked.
    pub queries: usize,
}

/// The recovered vectors, contiguous (one allocation, no per-vector overhead).
struct Vectors {
    ids: Vec<u64>,
    data: Vec<f32>,
    dim: usize,
}

impl Vectors {
    fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// Collects the recovered state into contiguous storage; deletes leave holes that
/// [`VectorSink::finish`] compacts away.
#[derive(Default)]
struct VectorSink {
    index: HashMap<u64, usize>,
    ids: Vec<u64>,
    data: Vec<f32>,
    alive: Vec<bool>,
    dim: Option<usize>,
    bad_dim: Option<usize>,
}

impl StateSink for VectorSink {
    fn insert(&mut self, id: u64, embedding: Vec<f32>, _: Metadata) {
        let dim = *self.dim.get_or_insert(embedding.len());
        if embedding.len() != dim {
            self.bad_dim = Some(embedding.len());
            return;
        }
        if let Some(&slot) = self.index.get(&id) {
            self.data[slot * dim..(slot + 1) * dim].copy_from_slice(&embedding);
            self.alive[slot] = true;
        } else {
            self.index.insert(id, self.ids.len());
            self.ids.push(id);
            self.alive.push(true);
            self.data.extend_from_slice(&embedding);
        }
    }
    fn delete(&mut self, id: u64) {
        if let Some(&slot) = self.index.get(&id) {
            self.alive[slot] = false;
        }
    }
    fn update_metadata(&mut self, _: u64, _: Metadata) {}
}

impl VectorSink {
    fn finish(mut self) -> Result<Vectors, Error> {
        let dim = self.dim.unwrap_or(0);
        if let Some(bad) = self.bad_dim {
            return Err(Error::Dimension {
                file: dim as u64,
                dir: bad as u64,
            });
        }
        if self.alive.iter().any(|a| !a) {
            let mut w = 0;
            for r in 0..self.ids.len() {
                if self.alive[r] {
                    self.ids[w] = self.ids[r];
                    self.data.copy_within(r * dim..(r + 1) * dim, w * dim);
                    w += 1;
                }
            }
            self.ids.truncate(w);
            self.data.truncate(w * dim);
        }
        Ok(Vectors {
            ids: self.ids,
            data: self.data,
            dim,
        })
    }
}

fn load(dir: &Path) -> Result<(Vectors, Option<DistanceMetric>), Error> {
    let mut sink = VectorSink::default();
    let report = recover(
        &mut DirSource::new(dir),
        &mut sink,
        &RecoveryOptions::default(),
    )?;
    Ok((sink.finish()?, report.distance))
}

/// Dot product with eight independent sums, so the compiler can use SIMD lanes.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// Squared Euclidean distance, likewise.
fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            let d = x[l] - y[l];
            acc[l] += d * d;
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| (x - y) * (x - y)).sum();
    acc.iter().sum::<f32>() + tail
}

/// The engine's distance (smaller is nearer).
fn distance(metric: DistanceMetric, q: &[f32], v: &[f32]) -> f32 {
    match metric {
        DistanceMetric::Cosine | DistanceMetric::InnerProduct => (1.0 - dot(q, v)).max(0.0),
        DistanceMetric::Euclidean => squared_distance(q, v).max(0.0).sqrt(),
    }
}

/// A candidate ordered by (distance, id): the heap's top is the worst kept.
#[derive(PartialEq)]
struct Cand(f32, u64);
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0).then(self.1.cmp(&o.1))
    }
}

/// Exact top-k of every query, over `threads` workers that split the vectors; each worker
/// walks its vectors block by block against all queries, so each block stays in cache.
fn top_k(
    vectors: &Vectors,
    queries: &[Vec<f32>],
    k: usize,
    metric: DistanceMetric,
    threads: usize,
) -> Vec<Vec<(u64, f32)>> {
    let n = vectors.ids.len();
    let threads = threads.clamp(1, 64).min(n.max(1));
    let per = n.div_ceil(threads);
    let partial: Vec<Vec<BinaryHeap<Cand>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut heaps: Vec<BinaryHeap<Cand>> = queries
                        .iter()
                        .map(|_| BinaryHeap::with_capacity(k + 1))
                        .collect();
                    let (lo, hi) = (t * per, ((t + 1) * per).min(n));
                    let mut start = lo;
                    while start < hi {
                        let end = (start + 256).min(hi);
                        for (q, heap) in queries.iter().zip(heaps.iter_mut()) {
                            for i in start..end {
                                let v = vectors.row(i);
                                let c = Cand(distance(metric, q, v), vectors.ids[i]);
                                if heap.len() < k {
                                    heap.push(c);
                                } else if heap.peek().is_some_and(|w| c < *w) {
                                    heap.pop();
                                    heap.push(c);
                                }
                            }
                        }
                        start = end;
                    }
                    heaps
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker panicked"))
            .collect()
    });
    (0..queries.len())
        .map(|qi| {
            let mut all: Vec<Cand> = partial
                .iter()
                .flat_map(|heaps| heaps[qi].iter().map(|c| Cand(c.0, c.1)))
                .collect();
            all.sort();
            all.truncate(k);
            all.into_iter().map(|c| (c.1, c.0)).collect()
        })
        .collect()
}

/// `SplitMix64`, for reproducible sampling.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Samples `opts.queries` stored vectors (without replacement, reproducibly from the seed) and
/// records the exact top-k of each under the data dir's metric.
///
/// # Errors
///
/// [`Error::NoMetric`] when neither the data dir nor `opts` names a metric, [`Error::Empty`]
/// for a state without vectors, [`Error::Format`] when the data dir does not recover.
pub fn golden_create(dir: &Path, opts: &GoldenOptions) -> Result<GoldenFile, Error> {
    let (vectors, stored) = load(dir)?;
    let metric = stored.or(opts.distance).ok_or(Error::NoMetric)?;
    if vectors.ids.is_empty() {
        return Err(Error::Empty);
    }
    let n = vectors.ids.len();
    // Sample rows in id order, so the same seed picks the same documents whatever the order
    // the state was recovered in.
    let mut picks: Vec<usize> = (0..n).collect();
    picks.sort_unstable_by_key(|&i| vectors.ids[i]);
    let mut state = opts.seed;
    let want = opts.queries.min(n);
    for i in 0..want {
        let j = i + (splitmix(&mut state) % (n - i) as u64) as usize;
        picks.swap(i, j);
    }
    picks.truncate(want);
    let queries: Vec<Vec<f32>> = picks.iter().map(|&i| vectors.row(i).to_vec()).collect();
    let results = top_k(&vectors, &queries, opts.k, metric, opts.threads);
    Ok(GoldenFile {
        version: 1,
        metric,
        dimension: vectors.dim as u64,
        count: n as u64,
        k: opts.k,
        seed: opts.seed,
        queries: picks
            .iter()
            .zip(queries)
            .zip(results)
            .map(|((&i, vector), r)| GoldenQuery {
                source_id: vectors.ids[i],
                vector,
                ids: r.iter().map(|x| x.0).collect(),
                scores: r.iter().map(|x| x.1).collect(),
            })
            .collect(),
    })
}

/// Recomputes every query of `golden` on `dir` under the dir's own metric (so a restore into
/// the wrong metric shows) and reports the first difference in ids, order, or a score off by
/// more than [`SCORE_TOLERANCE`].
///
/// # Errors
///
/// [`Error::Dimension`] when the file's vectors cannot be compared with the data dir's,
/// [`Error::Format`] when the data dir does not recover.
pub fn golden_check(
    dir: &Path,
    golden: &GoldenFile,
    threads: usize,
) -> Result<GoldenReport, Error> {
    let (vectors, stored) = load(dir)?;
    let metric = stored.unwrap_or(golden.metric);
    if !vectors.ids.is_empty() && vectors.dim as u64 != golden.dimension {
        return Err(Error::Dimension {
            file: golden.dimension,
            dir: vectors.dim as u64,
        });
    }
    let queries: Vec<Vec<f32>> = golden.queries.iter().map(|q| q.vector.clone()).collect();
    let results = top_k(&vectors, &queries, golden.k, metric, threads);
    let mut first_mismatch = None;
    'outer: for (qi, (q, got)) in golden.queries.iter().zip(&results).enumerate() {
        let len = q.ids.len().max(got.len());
        for rank in 0..len {
            let expected = q.ids.get(rank).map(|&id| (id, q.scores[rank]));
            let found = got.get(rank).copied();
            let same = match (expected, found) {
                (Some(e), Some(f)) => e.0 == f.0 && (e.1 - f.1).abs() <= SCORE_TOLERANCE,
                _ => false,
            };
            if !same {
                first_mismatch = Some(Mismatch {
                    query: qi,
                    source_id: q.source_id,
                    rank,
                    expected,
                    found,
                });
                break 'outer;
            }
        }
    }
    let metric_differs = (metric != golden.metric).then_some((golden.metric, metric));
    let count = vectors.ids.len() as u64;
    let count_differs = (count != golden.count).then_some((golden.count, count));
    Ok(GoldenReport {
        ok: first_mismatch.is_none() && metric_differs.is_none(),
        metric_differs,
        count_differs,
        first_mismatch,
        queries: golden.queries.len(),
    })
}
