//! The files of the engine's built-in backup tool: `backup_<uuid>.json` (metadata) beside
//! `backup_<uuid>.tar` (an archive of whole data-dir files).
//!
//! Archive layout (little endian): `u32` member count, then per member `u32` name length, the
//! name (UTF-8), `u64` data length and the data. The tool's checksum is the wrapping sum of the
//! CRC-32 of each member's data. Decoding here reads the member table only; callers read
//! member data at the offsets it gives.

use std::io::{self, Read, Seek, SeekFrom};

use serde::Deserialize;

use crate::ids::is_uuid;
use crate::{is_snapshot_file_name, is_wal_file_name, Error, Result};

/// Most members an archive may claim (the tool writes a handful).
pub const MAX_MEMBERS: u32 = 100_000;

/// Longest member name accepted.
const MAX_NAME: u32 = 4096;

const WHAT: &str = "built-in backup archive";

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
    /// The snapshot header's `doc_count` (0 for incrementals): not the live count.
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

impl BuiltinMeta {
    /// Decodes a metadata file whose name says it describes backup `id`.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] when the bytes are not the tool's metadata, or describe another id.
    pub fn decode(bytes: &[u8], id: &str) -> Result<Self> {
        let meta: Self = serde_json::from_slice(bytes).map_err(|e| Error::Malformed {
            what: "built-in backup metadata",
            offset: 0,
            detail: e.to_string(),
        })?;
        if meta.id != id || !is_uuid(id) {
            return Err(Error::Malformed {
                what: "built-in backup metadata",
                offset: 0,
                detail: format!("names backup {}", meta.id),
            });
        }
        Ok(meta)
    }
}

/// The backup id of a built-in metadata file name (`backup_<uuid>.json`), if it is one.
pub fn builtin_meta_id(file_name: &str) -> Option<&str> {
    file_name
        .strip_prefix("backup_")
        .and_then(|n| n.strip_suffix(".json"))
        .filter(|id| is_uuid(id))
}

/// A member of an archive: where its data lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// File name (a KyroDB data-dir file name).
    pub name: String,
    /// Offset of its data in the archive.
    pub offset: u64,
    /// Length of its data.
    pub len: u64,
}

fn read_u32(r: &mut impl Read, at: u64) -> Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).map_err(|e| truncated(at, &e))?;
    Ok(u32::from_le_bytes(b))
}

fn truncated(offset: u64, e: &io::Error) -> Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        Error::Truncated { what: WHAT, offset }
    } else {
        Error::Io(io::Error::new(e.kind(), e.to_string()))
    }
}

fn malformed(offset: u64, detail: String) -> Error {
    Error::Malformed {
        what: WHAT,
        offset,
        detail,
    }
}

/// Reads an archive's member table (of an archive of `size` bytes) without reading member
/// data. Every member must be named like a KyroDB data-dir file and lie inside the archive,
/// and the last one must end exactly at its end.
///
/// # Errors
///
/// [`Error::Truncated`] or [`Error::Malformed`] for a damaged table; [`Error::Io`] when the
/// reader fails.
pub fn read_members(mut r: impl Read + Seek, size: u64) -> Result<Vec<Member>> {
    let count = read_u32(&mut r, 0)?;
    if count > MAX_MEMBERS {
        return Err(malformed(0, format!("claims {count} members")));
    }
    let mut pos = 4u64;
    let mut out = Vec::new();
    for _ in 0..count {
        let name_len = read_u32(&mut r, pos)?;
        if name_len > MAX_NAME {
            return Err(malformed(pos, format!("a member name of {name_len} bytes")));
        }
        let mut name = vec![0u8; name_len as usize];
        r.read_exact(&mut name).map_err(|e| truncated(pos, &e))?;
        let name = String::from_utf8(name)
            .map_err(|_| malformed(pos, "a member name is not UTF-8".into()))?;
        if name != "MANIFEST" && !is_snapshot_file_name(&name) && !is_wal_file_name(&name) {
            return Err(malformed(
                pos,
                format!("member {name:?} is not a KyroDB file name"),
            ));
        }
        let mut lb = [0u8; 8];
        r.read_exact(&mut lb).map_err(|e| truncated(pos, &e))?;
        let len = u64::from_le_bytes(lb);
        pos += 4 + u64::from(name_len) + 8;
        if len > size.saturating_sub(pos) {
            return Err(malformed(
                pos,
                format!("member {name} claims {len} bytes past the end of the archive"),
            ));
        }
        out.push(Member {
            name,
            offset: pos,
            len,
        });
        pos += len;
        r.seek(SeekFrom::Start(pos)).map_err(Error::Io)?;
    }
    if pos != size {
        return Err(malformed(
            pos,
            format!("{} bytes after the last member", size - pos),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = (members.len() as u32).to_le_bytes().to_vec();
        for (name, data) in members {
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(data.len() as u64).to_le_bytes());
            out.extend_from_slice(data);
        }
        out
    }

    #[test]
    fn members_and_damage() {
        let a = archive(&[("MANIFEST", b"{}"), ("wal_1.wal", b"abc")]);
        let m = read_members(io::Cursor::new(&a), a.len() as u64).unwrap();
        assert_eq!(m[0].name, "MANIFEST");
        assert_eq!((m[1].offset, m[1].len), (4 + 4 + 8 + 8 + 2 + 4 + 9 + 8, 3));
        for cut in 0..a.len() {
            assert!(read_members(io::Cursor::new(&a[..cut]), cut as u64).is_err());
        }
        let mut longer = a.clone();
        longer.push(0);
        assert!(read_members(io::Cursor::new(&longer), longer.len() as u64).is_err());
        let evil = archive(&[("../etc/passwd", b"x")]);
        assert!(read_members(io::Cursor::new(&evil), evil.len() as u64).is_err());
    }

    #[test]
    fn metadata_names_its_file() {
        let id = "00000000-0000-4000-8000-000000000001";
        let json = format!(
            r#"{{"id":"{id}","timestamp":1,"backup_type":"Full","size_bytes":0,"vector_count":0,"checksum":0,"parent_id":null}}"#
        );
        assert!(BuiltinMeta::decode(json.as_bytes(), id).is_ok());
        assert!(
            BuiltinMeta::decode(json.as_bytes(), "00000000-0000-4000-8000-000000000002").is_err()
        );
        assert_eq!(builtin_meta_id(&format!("backup_{id}.json")), Some(id));
        assert_eq!(builtin_meta_id("backup_x.json"), None);
    }
}
