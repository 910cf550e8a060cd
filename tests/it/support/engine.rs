//! A writer that follows the KyroDB engine's persistence protocol, for tests: appends W3
//! frames to the newest segment, rotates to a new segment (adding it to the MANIFEST),
//! writes snapshots (`.tmp`, fsync, rename, MANIFEST names it, covered segments deleted,
//! MANIFEST rewritten), and rewrites the MANIFEST atomically (tmp, fsync, rename, dir fsync).
//! It keeps the log of every write so tests can compute the state after any prefix of it.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kyrodb_backup_format::engine::{
    encode_entry, recover, DataDirManifest, DirSource, DistanceMetric, FullState, Metadata,
    RecoveryOptions, Snapshot, SnapshotLayout, StateSink, WalEntry, WalLayout, WalOp,
};

/// The engine's log: every entry it wrote, in sequence order.
pub type Log = Arc<Mutex<Vec<WalEntry>>>;

/// A simulated engine over a data directory.
pub struct Engine {
    dir: PathBuf,
    pub state: FullState,
    seq: u64,
    snapshot: Option<(String, u64)>,
    segments: Vec<String>,
    current: File,
    current_bytes: u64,
    next_file_id: u64,
    pub log: Log,
    pub dimension: usize,
    /// First sequence number of the log (entries before it came with the directory).
    pub base_seq: u64,
    pub base_state: FullState,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn fsync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

impl Engine {
    /// Opens a data dir as the engine does on start (recovering it and adding a new, empty
    /// segment to the MANIFEST), or starts an empty one.
    pub fn open(dir: &Path, dimension: usize) -> Self {
        fs::create_dir_all(dir).unwrap();
        let mut state = FullState::default();
        let mut seq = 0;
        let mut snapshot = None;
        let mut segments = Vec::new();
        if dir.join("MANIFEST").exists() {
            let report = recover(
                &mut DirSource::new(dir),
                &mut state,
                &RecoveryOptions::default(),
            )
            .unwrap();
            if let Some((name, info)) = &report.snapshot {
                snapshot = Some((name.clone(), info.last_wal_seq));
                seq = info.last_wal_seq;
            }
            for s in &report.segments {
                seq = seq.max(s.last_seq.unwrap_or(0));
                segments.push(s.name.clone());
            }
        }
        let next_file_id = (now() * 1_000_000).max(
            segments
                .iter()
                .filter_map(|s| {
                    s.trim_start_matches("wal_")
                        .trim_end_matches(".wal")
                        .parse()
                        .ok()
                })
                .max()
                .unwrap_or(0)
                + 1,
        );
        let (current, name) = Self::new_segment(dir, next_file_id);
        segments.push(name);
        let e = Engine {
            dir: dir.to_path_buf(),
            base_state: state.clone(),
            state,
            seq,
            snapshot,
            segments,
            current,
            current_bytes: 4,
            next_file_id: next_file_id + 1,
            log: Arc::new(Mutex::new(Vec::new())),
            dimension,
            base_seq: seq,
        };
        e.write_manifest();
        e
    }

    fn new_segment(dir: &Path, id: u64) -> (File, String) {
        let name = format!("wal_{id}.wal");
        let mut f = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(dir.join(&name))
            .unwrap();
        f.write_all(&kyrodb_backup_format::engine::WAL_MAGIC.to_le_bytes())
            .unwrap();
        (f, name)
    }

    fn write_manifest(&self) {
        let m = DataDirManifest::modern(
            self.snapshot.as_ref().map(|s| s.0.clone()),
            self.snapshot.as_ref().map(|s| s.1),
            self.segments.clone(),
            now(),
        );
        let tmp = self.dir.join("MANIFEST.tmp");
        let mut f = File::create(&tmp).unwrap();
        f.write_all(&m.to_bytes()).unwrap();
        f.sync_all().unwrap();
        fs::rename(&tmp, self.dir.join("MANIFEST")).unwrap();
        fsync_dir(&self.dir);
    }

    fn append(&mut self, op: WalOp, doc_id: u64, embedding: Vec<f32>, metadata: Metadata) {
        self.seq += 1;
        let entry = WalEntry {
            op,
            doc_id,
            embedding,
            metadata,
            seq_no: self.seq,
            timestamp: now(),
        };
        let body = encode_entry(&entry, WalLayout::W3);
        // Two writes per frame, as an append can be observed half done.
        let mut head = (body.len() as u32).to_le_bytes().to_vec();
        head.extend_from_slice(&body);
        self.current.write_all(&head).unwrap();
        self.current
            .write_all(&crc32fast::hash(&body).to_le_bytes())
            .unwrap();
        self.current_bytes += head.len() as u64 + 4;
        match op {
            WalOp::Insert => {
                self.state
                    .insert(doc_id, entry.embedding.clone(), entry.metadata.clone());
            }
            WalOp::Delete => self.state.delete(doc_id),
            WalOp::UpdateMetadata => self.state.update_metadata(doc_id, entry.metadata.clone()),
        }
        self.log.lock().unwrap().push(entry);
    }

    /// Inserts (or replaces) a document.
    pub fn insert(&mut self, id: u64, seed: u64) {
        let emb = (0..self.dimension)
            .map(|j| ((seed * 31 + j as u64 * 7) % 101) as f32 / 101.0)
            .collect();
        self.append(
            WalOp::Insert,
            id,
            emb,
            vec![("seed".into(), seed.to_string())],
        );
    }

    /// Inserts (or replaces) a document with exactly this embedding (no metadata).
    #[allow(dead_code)] // xtask's benchmarks include this file and do not call it
    pub fn insert_embedding(&mut self, id: u64, embedding: Vec<f32>) {
        self.append(WalOp::Insert, id, embedding, Vec::new());
    }

    /// Deletes a document.
    pub fn delete(&mut self, id: u64) {
        self.append(WalOp::Delete, id, Vec::new(), Vec::new());
    }

    /// Replaces a document's metadata.
    pub fn update(&mut self, id: u64, tag: &str) {
        self.append(
            WalOp::UpdateMetadata,
            id,
            Vec::new(),
            vec![("tag".into(), tag.into())],
        );
    }

    /// Starts a new segment and lists it in the MANIFEST.
    pub fn rotate(&mut self) {
        let (f, name) = Self::new_segment(&self.dir, self.next_file_id);
        self.next_file_id += 1;
        self.current = f;
        self.current_bytes = 4;
        self.segments.push(name);
        self.write_manifest();
    }

    /// Takes a snapshot of everything written, names it in the MANIFEST, then deletes every
    /// segment whose entries it covers (all but the active one) and rewrites the MANIFEST.
    pub fn snapshot(&mut self) {
        let id = self.next_file_id;
        self.next_file_id += 1;
        let docs: Vec<(u64, Vec<f32>)> = self
            .state
            .docs
            .iter()
            .map(|(id, d)| (*id, d.embedding.clone()))
            .collect();
        let metadata = self
            .state
            .docs
            .iter()
            .map(|(id, d)| (*id, d.metadata.clone().into_iter().collect()))
            .collect();
        let snap = Snapshot {
            layout: SnapshotLayout::V4,
            timestamp: now(),
            doc_count: docs.len() as u64,
            dimension: if docs.is_empty() {
                0
            } else {
                self.dimension as u64
            },
            documents: docs,
            metadata,
            distance: Some(DistanceMetric::Cosine),
            ann_search_mode: None,
            quantized_rerank_multiplier: None,
            last_wal_seq: self.seq,
        };
        let tmp = self.dir.join(format!("snapshot_{id}.tmp"));
        let mut f = File::create(&tmp).unwrap();
        snap.write(&mut f).unwrap();
        f.sync_all().unwrap();
        let name = format!("snapshot_{id}.snap");
        fs::rename(&tmp, self.dir.join(&name)).unwrap();
        self.snapshot = Some((name, self.seq));
        self.write_manifest();
        let active = self.segments.pop().unwrap();
        for old in self.segments.drain(..) {
            fs::remove_file(self.dir.join(old)).unwrap();
        }
        self.segments.push(active);
        self.write_manifest();
    }
}

/// The state after the first `upto` sequence numbers of the log (on top of the state the
/// directory had when the engine opened it).
pub fn state_after(base: &FullState, base_seq: u64, log: &[WalEntry], upto: u64) -> FullState {
    let mut s = base.clone();
    for e in log.iter().take_while(|e| e.seq_no <= upto) {
        if e.seq_no <= base_seq {
            continue;
        }
        match e.op {
            WalOp::Insert => s.insert(e.doc_id, e.embedding.clone(), e.metadata.clone()),
            WalOp::Delete => s.delete(e.doc_id),
            WalOp::UpdateMetadata => s.update_metadata(e.doc_id, e.metadata.clone()),
        }
    }
    s
}
