//! A repository in a local directory.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kyrodb_backup_durable::{
    create_private_dir_all, create_private_file, fsync_dir, open_no_follow, tmp_path_for,
    TMP_MARKER,
};

use crate::{check_key, check_prefix, Backend, Entry, Error, Result, Written};

/// A repository in a directory: each key a file under it, written through a temporary file,
/// `fsync` and a rename. Symlinks inside the repository are refused, so a repository copied
/// back from elsewhere cannot make this tool read or write outside it.
#[derive(Debug)]
pub struct LocalBackend {
    root: PathBuf,
    /// Directories whose entries changed since the last [`Backend::sync`].
    touched: Mutex<BTreeSet<PathBuf>>,
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io(kyrodb_backup_durable::Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl LocalBackend {
    /// A backend on the directory `root` (which need not exist yet).
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            touched: Mutex::default(),
        }
    }

    fn damaged(&self, key: &str, detail: impl Into<String>) -> Error {
        Error::Damaged {
            location: self.location(),
            key: key.to_string(),
            detail: detail.into(),
        }
    }

    /// The path of a key, after checking that no directory on the way is a symlink.
    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(&self.location(), key)?;
        let mut path = self.root.clone();
        let parts: Vec<&str> = key.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            path.push(part);
            if i + 1 < parts.len() {
                if let Ok(m) = fs::symlink_metadata(&path) {
                    if m.file_type().is_symlink() {
                        return Err(self.damaged(
                            key,
                            format!(
                                "{} is a symlink; the repository holds plain files and directories only",
                                path.display()
                            ),
                        ));
                    }
                }
            }
        }
        Ok(path)
    }

    fn open(&self, key: &str) -> Result<(fs::File, u64)> {
        let path = self.path(key)?;
        let file = match open_no_follow(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound {
                    location: self.location(),
                    key: key.to_string(),
                })
            }
            Err(e) => {
                return Err(self.damaged(key, format!("cannot be opened as a regular file: {e}")))
            }
        };
        let meta = file.metadata().map_err(|e| io(&path, e))?;
        if !meta.is_file() {
            return Err(self.damaged(key, "not a regular file"));
        }
        Ok((file, meta.len()))
    }

    /// Creates the parent directories of `path` (mode 0700), remembering the directories whose
    /// entries changed; returns the ones it created, deepest first.
    fn make_parent(&self, path: &Path) -> Result<Vec<PathBuf>> {
        let parent = path.parent().expect("a key has a parent");
        let mut created = Vec::new();
        if !parent.is_dir() {
            let mut missing = parent;
            let mut touched = self.touched.lock().expect("lock");
            while !missing.exists() {
                created.push(missing.to_path_buf());
                let Some(up) = missing.parent() else { break };
                touched.insert(up.to_path_buf());
                missing = up;
            }
            drop(touched);
            create_private_dir_all(parent)?;
        }
        Ok(created)
    }

    /// Writes `bytes` to a new temporary file beside `path`, durably. On failure nothing it
    /// made is left (a full disk must not keep empty directories either).
    fn write_tmp(&self, path: &Path, bytes: &[u8]) -> Result<PathBuf> {
        let created = self.make_parent(path)?;
        let tmp = tmp_path_for(path);
        let written = (|| {
            let mut f = create_private_file(&tmp)?;
            f.write_all(bytes).map_err(|e| io(&tmp, e))?;
            f.sync_all().map_err(|e| io(&tmp, e))
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            for dir in &created {
                let _ = fs::remove_dir(dir);
            }
            return Err(e);
        }
        Ok(tmp)
    }

    fn touch(&self, path: &Path) {
        if let Some(parent) = path.parent() {
            self.touched
                .lock()
                .expect("lock")
                .insert(parent.to_path_buf());
        }
    }

    fn key_of(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.root).ok()?;
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_str().map(str::to_string))
            .collect::<Option<_>>()?;
        Some(parts.join("/"))
    }
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn read(&self, key: &str, limit: u64) -> Result<Vec<u8>> {
        let (file, len) = self.open(key)?;
        if len > limit {
            return Err(self.damaged(
                key,
                format!("{len} bytes is too large (more than {limit} allowed)"),
            ));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| io(&self.root.join(key), e))?;
        if bytes.len() as u64 > limit {
            return Err(self.damaged(key, format!("more than {limit} bytes")));
        }
        Ok(bytes)
    }

    fn read_head(&self, key: &str, len: u64) -> Result<(Vec<u8>, u64)> {
        let (file, size) = self.open(key)?;
        let mut bytes = Vec::with_capacity(len.min(size) as usize);
        file.take(len)
            .read_to_end(&mut bytes)
            .map_err(|e| io(&self.root.join(key), e))?;
        Ok((bytes, size))
    }

    fn write_new(&self, key: &str, bytes: &[u8]) -> Result<Written> {
        let path = self.path(key)?;
        if fs::symlink_metadata(&path).is_ok() {
            return Ok(Written::Existed);
        }
        let tmp = self.write_tmp(&path, bytes)?;
        // A hard link fails when the name exists: create-only, atomic, on any POSIX file system.
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                self.touch(&path);
                Ok(Written::Created)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Written::Existed),
            Err(e) => Err(io(&path, e)),
        }
    }

    fn write(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(key)?;
        let tmp = self.write_tmp(&path, bytes)?;
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(io(&path, e));
        }
        self.touch(&path);
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(&path, e)),
        }
        self.touch(&path);
        // Folders left empty go too (never the top-level ones), so a pruned chain leaves no
        // trace.
        let mut dir = path.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            let depth = d
                .strip_prefix(&self.root)
                .map_or(0, |r| r.components().count());
            if depth < 2 || fs::remove_dir(&d).is_err() {
                break;
            }
            self.touch(&d);
            dir = d.parent().map(Path::to_path_buf);
        }
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        check_prefix(&self.location(), prefix)?;
        let start = if prefix.is_empty() {
            self.root.clone()
        } else {
            let p = self.path(prefix.trim_end_matches('/'))?;
            if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(self.damaged(prefix, "is a symlink"));
            }
            p
        };
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => continue,
                Err(e) => return Err(io(&dir, e)),
            };
            for e in entries {
                let e = e.map_err(|err| io(&dir, err))?;
                let ft = match e.file_type() {
                    Ok(ft) => ft,
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(io(&e.path(), err)),
                };
                if ft.is_dir() {
                    stack.push(e.path());
                } else if ft.is_file() || ft.is_symlink() {
                    // A symlink is listed (as what it is not: a read of it fails as damage),
                    // so that it is reported rather than silently missing.
                    let name = e.file_name();
                    if name.to_string_lossy().contains(TMP_MARKER) {
                        continue;
                    }
                    let Some(key) = self.key_of(&e.path()) else {
                        continue;
                    };
                    // Deleted between the directory read and now (a prune or a merge running
                    // beside this listing): it no longer exists, so it is not listed.
                    let meta = match fs::symlink_metadata(e.path()) {
                        Ok(m) => m,
                        Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(err) => return Err(io(&e.path(), err)),
                    };
                    out.push(Entry {
                        key,
                        size: meta.len(),
                        modified: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn list_folders(&self, prefix: &str) -> Result<Vec<String>> {
        check_prefix(&self.location(), prefix)?;
        let dir = if prefix.is_empty() {
            self.root.clone()
        } else {
            self.path(prefix.trim_end_matches('/'))?
        };
        if fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(self.damaged(
                prefix,
                "is a symlink; the repository holds plain files and directories only",
            ));
        }
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&dir, e)),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.map_err(|err| io(&dir, err))?;
            let ft = e.file_type().map_err(|err| io(&e.path(), err))?;
            if ft.is_dir() || ft.is_symlink() {
                if let Some(name) = e.file_name().to_str() {
                    out.push(name.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn sync(&self) -> Result<()> {
        let touched = std::mem::take(&mut *self.touched.lock().expect("lock"));
        // Deepest first, so a new directory's own entries are durable before its name is.
        for dir in touched.iter().rev() {
            if dir.is_dir() {
                fsync_dir(dir)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_only_writes_keep_the_first_object() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("repo"));
        assert_eq!(b.write_new("x/y/z", b"one").unwrap(), Written::Created);
        assert_eq!(b.write_new("x/y/z", b"two").unwrap(), Written::Existed);
        assert_eq!(b.read("x/y/z", 10).unwrap(), b"one");
        b.write("x/y/z", b"three").unwrap();
        assert_eq!(b.read("x/y/z", 10).unwrap(), b"three");
        assert!(matches!(b.read("x/y/z", 2), Err(Error::Damaged { .. })));
        assert_eq!(b.read_head("x/y/z", 2).unwrap(), (b"th".to_vec(), 5));
        b.sync().unwrap();
        let listed = b.list("").unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].key.as_str(), listed[0].size), ("x/y/z", 5));
        assert_eq!(b.list_folders("x/").unwrap(), vec!["y".to_string()]);
    }

    #[test]
    fn deletes_take_empty_folders_below_the_top_level() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().to_path_buf());
        b.write_new("chains/c/chunks/ab/abcd", b"x").unwrap();
        b.delete("chains/c/chunks/ab/abcd").unwrap();
        b.delete("chains/c/chunks/ab/abcd").unwrap();
        assert!(dir.path().join("chains").is_dir());
        assert!(!dir.path().join("chains/c").exists());
        assert!(b
            .read("chains/c/chunks/ab/abcd", 1)
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn symlinks_and_bad_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("chains")).unwrap();
        let b = LocalBackend::new(dir.path().to_path_buf());
        assert!(matches!(
            b.read("chains/secret", 10),
            Err(Error::Damaged { .. })
        ));
        assert!(matches!(
            b.write_new("chains/new", b"x"),
            Err(Error::Damaged { .. })
        ));
        assert!(matches!(b.list("chains/"), Err(Error::Damaged { .. })));
        for key in ["", "/a", "a//b", "a/../b", "a/./b"] {
            assert!(
                matches!(b.read(key, 1), Err(Error::Damaged { .. })),
                "{key}"
            );
        }
    }
}
