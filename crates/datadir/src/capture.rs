//! Opening one consistent state of a live data directory: the MANIFEST read once, and every
//! file it names opened before the engine can delete it.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use kyrodb_backup_durable::{open_no_follow, IoContext};
use kyrodb_backup_format::engine::{
    is_snapshot_file_name, is_wal_file_name, DataDirManifest, WalReader,
};
use kyrodb_backup_format::repo::{FileKind, SourceStamp, WalIndex};

use crate::error::{Error, Result};

/// How often the MANIFEST is read again when a file it names vanishes before it is opened
/// (the engine compacted or replaced it in between).
pub const MAX_CAPTURE_ATTEMPTS: u32 = 8;

/// A file of the captured state, open (a later deletion cannot take it away).
#[derive(Debug)]
pub struct OpenedFile {
    /// Its name in the data directory.
    pub name: String,
    /// Snapshot or WAL segment.
    pub kind: FileKind,
    /// The open file.
    pub file: File,
    /// What `fstat` said when it was opened (its length is what belongs to the state, except
    /// for a WAL segment's torn tail: see [`scan_wal`]).
    pub stamp: SourceStamp,
}

/// The files of one MANIFEST generation of a data directory.
#[derive(Debug)]
pub struct OpenedState {
    /// The MANIFEST's bytes, as read.
    pub manifest_bytes: Vec<u8>,
    /// The files it names, open, snapshot first, then WAL segments in order.
    pub files: Vec<OpenedFile>,
    /// Every name in the directory when it was read, sorted.
    pub listing: Vec<String>,
    /// How many MANIFEST reads it took.
    pub attempts: u32,
}

impl OpenedState {
    /// Names in the directory that are not part of the state, with why they were left out.
    pub fn skipped(&self) -> Vec<(String, &'static str)> {
        self.listing
            .iter()
            .filter(|n| n.as_str() != "MANIFEST" && !self.files.iter().any(|f| &f.name == *n))
            .map(|n| (n.clone(), skip_reason(n)))
            .collect()
    }
}

/// Opens the files of one MANIFEST generation of `dir`, reading the MANIFEST again (up to
/// [`MAX_CAPTURE_ATTEMPTS`] times, with a growing pause) when a file it names vanished first.
///
/// # Errors
///
/// [`Error::DataDir`] when `dir` is missing, has no MANIFEST, names files that are not the
/// engine's, or keeps changing; [`Error::Format`] for a MANIFEST that does not parse.
pub fn open_consistent(dir: &Path) -> Result<OpenedState> {
    if !dir.is_dir() {
        return Err(Error::DataDir(format!(
            "data directory {} does not exist",
            dir.display()
        )));
    }
    let mut attempts = 0;
    loop {
        attempts += 1;
        if let Some(mut s) = open_state(dir)? {
            tracing::debug!(
                attempt = attempts,
                files = s.files.len(),
                "opened every file the MANIFEST names"
            );
            s.attempts = attempts;
            return Ok(s);
        }
        tracing::debug!(
            attempt = attempts,
            "a file named by the MANIFEST vanished; reading it again"
        );
        if attempts >= MAX_CAPTURE_ATTEMPTS {
            return Err(Error::DataDir(format!(
                "files named by {}/MANIFEST vanished {attempts} times in a row while opening them",
                dir.display()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(20 * u64::from(attempts)));
    }
}

/// What opening a file of the state gave: `None` when it vanished (the engine deleted it
/// meanwhile); an error for anything but a regular file.
pub(crate) fn open_regular(
    opened: io::Result<File>,
    path: &Path,
) -> Result<Option<(File, fs::Metadata)>> {
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).at(path)?,
    };
    let meta = file.metadata().at(path)?;
    if !meta.is_file() {
        return Err(Error::DataDir(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(Some((file, meta)))
}

/// The MANIFEST of `dir`, read.
///
/// # Errors
///
/// [`Error::DataDir`] when there is none.
pub fn read_manifest(dir: &Path) -> Result<Vec<u8>> {
    let mpath = dir.join("MANIFEST");
    match fs::read(&mpath) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::DataDir(format!(
            "{} has no MANIFEST: not a KyroDB data directory",
            dir.display()
        ))),
        Err(e) => Err(e).at(&mpath)?,
    }
}

/// Every name in `dir`, sorted.
///
/// # Errors
///
/// When the directory cannot be read.
pub fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).at(dir)? {
        names.push(e.at(dir)?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Reads the MANIFEST once and opens every file it names; `None` when a named file vanished.
fn open_state(dir: &Path) -> Result<Option<OpenedState>> {
    let manifest_bytes = read_manifest(dir)?;
    let manifest = DataDirManifest::parse(&manifest_bytes).map_err(|e| e.in_file("MANIFEST"))?;
    let listing = list_dir(dir)?;
    let mut wanted = Vec::new();
    if let Some(s) = manifest.snapshot_file() {
        if !is_snapshot_file_name(&s) {
            return Err(Error::DataDir(format!(
                "MANIFEST names {s:?}, which is not a snapshot file name"
            )));
        }
        wanted.push((s, FileKind::Snapshot));
    }
    for w in manifest.wal_segments(&listing) {
        if !is_wal_file_name(&w) {
            return Err(Error::DataDir(format!(
                "MANIFEST lists {w:?}, which is not a WAL file name"
            )));
        }
        wanted.push((w, FileKind::Wal));
    }
    let mut files = Vec::new();
    for (name, kind) in wanted {
        let path = dir.join(&name);
        let Some((file, meta)) = open_regular(open_no_follow(&path), &path)? else {
            return Ok(None);
        };
        let stamp = SourceStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        };
        files.push(OpenedFile {
            name,
            kind,
            file,
            stamp,
        });
    }
    Ok(Some(OpenedState {
        manifest_bytes,
        files,
        listing,
        attempts: 0,
    }))
}

/// Why a name in a data directory is not part of its state.
pub fn skip_reason(name: &str) -> &'static str {
    if Path::new(name)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("tmp"))
    {
        "temporary file of an interrupted write"
    } else if is_snapshot_file_name(name) {
        "older snapshot the MANIFEST does not name"
    } else if is_wal_file_name(name) {
        "WAL segment the MANIFEST does not list"
    } else {
        "not part of the KyroDB state"
    }
}

/// A positional reader over a prefix of an open file: many may read one file independently.
#[derive(Debug)]
pub struct PrefixReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl<'a> PrefixReader<'a> {
    /// Reads `file[0..end]`.
    pub fn new(file: &'a File, end: u64) -> Self {
        Self { file, pos: 0, end }
    }
}

impl Read for PrefixReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being read",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Length of a WAL segment's first `len` bytes up to its last whole frame, as the engine would
/// replay it, and the index of its entries. A bad CRC is corruption the engine refuses to
/// start on, so it is an error, not a cut.
///
/// # Errors
///
/// [`Error::Format`], naming the segment.
pub fn scan_wal(name: &str, file: &File, len: u64) -> Result<(u64, WalIndex)> {
    let mut reader = WalReader::new(io::BufReader::with_capacity(
        1 << 20,
        PrefixReader::new(file, len),
    ))
    .map_err(|e| e.in_file(name))?;
    let mut index = WalIndex::default();
    while let Some(frame) = reader.next_frame().map_err(|e| e.in_file(name))? {
        index.push(frame.entry.seq_no, frame.entry.timestamp);
    }
    Ok((reader.valid_len(), index))
}
