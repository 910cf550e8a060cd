//! Offline golden top-k checks: does a data dir still answer queries as it did?

use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

use kyrodb_backup_format::engine::{
    recover, DirSource, DistanceMetric, LiveIds, Metadata, RecoveryOptions, StateSink,
};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Scores may differ by this much and still match (float summation order differs).
pub const SCORE_TOLERANCE: f32 = 1e-4;

/// What golden queries are asked for (`golden create`, or `create --golden N`).
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
    /// Largest amount of vector data searched: above it, a sample of the documents (see
    /// [`GoldenSampler`]); `None`: every document.
    pub budget_bytes: Option<u64>,
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

/// Which documents a golden file's queries were searched over, when not all of them: those
/// whose id hashes (with the seed) to at most `limit`. Anyone can recompute the same subset of
/// another state, so the answers stay exact over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Seed of the id hash.
    pub seed: u64,
    /// Largest hash in the sample.
    pub limit: u64,
    /// Documents of the recorded state in the sample.
    pub documents: u64,
}

impl Sample {
    /// Whether document `id` is in a sample of this seed and limit.
    pub fn holds(seed: u64, limit: u64, id: u64) -> bool {
        let mut s = id ^ seed.rotate_left(29);
        splitmix(&mut s) <= limit
    }
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
    /// The documents searched, when a sample of them (absent: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<Sample>,
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

/// Collects a sample of a recovering state's vectors for golden queries, in contiguous
/// storage: all of them, or, with a budget, the documents whose id hash falls under a limit
/// that halves whenever the kept vectors outgrow the budget (so memory and the later
/// brute-force pass stay bounded by the budget, not by the state's size). Deletes leave holes
/// that compaction removes as they pile up. Feed it to recovery (alone, or through
/// [`Counting`]), then [`golden_from_sample`].
pub struct GoldenSampler {
    index: HashMap<u64, usize>,
    ids: Vec<u64>,
    data: Vec<f32>,
    alive: Vec<bool>,
    live: usize,
    dim: Option<usize>,
    bad_dim: Option<usize>,
    seed: u64,
    limit: u64,
    budget_bytes: Option<u64>,
}

impl GoldenSampler {
    /// A sampler with `seed` that keeps at most `budget_bytes` of vectors (`None`: all).
    pub fn new(seed: u64, budget_bytes: Option<u64>) -> Self {
        Self::with_limit(seed, u64::MAX, budget_bytes)
    }

    /// A sampler that keeps exactly the documents of a recorded sample.
    fn fixed(seed: u64, limit: u64) -> Self {
        Self::with_limit(seed, limit, None)
    }

    fn with_limit(seed: u64, limit: u64, budget_bytes: Option<u64>) -> Self {
        Self {
            index: HashMap::new(),
            ids: Vec::new(),
            data: Vec::new(),
            alive: Vec::new(),
            live: 0,
            dim: None,
            bad_dim: None,
            seed,
            limit,
            budget_bytes,
        }
    }

    fn over_budget(&self, dim: usize) -> bool {
        self.budget_bytes
            .is_some_and(|b| (self.live * dim * 4) as u64 > b && self.limit > 0)
    }

    /// Halves the limit until the kept vectors fit the budget, dropping the rest.
    fn shrink(&mut self, dim: usize) {
        while self.over_budget(dim) {
            self.limit /= 2;
            let (seed, limit) = (self.seed, self.limit);
            for r in 0..self.ids.len() {
                if self.alive[r] && !Sample::holds(seed, limit, self.ids[r]) {
                    self.alive[r] = false;
                    self.live -= 1;
                }
            }
        }
        self.compact(dim);
    }

    /// Drops dead rows.
    fn compact(&mut self, dim: usize) {
        if self.live == self.ids.len() {
            return;
        }
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
        self.alive.clear();
        self.alive.resize(w, true);
        self.index = self
            .ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i))
            .collect();
    }
}

impl StateSink for GoldenSampler {
    fn insert(&mut self, id: u64, embedding: Vec<f32>, _: Metadata) {
        let dim = *self.dim.get_or_insert(embedding.len());
        if embedding.len() != dim {
            self.bad_dim = Some(embedding.len());
            return;
        }
        if !Sample::holds(self.seed, self.limit, id) {
            return;
        }
        if let Some(&slot) = self.index.get(&id) {
            self.data[slot * dim..(slot + 1) * dim].copy_from_slice(&embedding);
            if !self.alive[slot] {
                self.alive[slot] = true;
                self.live += 1;
            }
        } else {
            self.index.insert(id, self.ids.len());
            self.ids.push(id);
            self.alive.push(true);
            self.live += 1;
            self.data.extend_from_slice(&embedding);
        }
        if self.over_budget(dim) {
            self.shrink(dim);
        }
    }
    fn delete(&mut self, id: u64) {
        if let Some(&slot) = self.index.get(&id) {
            if self.alive[slot] {
                self.alive[slot] = false;
                self.live -= 1;
                // Dead rows never outnumber live ones by much: memory stays within twice
                // the budget however many documents come and go.
                if self.ids.len() > 2 * self.live + 64 {
                    let dim = self.dim.unwrap_or(0);
                    self.compact(dim);
                }
            }
        }
    }
    fn update_metadata(&mut self, _: u64, _: Metadata) {}
}

impl GoldenSampler {
    /// Bytes of vectors it holds now, live and deleted rows not yet compacted: at most about
    /// twice its budget.
    pub fn held_bytes(&self) -> u64 {
        (self.data.len() * 4) as u64
    }

    /// A sampler that keeps the documents `golden`'s queries search: its sample, or all.
    pub fn for_file(golden: &GoldenFile) -> Self {
        golden.sample.map_or_else(
            || Self::new(golden.seed, None),
            |s| Self::fixed(s.seed, s.limit),
        )
    }

    fn finish(mut self) -> Result<(Vectors, Option<(u64, u64)>), Error> {
        let dim = self.dim.unwrap_or(0);
        if let Some(bad) = self.bad_dim {
            return Err(Error::Dimension {
                file: dim as u64,
                dir: bad as u64,
            });
        }
        self.compact(dim);
        let sample = (self.limit != u64::MAX).then_some((self.seed, self.limit));
        Ok((
            Vectors {
                ids: self.ids,
                data: self.data,
                dim,
            },
            sample,
        ))
    }
}

/// Counts a recovering state's live documents and, when given a sampler, samples their
/// vectors too: one recovery serves both. Without a sampler, recovery skips decoding vectors.
pub struct Counting<'a> {
    /// The live documents.
    pub live: &'a mut LiveIds,
    /// Where the vectors go, if anywhere.
    pub sampler: Option<&'a mut GoldenSampler>,
}

impl StateSink for Counting<'_> {
    fn insert(&mut self, id: u64, embedding: Vec<f32>, _: Metadata) {
        self.live.insert(id, Vec::new(), Metadata::default());
        if let Some(s) = &mut self.sampler {
            s.insert(id, embedding, Metadata::default());
        }
    }
    fn delete(&mut self, id: u64) {
        self.live.delete(id);
        if let Some(s) = &mut self.sampler {
            s.delete(id);
        }
    }
    fn update_metadata(&mut self, _: u64, _: Metadata) {}
    fn wants_contents(&self) -> bool {
        self.sampler.is_some()
    }
}

/// Recovers `dir` into `sampler`; returns the live document count and the stored metric.
fn load(dir: &Path, sampler: &mut GoldenSampler) -> Result<(u64, Option<DistanceMetric>), Error> {
    let mut live = LiveIds::default();
    let report = recover(
        &mut DirSource::new(dir),
        &mut Counting {
            live: &mut live,
            sampler: Some(sampler),
        },
        &RecoveryOptions::default(),
    )?;
    Ok((live.len() as u64, report.distance))
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
    let mut sampler = GoldenSampler::new(opts.seed, opts.budget_bytes);
    let (count, stored) = load(dir, &mut sampler)?;
    let metric = stored.or(opts.distance).ok_or(Error::NoMetric)?;
    golden_from_sample(sampler, metric, count, opts)
}

/// Records the exact top-k of `opts.queries` sampled documents over what `sampler` kept of a
/// state of `count` live documents, under `metric` (`opts.distance` and `opts.budget_bytes`
/// are not consulted: the sampler was made with its budget).
///
/// # Errors
///
/// [`Error::Empty`] when the sampler kept no vectors, [`Error::Dimension`] when the state's
/// vectors differ in dimension.
pub fn golden_from_sample(
    sampler: GoldenSampler,
    metric: DistanceMetric,
    count: u64,
    opts: &GoldenOptions,
) -> Result<GoldenFile, Error> {
    let (vectors, sample) = sampler.finish()?;
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
        count,
        k: opts.k,
        seed: opts.seed,
        sample: sample.map(|(seed, limit)| Sample {
            seed,
            limit,
            documents: n as u64,
        }),
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
    let mut sampler = GoldenSampler::for_file(golden);
    let (count, stored) = load(dir, &mut sampler)?;
    golden_check_sample(sampler, stored, count, golden, threads)
}

/// [`golden_check`] of a state already recovered into `sampler` (made by
/// [`GoldenSampler::for_file`] of `golden`): `stored` is the state's metric, `count` its live
/// documents. For a caller that recovers the state once for other checks too.
///
/// # Errors
///
/// [`Error::Dimension`] when the file's vectors cannot be compared with the state's.
pub fn golden_check_sample(
    sampler: GoldenSampler,
    stored: Option<DistanceMetric>,
    count: u64,
    golden: &GoldenFile,
    threads: usize,
) -> Result<GoldenReport, Error> {
    let (vectors, _) = sampler.finish()?;
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
    let count_differs = (count != golden.count).then_some((golden.count, count));
    Ok(GoldenReport {
        ok: first_mismatch.is_none() && metric_differs.is_none(),
        metric_differs,
        count_differs,
        first_mismatch,
        queries: golden.queries.len(),
    })
}
