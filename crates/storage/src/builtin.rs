//! Backups made by the engine's built-in backup tool: `backup_<uuid>.json` + `backup_<uuid>.tar`
//! pairs in the backup directory, read so operators keep their history when they switch tools.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use kyrodb_backup_format::engine::{
    is_snapshot_file_name, is_wal_file_name, recover, DataDirManifest, FileSource, LiveIds,
    RecoveryOptions, SnapshotReader, WalReader,
};
use kyrodb_backup_format::repo::is_backup_id;
use serde::Deserialize;

use crate::error::{Error, IoContext, Result};

/// Most members an archive may claim (the tool writes a handful).
const MAX_MEMBERS: u32 = 100_000;

/// The `backup_<uuid>.json` of the built-in tool.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct BuiltinMeta {
    /// Backup id (a UUID).
    pub id: String,
    /// Unix second taken.
    pub timestamp: u64,
    /// `Full` or `Incremental`.
    pub backup_type: String,
    /// Archive size.
    pub size_bytes: u64,
    /// The snapshot header's `doc_count` (0 for incrementals).
    pub vector_count: u64,
    /// Wrapping sum of the CRC-32 of each member's data.
    pub checksum: u32,
    /// Parent backup (incrementals).
    pub parent_id: Option<String>,
    /// Operator's text.
    #[serde(default)]
    pub description: String,
    /// Highest WAL file id captured.
    #[serde(default)]
    pub max_wal_file_id: Option<u64>,
    /// The snapshot captured (fulls).
    #[serde(default)]
    pub snapshot_file: Option<String>,
}

/// One built-in backup found in the backup directory.
#[derive(Debug, Clone)]
pub struct BuiltinBackup {
    /// Its metadata.
    pub meta: BuiltinMeta,
    /// Its archive.
    pub archive: PathBuf,
}

/// A member of an archive: where its data lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// File name.
    pub name: String,
    /// Offset of its data in the archive.
    pub offset: u64,
    /// Length of its data.
    pub len: u64,
}

/// Every built-in backup of `dir`, oldest first, and the metadata files that cannot be read.
pub fn list_builtin(dir: &Path) -> (Vec<BuiltinBackup>, Vec<(PathBuf, Error)>) {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return (found, problems);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name
            .strip_prefix("backup_")
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        if !is_backup_id(id) {
            continue;
        }
        let path = e.path();
        let meta = fs::read(&path)
            .map_err(|err| Error::io(&path, err))
            .and_then(|b| {
                serde_json::from_slice::<BuiltinMeta>(&b).map_err(|err| {
                    Error::Damaged(format!(
                        "{}: not built-in backup metadata: {err}",
                        path.display()
                    ))
                })
            })
            .and_then(|m| {
                if m.id == id {
                    Ok(m)
                } else {
                    Err(Error::Damaged(format!(
                        "{}: names backup {}",
                        path.display(),
                        m.id
                    )))
                }
            });
        match meta {
            Ok(meta) => found.push(BuiltinBackup {
                archive: dir.join(format!("backup_{id}.tar")),
                meta,
            }),
            Err(err) => problems.push((path, err)),
        }
    }
    found.sort_by(|a, b| (a.meta.timestamp, &a.meta.id).cmp(&(b.meta.timestamp, &b.meta.id)));
    (found, problems)
}

fn read_u32(r: &mut impl Read, path: &Path) -> Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).map_err(|e| truncated(path, &e))?;
    Ok(u32::from_le_bytes(b))
}

fn truncated(path: &Path, e: &io::Error) -> Error {
    Error::Damaged(format!("{}: archive truncated ({e})", path.display()))
}

/// Reads an archive's member table without reading member data.
pub fn archive_members(path: &Path) -> Result<Vec<Member>> {
    let file = crate::fsutil::open_no_follow(path).at(path)?;
    let size = file.metadata().at(path)?.len();
    let mut r = BufReader::new(file);
    let count = read_u32(&mut r, path)?;
    if count > MAX_MEMBERS {
        return Err(Error::Damaged(format!(
            "{}: claims {count} members",
            path.display()
        )));
    }
    let mut pos = 4u64;
    let mut out = Vec::new();
    for _ in 0..count {
        let name_len = read_u32(&mut r, path)?;
        if name_len > 4096 {
            return Err(Error::Damaged(format!(
                "{}: a member name of {name_len} bytes",
                path.display()
            )));
        }
        let mut name = vec![0u8; name_len as usize];
        r.read_exact(&mut name).map_err(|e| truncated(path, &e))?;
        let name = String::from_utf8(name).map_err(|_| {
            Error::Damaged(format!("{}: a member name is not UTF-8", path.display()))
        })?;
        if name != "MANIFEST" && !is_snapshot_file_name(&name) && !is_wal_file_name(&name) {
            return Err(Error::Damaged(format!(
                "{}: member {name:?} is not a KyroDB file name",
                path.display()
            )));
        }
        let mut lb = [0u8; 8];
        r.read_exact(&mut lb).map_err(|e| truncated(path, &e))?;
        let len = u64::from_le_bytes(lb);
        pos += 4 + u64::from(name_len) + 8;
        if len > size.saturating_sub(pos) {
            return Err(Error::Damaged(format!(
                "{}: member {name} claims {len} bytes past the end of the archive",
                path.display()
            )));
        }
        out.push(Member {
            name,
            offset: pos,
            len,
        });
        pos += len;
        r.seek(SeekFrom::Start(pos)).at(path)?;
    }
    if pos != size {
        return Err(Error::Damaged(format!(
            "{}: {} bytes after the last member",
            path.display(),
            size - pos
        )));
    }
    Ok(out)
}

/// A reader of one member's data.
pub fn member_reader(archive: &Path, m: &Member) -> Result<impl Read> {
    let mut f = crate::fsutil::open_no_follow(archive).at(archive)?;
    f.seek(SeekFrom::Start(m.offset)).at(archive)?;
    Ok(BufReader::new(f.take(m.len)))
}

/// The backups whose archives rebuild `b`, oldest (the full) first.
pub fn builtin_chain<'a>(
    b: &'a BuiltinBackup,
    all: &'a [BuiltinBackup],
) -> Result<Vec<&'a BuiltinBackup>> {
    let mut chain = vec![b];
    let mut cur = b;
    while let Some(parent) = &cur.meta.parent_id {
        let p = all.iter().find(|x| &x.meta.id == parent).ok_or_else(|| {
            Error::Damaged(format!(
                "built-in backup {}: its parent {parent} is missing, so its chain cannot be rebuilt",
                cur.meta.id
            ))
        })?;
        if chain.len() > all.len() {
            return Err(Error::Damaged(format!(
                "built-in backup {}: its parents form a loop",
                b.meta.id
            )));
        }
        chain.push(p);
        cur = p;
    }
    if cur.meta.backup_type != "Full" {
        return Err(Error::Damaged(format!(
            "built-in backup {}: its chain starts with {}, which is not a full backup",
            b.meta.id, cur.meta.id
        )));
    }
    chain.reverse();
    Ok(chain)
}

/// The files extracting a chain's archives in order yields: name → (archive, member).
pub fn extracted(chain: &[&BuiltinBackup]) -> Result<BTreeMap<String, (PathBuf, Member)>> {
    let mut files = BTreeMap::new();
    for b in chain {
        for m in archive_members(&b.archive)? {
            files.insert(m.name.clone(), (b.archive.clone(), m));
        }
    }
    Ok(files)
}

struct ExtractedSource<'a>(&'a BTreeMap<String, (PathBuf, Member)>);

impl FileSource for ExtractedSource<'_> {
    fn open(&mut self, name: &str) -> io::Result<Box<dyn Read + '_>> {
        let (path, m) = self.0.get(name).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{name} is in no archive of the chain"),
            )
        })?;
        member_reader(path, m)
            .map(|r| Box::new(r) as Box<dyn Read>)
            .map_err(|e| io::Error::other(e.to_string()))
    }
    fn list(&mut self) -> io::Result<Vec<String>> {
        Ok(self.0.keys().cloned().collect())
    }
}

/// Checks one built-in backup and its chain: archives present and well formed, checksums as
/// recorded, every member decodes, and the extracted chain recovers. The tool's incrementals
/// hold only WAL segments, so when the engine took a snapshot between two of its backups the
/// chain's MANIFEST names a snapshot no archive holds: the engine would then silently load an
/// older one and lose documents. That is reported as damage, not reproduced.
/// Returns the live document count of the rebuilt state.
pub fn check_builtin(b: &BuiltinBackup, all: &[BuiltinBackup]) -> Result<u64> {
    let chain = builtin_chain(b, all)?;
    for link in &chain {
        let members = archive_members(&link.archive)?;
        let mut sum = 0u32;
        for m in &members {
            let mut hasher = crc32fast::Hasher::new();
            let mut r = member_reader(&link.archive, m)?;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = r.read(&mut buf).at(&link.archive)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            sum = sum.wrapping_add(hasher.finalize());
            decode_member(&link.archive, m)?;
        }
        if sum != link.meta.checksum {
            return Err(Error::Damaged(format!(
                "built-in backup {}: archive checksum {sum} does not match the recorded {}",
                link.meta.id, link.meta.checksum
            )));
        }
    }
    let files = extracted(&chain)?;
    let (mpath, mm) = files.get("MANIFEST").ok_or_else(|| {
        Error::Damaged(format!(
            "built-in backup {}: no archive of its chain holds a MANIFEST",
            b.meta.id
        ))
    })?;
    let mut mbytes = Vec::new();
    member_reader(mpath, mm)?
        .read_to_end(&mut mbytes)
        .at(mpath)?;
    let manifest = DataDirManifest::parse(&mbytes).map_err(|e| e.in_file("MANIFEST"))?;
    if let Some(snap) = manifest.snapshot_file() {
        if !files.contains_key(&snap) {
            return Err(Error::Damaged(format!(
                "built-in backup {}: its MANIFEST names {snap}, which no archive of its chain holds \
                 (the engine took a snapshot between backups and the built-in tool's incrementals \
                 hold only WAL); restoring it would make the engine fall back to an older snapshot \
                 and lose documents. Restore an earlier backup of the chain, or a newer full backup",
                b.meta.id
            )));
        }
    }
    let mut ids = LiveIds::default();
    recover(
        &mut ExtractedSource(&files),
        &mut ids,
        &RecoveryOptions::default(),
    )
    .map_err(|e| Error::Damaged(format!("built-in backup {}: {e}", b.meta.id)))?;
    Ok(ids.len() as u64)
}

fn decode_member(archive: &Path, m: &Member) -> Result<()> {
    let r = member_reader(archive, m)?;
    let res = if m.name == "MANIFEST" {
        let mut b = Vec::new();
        r.take(1 << 20).read_to_end(&mut b).at(archive)?;
        DataDirManifest::parse(&b).map(|_| ())
    } else if is_wal_file_name(&m.name) {
        WalReader::new(r).and_then(|mut w| {
            while w.next_frame()?.is_some() {}
            Ok(())
        })
    } else {
        SnapshotReader::new(r)
            .and_then(SnapshotReader::finish)
            .map(|_| ())
    };
    res.map_err(|e| Error::Damaged(format!("{}: member {}: {e}", archive.display(), m.name)))
}
