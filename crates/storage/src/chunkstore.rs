//! A chain's content-addressed chunk store.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use kyrodb_backup_backend::{Backend, Written};
use kyrodb_backup_crypto::RepoKeys;

use kyrodb_backup_format::repo::{
    chunk_header, decode_chunk_with, encode_chunk, stored_chunk_payload, ChunkRef, ContentHash,
    FileEntry, FileKind, CHUNK_HEADER_LEN, MAX_CHUNK_SIZE,
};
use xxhash_rust::xxh3::Xxh3;

use crate::error::{Error, Result};

/// Smallest chunk the content-defined chunker cuts (except a file's last).
pub const MIN_CHUNK: u32 = 256 * 1024;
/// Average chunk size the chunker aims for.
pub const AVG_CHUNK: u32 = 1024 * 1024;
/// Largest chunk the chunker cuts (well under [`MAX_CHUNK_SIZE`]).
pub const MAX_CHUNK: u32 = 4 * 1024 * 1024;

const _: () = assert!(MAX_CHUNK <= MAX_CHUNK_SIZE);

/// The bytes of one chunk, shared by the workers that store it and any other consumer.
pub type SharedChunk = std::sync::Arc<Vec<u8>>;

/// Counters of what storing files added to a chain.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Chunks written by this run.
    pub new_chunks: u64,
    /// Chunks the chain already had.
    pub reused_chunks: u64,
    /// Bytes of chunk files written by this run.
    pub stored_bytes: u64,
    /// Files an incremental took over from its reference without reading them.
    pub unchanged_files: u64,
    /// Their bytes.
    pub unchanged_bytes: u64,
}

/// The chunk store of one chain: `<hh>/<xxh3-128 hex>` objects, each a self-checking chunk.
///
/// Chunks are immutable once written: a chunk that exists is never rewritten (unless it is
/// visibly damaged, when the true bytes in hand repair it). Writes are atomic and create-only;
/// [`ChainStore::sync`] then makes them durable (on a local disk: once per directory rather
/// than once per chunk).
#[derive(Debug)]
pub struct ChainStore {
    backend: Arc<dyn Backend>,
    /// `chains/<id>/chunks/`.
    prefix: String,
    /// An object store's chunks and sizes, listed once when first needed: existence checks
    /// then cost no request per chunk. Only ever a hint: a chunk it misses is written
    /// create-only, which finds it.
    known: OnceLock<HashMap<ContentHash, u64>>,
    /// Chunk objects this store created: what [`ChainStore::discard_created`] removes when the
    /// backup they were for fails.
    created: Mutex<Vec<String>>,
    /// In a dry run: the chunks that would be written, each counted once; nothing is written.
    dry: Option<Mutex<std::collections::HashSet<ContentHash>>>,
    /// The first failure of the store (not damage) that a reader of this store met.
    failure: Mutex<Option<String>>,
    /// An encrypted repository's keys: chunks are named by a keyed hash and cut by a keyed
    /// chunker.
    keys: Option<Arc<RepoKeys>>,
    /// Whether a chunk read is hashed again to check it against its name. Always for a plain
    /// repository (the name is its only check); in an encrypted one, see
    /// [`ChainStore::trusting_seals`].
    recheck: bool,
    /// Tests: chunk writes left before every further one fails as if the disk were full.
    #[cfg(test)]
    pub(crate) writes_before_full: Option<std::sync::atomic::AtomicU64>,
}

impl ChainStore {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        prefix: String,
        keys: Option<Arc<RepoKeys>>,
    ) -> Self {
        Self {
            backend,
            prefix,
            keys,
            recheck: true,
            known: OnceLock::new(),
            created: Mutex::default(),
            dry: None,
            failure: Mutex::default(),
            #[cfg(test)]
            writes_before_full: None,
        }
    }

    /// This store in dry-run mode: [`put`](Self::put) and the file stores report what they
    /// would write (a chunk the chain lacks counts once, at its encoded size) and write
    /// nothing.
    #[must_use]
    pub fn dry_run(mut self) -> Self {
        self.dry = Some(Mutex::default());
        self
    }

    /// The name of a chunk with these bytes: XXH3-128, or in an encrypted repository a keyed
    /// BLAKE3 (so the same content is not recognisable by its name).
    pub fn id_of(&self, plain: &[u8]) -> ContentHash {
        match &self.keys {
            Some(k) => ContentHash(k.chunk_id(plain)),
            None => ContentHash::of(plain),
        }
    }

    /// This store, reading chunks of an encrypted repository without hashing each one again:
    /// a sealed chunk opens only when every byte is the one a key holder wrote under its name
    /// (the tag covers the bytes and the name), and a file read through
    /// [`ChainStore::reader`] is still checked whole against its manifest's hash. What restores
    /// use; `verify` keeps the recheck. No effect on a plain repository.
    #[must_use]
    pub fn trusting_seals(mut self) -> Self {
        self.recheck = self.keys.is_none();
        self
    }

    /// Whether two stores name chunks the same way (copying stored chunks between them keeps
    /// their names valid).
    pub fn same_naming(&self, other: &ChainStore) -> bool {
        match (&self.keys, &other.keys) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                a.chunk_id(b"kyrodb_backup naming probe")
                    == b.chunk_id(b"kyrodb_backup naming probe")
            }
            _ => false,
        }
    }

    fn is_local(&self) -> bool {
        self.backend.local_root().is_some()
    }

    /// Requests (local: threads) in flight when storing or reading a file's chunks.
    fn width(&self) -> usize {
        if self.is_local() {
            6
        } else {
            10
        }
    }

    /// Removes every chunk this store created (newest first), and makes that durable: what a
    /// backup that failed before its manifest was committed wrote. Chunks that existed before
    /// (shared with committed backups) are never touched; a damaged chunk that this store
    /// rewrote with its true content stays repaired. Best effort: what cannot be removed (a
    /// credential that may not delete) is left for the next prune (a chunk no manifest names).
    pub fn discard_created(&self) -> u64 {
        let created = std::mem::take(&mut *self.created.lock().expect("lock"));
        let mut removed = 0;
        for key in created.iter().rev() {
            if self.backend.delete(key).is_ok() {
                removed += 1;
            }
        }
        let _ = self.backend.sync();
        tracing::debug!(removed, "removed what the failed backup wrote");
        removed
    }

    /// The first failure of the store itself (unreachable, denied; not damage) that a reader
    /// of this store met: a check that met one is incomplete rather than failed.
    pub fn store_failure(&self) -> Option<String> {
        self.failure.lock().expect("lock").clone()
    }

    /// The key of the chunk with this hash.
    pub fn chunk_key(&self, hash: ContentHash) -> String {
        let hex = hash.to_hex();
        format!("{}{}/{hex}", self.prefix, &hex[..2])
    }

    /// Where the chunk with this hash lives, to name it to a person (a path or a URL).
    pub fn chunk_path(&self, hash: ContentHash) -> PathBuf {
        let key = self.chunk_key(hash);
        match self.backend.local_root() {
            Some(root) => root.join(key),
            None => PathBuf::from(format!("{}/{key}", self.backend.location())),
        }
    }

    /// An object store's chunks, listed once.
    fn known(&self) -> &HashMap<ContentHash, u64> {
        self.known.get_or_init(|| match self.backend.list(&self.prefix) {
            Ok(entries) => entries
                .into_iter()
                .filter_map(|e| {
                    let name = e.key.rsplit('/').next()?;
                    Some((name.parse().ok()?, e.size))
                })
                .collect(),
            Err(e) => {
                tracing::debug!(%e, "cannot list the chain's chunks; every chunk is written create-only");
                HashMap::new()
            }
        })
    }

    /// Whether the chunk exists.
    pub fn contains(&self, hash: ContentHash) -> bool {
        if self.is_local() {
            self.backend.read_head(&self.chunk_key(hash), 0).is_ok()
        } else {
            self.known().contains_key(&hash)
        }
    }

    /// Whether the chunk exists and its size (and, on a local disk, its header) fits its
    /// reference: a cheap check that catches missing, truncated or overwritten chunks
    /// (`verify` reads and hashes them in full).
    pub(crate) fn looks_intact(&self, r: ChunkRef) -> bool {
        let worst = CHUNK_HEADER_LEN as u64 + u64::from(r.size) + u64::from(r.size) / 255 + 64;
        if !self.is_local() {
            return self
                .known()
                .get(&r.hash)
                .is_some_and(|&size| size > CHUNK_HEADER_LEN as u64 && size <= worst);
        }
        let Ok((head, len)) = self
            .backend
            .read_head(&self.chunk_key(r.hash), CHUNK_HEADER_LEN as u64)
        else {
            return false;
        };
        head.len() == CHUNK_HEADER_LEN
            && chunk_header(&head).is_some_and(|(plain, payload)| {
                plain == r.size && len == CHUNK_HEADER_LEN as u64 + u64::from(payload)
            })
    }

    /// Whether every one of `chunks` exists with the size (and, on a local disk, the header) its
    /// reference says: what lets a file or list be taken over from an earlier backup, or a
    /// copy reuse chunks it stored for an earlier file, without the bytes in hand.
    pub fn all_intact(&self, chunks: &[ChunkRef]) -> bool {
        chunks.iter().all(|c| self.looks_intact(*c))
    }

    /// Stores one chunk unless the chain has it; returns its reference and the bytes written.
    ///
    /// # Errors
    ///
    /// When the chunk is too large or cannot be written.
    pub fn put(&self, plain: &[u8]) -> Result<(ChunkRef, u64)> {
        let hash = self.id_of(plain);
        let r = ChunkRef {
            hash,
            size: u32::try_from(plain.len()).map_err(|_| {
                Error::Capture(format!("chunk of {} bytes is too large", plain.len()))
            })?,
        };
        if self.looks_intact(r) {
            return Ok((r, 0));
        }
        if let Some(seen) = &self.dry {
            let first = seen.lock().expect("lock").insert(hash);
            let size = if first {
                encode_chunk(plain)?.bytes.len() as u64
            } else {
                0
            };
            return Ok((r, size));
        }
        #[cfg(test)]
        if let Some(left) = &self.writes_before_full {
            let full = left
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1),
                )
                .is_err();
            if full {
                return Err(Error::io(
                    self.chunk_path(hash),
                    io::Error::from_raw_os_error(28),
                ));
            }
        }
        let encoded = encode_chunk(plain)?;
        let stored = encoded.bytes.len() as u64;
        self.write_stored(hash, encoded.bytes)?;
        tracing::trace!(chunk = %hash, plain = plain.len(), stored, "chunk written");
        Ok((r, stored))
    }

    /// Copies one chunk from another chain store (of another repository, say) unless this one
    /// has it: the stored bytes are read, checked against the reference (decoded, sized,
    /// hashed) and written as they are, create-only. Returns the bytes written (0 when the
    /// chunk was there).
    ///
    /// # Errors
    ///
    /// [`Error::Damaged`] when the source's chunk is missing or does not check; the stores'
    /// errors.
    pub fn copy_from(&self, source: &ChainStore, r: &ChunkRef) -> Result<u64> {
        if self.looks_intact(*r) {
            return Ok(0);
        }
        let stored = source.read_stored(r)?;
        decode_chunk_with(&stored, r.hash, r.size, &|p| source.id_of(p))
            .map_err(|e| Error::Damaged(format!("{}: {e}", source.chunk_path(r.hash).display())))?;
        let size = stored.len() as u64;
        self.write_stored(r.hash, stored)?;
        Ok(size)
    }

    /// Writes a chunk's stored bytes (already checked to be that chunk). Missing: written
    /// create-only (another create may write the same chunk at the same time; either copy is
    /// the chunk), and remembered as created. Present but visibly damaged (wrong header or
    /// size): the bytes in hand are its true content, so replacing it repairs the chain.
    fn write_stored(&self, hash: ContentHash, bytes: Vec<u8>) -> Result<()> {
        let key = self.chunk_key(hash);
        if self.contains(hash) {
            self.backend.write(&key, &bytes)?;
        } else if self.backend.write_new_owned(&key, bytes)? == Written::Created {
            self.created.lock().expect("lock").push(key);
        }
        Ok(())
    }

    /// A chunk's stored bytes, unchecked (bounded by the largest a chunk of its size can be).
    fn read_stored(&self, r: &ChunkRef) -> Result<Vec<u8>> {
        let key = self.chunk_key(r.hash);
        let name = self.chunk_path(r.hash);
        // A chunk is at most its header plus an LZ4 worst case; anything larger is damage.
        let limit = u64::from(r.size) + u64::from(r.size) / 255 + 64;
        match self.backend.read(&key, limit) {
            Ok(b) => Ok(b),
            Err(e) if e.is_not_found() => Err(Error::Damaged(format!(
                "chunk {} is missing ({})",
                r.hash,
                name.display()
            ))),
            Err(kyrodb_backup_backend::Error::Damaged { detail, .. }) => Err(Error::Damaged(
                format!("chunk {}: {}: {detail}", r.hash, name.display()),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// A checked chunk's plain bytes, copied out (for tests).
    #[cfg(test)]
    pub(crate) fn get(&self, r: &ChunkRef) -> Result<Vec<u8>> {
        self.get_plain(r).map(|p| p.bytes[p.start..].to_vec())
    }

    /// Reads and checks one chunk: present, decodable, of the size and hash the manifest says.
    /// A chunk stored uncompressed is not copied: its plain bytes are checked where they were
    /// read, after the header (the same checks as [`decode_chunk_with`]; a chunk that fails
    /// any of them goes through it for its message).
    ///
    /// # Errors
    ///
    /// [`Error::Damaged`] when the chunk is missing or does not check; [`Error::Backend`] when
    /// the store cannot be read.
    fn get_plain(&self, r: &ChunkRef) -> Result<Plain> {
        let stored = self.read_stored(r)?;
        let checks = stored_chunk_payload(&stored).is_some_and(|plain| {
            plain.len() == r.size as usize && (!self.recheck || self.id_of(plain) == r.hash)
        });
        if checks {
            return Ok(Plain {
                bytes: stored,
                start: CHUNK_HEADER_LEN,
            });
        }
        // Without the recheck (a sealed chunk, see `trusting_seals`), the name stands for itself.
        let id_of = |p: &[u8]| if self.recheck { self.id_of(p) } else { r.hash };
        decode_chunk_with(&stored, r.hash, r.size, &id_of)
            .map(|bytes| Plain { bytes, start: 0 })
            .map_err(|e| Error::Damaged(format!("{}: {e}", self.chunk_path(r.hash).display())))
    }

    /// Splits a file into content-defined chunks, stores the ones the chain lacks, and returns
    /// the file's entry. The chunker runs on this thread; six workers (ten on an object store,
    /// behind a queue of four) hash, encode, write and fsync chunks behind a bounded queue, so writes overlap chunking and memory stays bounded
    /// by a dozen chunks. More workers than cores because most of a worker's time is spent
    /// waiting for its fsync; several in flight let the file system commit them together.
    ///
    /// # Errors
    ///
    /// When reading `r` or writing a chunk fails.
    pub fn store_file(
        &self,
        reader: impl Read,
        name: &str,
        kind: FileKind,
        stats: &mut StoreStats,
        progress: &dyn crate::Progress,
    ) -> Result<FileEntry> {
        self.store_file_with(reader, name, kind, stats, progress, &mut |_| {})
    }

    /// [`store_file`](Self::store_file) that also hands every chunk, in file order, to
    /// `each_chunk` as soon as it is cut: a second consumer of the same bytes (the replay of
    /// `create`) needs no second read of the file.
    ///
    /// # Errors
    ///
    /// When reading `r` or writing a chunk fails.
    pub fn store_file_with(
        &self,
        reader: impl Read,
        name: &str,
        kind: FileKind,
        stats: &mut StoreStats,
        progress: &dyn crate::Progress,
        each_chunk: &mut dyn FnMut(&SharedChunk),
    ) -> Result<FileEntry> {
        let workers = self.width();
        let mut whole = Xxh3::new();
        let mut size = 0u64;
        let mut results: Vec<Option<Result<(ChunkRef, u64)>>> = Vec::new();
        let (jobs, queue) =
            std::sync::mpsc::sync_channel::<(usize, SharedChunk)>(if self.is_local() {
                workers
            } else {
                4
            });
        let queue = std::sync::Mutex::new(queue);
        let (done, finished) = std::sync::mpsc::channel();
        let read_error = std::thread::scope(|s| {
            for _ in 0..workers {
                let (queue, done) = (&queue, done.clone());
                s.spawn(move || loop {
                    let job = queue.lock().expect("queue lock").recv();
                    let Ok((i, data)) = job else { break };
                    if done.send((i, self.put(&data))).is_err() {
                        break;
                    }
                });
            }
            drop(done);
            let mut read_error = None;
            let mut count = 0;
            let chunks: Box<dyn Iterator<Item = io::Result<Vec<u8>>>> = match &self.keys {
                None => Box::new(
                    fastcdc::v2020::StreamCDC::new(reader, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
                        .map(|c| c.map(|c| c.data).map_err(io::Error::other)),
                ),
                Some(keys) => Box::new(crate::cdc::GearChunker::new(
                    reader,
                    Arc::new(*keys.gear()),
                    MIN_CHUNK,
                    AVG_CHUNK,
                    MAX_CHUNK,
                )),
            };
            for chunk in chunks {
                match chunk {
                    Ok(chunk) => {
                        whole.update(&chunk);
                        size += chunk.len() as u64;
                        progress.advance(chunk.len() as u64);
                        let data = SharedChunk::new(chunk);
                        each_chunk(&data);
                        if jobs.send((count, data)).is_err() {
                            break;
                        }
                        count += 1;
                    }
                    Err(e) => {
                        read_error = Some(Error::Capture(format!("{name}: read failed: {e}")));
                        break;
                    }
                }
            }
            drop(jobs);
            results.resize_with(count, || None);
            for (i, r) in finished {
                results[i] = Some(r);
            }
            read_error
        });
        if let Some(e) = read_error {
            return Err(e);
        }
        let mut chunks = Vec::with_capacity(results.len());
        for r in results {
            let (r, written) = r.expect("every chunk was stored")?;
            if written > 0 {
                stats.new_chunks += 1;
                stats.stored_bytes += written;
            } else {
                stats.reused_chunks += 1;
            }
            chunks.push(r);
        }
        Ok(FileEntry {
            name: name.to_string(),
            kind,
            size,
            hash: ContentHash(whole.digest128()),
            chunks,
            wal_index: None,
            source: None,
        })
    }

    /// Makes every chunk written so far durable.
    ///
    /// # Errors
    ///
    /// When the store cannot make them durable.
    pub fn sync(&self) -> Result<()> {
        Ok(self.backend.sync()?)
    }

    /// A reader of a stored file's bytes that checks every chunk and, at the end, the
    /// whole-file hash. Damage surfaces as an `InvalidData` I/O error naming the chunk.
    pub fn reader<'a>(&'a self, entry: &'a FileEntry) -> FileReader<'a> {
        FileReader {
            store: self,
            entry,
            next: 0,
            buf: Plain::default(),
            whole: Xxh3::new(),
            done: false,
            ahead: None,
            width: if self.is_local() {
                READ_AHEAD
            } else {
                READ_AHEAD + READ_AHEAD / 4
            },
        }
    }
}

/// A checked chunk's plain bytes: `bytes[start..]` (a chunk stored uncompressed keeps its
/// header in front, so its bytes are not copied).
#[derive(Default)]
struct Plain {
    bytes: Vec<u8>,
    start: usize,
}

/// Chunks read and checked ahead of the reader: reader thread `k` serves chunks `k`, `k + n`,
/// `k + 2n` and so on, in order, through its own channel.
type Ahead = Vec<std::sync::mpsc::Receiver<Result<Plain>>>;

/// How many threads read chunks ahead of the reader from a local disk, each with one chunk
/// ready: several reads in flight keep the disk's queue full (one at a time leaves it idle
/// between chunk files), and memory stays bounded by a few chunks. An object store gets a quarter
/// more, to hide its round trips (more buys little on a 2-core machine and costs about
/// 4 MiB each).
const READ_AHEAD: usize = 8;

/// Reads a stored file chunk by chunk; see [`ChainStore::reader`].
pub struct FileReader<'a> {
    store: &'a ChainStore,
    entry: &'a FileEntry,
    next: usize,
    /// The current chunk; `buf.start` moves past what was read of it.
    buf: Plain,
    whole: Xxh3,
    done: bool,
    ahead: Option<Ahead>,
    width: usize,
}

impl FileReader<'_> {
    /// Starts a thread that reads, decodes and checks the file's chunks ahead of the reader,
    /// so disk reads overlap hashing and whatever the caller does with the bytes.
    fn start_ahead(&mut self) -> &Ahead {
        self.ahead.get_or_insert_with(|| {
            let chunks = std::sync::Arc::new(self.entry.chunks.clone());
            let width = self.width;
            (0..width.min(chunks.len()).max(1))
                .map(|k| {
                    let (tx, rx) = std::sync::mpsc::sync_channel(1);
                    let mut store = ChainStore::new(
                        Arc::clone(&self.store.backend),
                        self.store.prefix.clone(),
                        self.store.keys.clone(),
                    );
                    store.recheck = self.store.recheck;
                    let chunks = std::sync::Arc::clone(&chunks);
                    std::thread::spawn(move || {
                        for r in chunks.iter().skip(k).step_by(width) {
                            if tx.send(store.get_plain(r)).is_err() {
                                break;
                            }
                        }
                    });
                    rx
                })
                .collect()
        })
    }

    /// Makes the current chunk hold unread bytes, taking the next checked chunk when it is
    /// used up; `false` at the end of the file, once the whole-file hash checked.
    fn fill(&mut self) -> io::Result<bool> {
        while self.buf.start == self.buf.bytes.len() {
            if self.done {
                return Ok(false);
            }
            if self.next == self.entry.chunks.len() {
                let actual = ContentHash(self.whole.digest128());
                self.done = true;
                if actual != self.entry.hash {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: whole-file hash {actual} does not match the manifest's {}",
                            self.entry.name, self.entry.hash
                        ),
                    ));
                }
                return Ok(false);
            }
            let which = self.next % self.width;
            let next = self.start_ahead()[which]
                .recv()
                .map_err(|_| io::Error::other("chunk reader thread stopped"))?;
            self.buf = next.map_err(|e| match e {
                // The store failing is not damage: it travels as its own error, and the store
                // remembers it (see `ChainStore::store_failure`).
                Error::Backend(b) => {
                    let text = b.to_string();
                    self.store
                        .failure
                        .lock()
                        .expect("lock")
                        .get_or_insert_with(|| text.clone());
                    io::Error::other(StoreFailure(text))
                }
                e => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
            })?;
            self.whole.update(&self.buf.bytes[self.buf.start..]);
            self.next += 1;
        }
        Ok(true)
    }

    /// The next bytes of the file without copying them: the unread rest of the current chunk,
    /// or the next chunk whole, checked; `None` at the end, once the whole-file hash checked.
    /// What [`Read::read`] would copy out, for a caller that writes the bytes on as they are.
    ///
    /// # Errors
    ///
    /// As [`Read::read`]: `InvalidData` for damage, a [`store_failure`] for the store failing.
    pub fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        if !self.fill()? {
            return Ok(None);
        }
        let start = self.buf.start;
        self.buf.start = self.buf.bytes.len();
        Ok(Some(&self.buf.bytes[start..]))
    }
}

impl Read for FileReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if !self.fill()? {
            return Ok(0);
        }
        let rest = &self.buf.bytes[self.buf.start..];
        let n = out.len().min(rest.len());
        out[..n].copy_from_slice(&rest[..n]);
        self.buf.start += n;
        Ok(n)
    }
}

/// A read that failed because the store did (unreachable, denied), carried inside an
/// [`io::Error`] by [`FileReader`]; see [`store_failure`].
#[derive(Debug)]
pub(crate) struct StoreFailure(pub(crate) String);

impl std::fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreFailure {}

/// When a [`FileReader`]'s error is the store failing (not damage), what failed.
pub fn store_failure(e: &io::Error) -> Option<String> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<StoreFailure>())
        .map(|f| f.0.clone())
}
