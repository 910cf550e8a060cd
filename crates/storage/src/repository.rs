//! The repository's layout, lock and manifests.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use kyrodb_backup_format::repo::{
    decode_manifest, encode_manifest, is_backup_id, manifest_checksum, BackupManifest, ContentHash,
    REPOSITORY_VERSION,
};
use serde::{Deserialize, Serialize};

use crate::chunkstore::ChainStore;
use crate::error::{Error, IoContext, Result};
use kyrodb_backup_durable::{
    atomic_write, create_private_dir_all, open_no_follow, FILE_MODE, TMP_MARKER,
};

const CONFIG_FILE: &str = "kyrodb-backup.json";
const LOCK_FILE: &str = "kyrodb-backup.lock";
const CHAINS_DIR: &str = "chains";
const MANIFESTS_DIR: &str = "manifests";
const MANIFEST_EXT: &str = ".manifest";

#[derive(Serialize, Deserialize)]
struct Config {
    repository: String,
    version: u32,
}

/// The one form of the repository's config file for a version.
fn config_bytes(version: u32) -> Vec<u8> {
    let config = Config {
        repository: "kyrodb_backup".into(),
        version,
    };
    let mut bytes = serde_json::to_vec_pretty(&config).expect("config serializes");
    bytes.push(b'\n');
    bytes
}

/// A `kyrodb_backup` repository: a directory of plain files, safe to copy with `aws s3 sync`.
///
/// ```text
/// <backup-dir>/kyrodb-backup.json                        format marker and version
/// <backup-dir>/kyrodb-backup.lock                        flock(2) lock (content unused)
/// <backup-dir>/chains/<full-id>/manifests/<id>.manifest  one per backup of the chain
/// <backup-dir>/chains/<full-id>/chunks/<hh>/<hash>       the chain's chunk store
/// ```
#[derive(Debug, Clone)]
pub struct Repository {
    root: PathBuf,
    /// Tests: the chain stores it hands out fail every chunk write after this many.
    #[cfg(test)]
    pub(crate) writes_before_full: Option<u64>,
}

/// Whether a lock excludes every other run or only exclusive ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// For readers: restore, verify, list. Many may run together.
    Shared,
    /// For writers: create, prune. Nothing else runs beside it.
    Exclusive,
}

/// A held repository lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct RepoLock {
    _file: File,
}

/// A manifest found in the repository, with the checksum from its header.
#[derive(Debug, Clone)]
pub struct StoredBackup {
    /// The decoded manifest.
    pub manifest: BackupManifest,
    /// XXH3-128 of the manifest body: the backup's checksum.
    pub checksum: ContentHash,
    /// Size of the manifest file.
    pub manifest_bytes: u64,
}

/// What listing the repository found: backups newest first, and files it could not read.
#[derive(Debug, Default)]
pub struct Listing {
    /// Readable backups, newest first (by second, then sub-second, then id).
    pub backups: Vec<StoredBackup>,
    /// Manifest files that failed to load, with why.
    pub problems: Vec<(PathBuf, Error)>,
}

impl Repository {
    /// Opens an existing repository, checking its format version.
    ///
    /// # Errors
    ///
    /// [`Error::NotARepository`], [`Error::UnsupportedVersion`], or [`Error::Damaged`] for a
    /// marker file that is not in its canonical form.
    pub fn open(root: &Path) -> Result<Self> {
        let config_path = root.join(CONFIG_FILE);
        let bytes = match fs::read(&config_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if root.join(CHAINS_DIR).exists() {
                    return Err(Error::Damaged(format!(
                        "{} is missing but {} holds backups: the repository is damaged",
                        config_path.display(),
                        root.display()
                    )));
                }
                return Err(Error::NotARepository(root.to_path_buf()));
            }
            Err(e) => return Err(Error::io(&config_path, e)),
        };
        let config: Config = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Damaged(format!("{} is damaged: {e}", config_path.display())))?;
        if config.repository != "kyrodb_backup" {
            return Err(Error::Damaged(format!(
                "{} does not describe a kyrodb_backup repository",
                config_path.display()
            )));
        }
        if config.version > REPOSITORY_VERSION {
            return Err(Error::UnsupportedVersion {
                found: config.version,
                supported: REPOSITORY_VERSION,
            });
        }
        // The file has one canonical form; any other byte is damage (it carries no checksum of
        // its own, so this is how every stored byte stays checked).
        if bytes != config_bytes(config.version) {
            return Err(Error::Damaged(format!(
                "{} is damaged (not its canonical content)",
                config_path.display()
            )));
        }
        Ok(Self {
            root: root.to_path_buf(),
            #[cfg(test)]
            writes_before_full: None,
        })
    }

    /// Opens the repository at `root`, creating it (mode 0700) if the directory is missing or
    /// holds no repository yet.
    ///
    /// # Errors
    ///
    /// As [`Repository::open`], and when the directory or its marker cannot be written.
    pub fn open_or_init(root: &Path) -> Result<Self> {
        match Self::open(root) {
            Err(Error::NotARepository(_)) if !root.join(CONFIG_FILE).exists() => {}
            other => return other,
        }
        create_private_dir_all(root)?;
        atomic_write(
            &root.join(CONFIG_FILE),
            &config_bytes(REPOSITORY_VERSION),
            true,
        )?;
        Self::open(root)
    }

    /// The repository at `root` for a look that writes nothing (a dry run): opened when it
    /// exists; otherwise a handle on the repository that would be made there, which lists no
    /// backup.
    ///
    /// # Errors
    ///
    /// As [`Repository::open`], for a repository that exists.
    pub fn open_for_preview(root: &Path) -> Result<Self> {
        if Self::exists(root) || root.join(CHAINS_DIR).exists() {
            Self::open(root)
        } else {
            Ok(Self {
                root: root.to_path_buf(),
                #[cfg(test)]
                writes_before_full: None,
            })
        }
    }

    /// Whether `root` holds a repository.
    pub fn exists(root: &Path) -> bool {
        root.join(CONFIG_FILE).is_file()
    }

    /// The repository's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the repository lock without waiting for another run; [`Error::Locked`] if one
    /// holds it.
    ///
    /// A conflict is looked at again a few times within about 150 ms before it is reported: a
    /// process that forks (to start any program) shares this process's open lock file until
    /// the child execs, so a lock released just before a fork in another thread can stay held
    /// for that instant.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] while another run holds the lock; [`Error::Io`] when the lock file cannot
    /// be opened.
    pub fn lock(&self, mode: LockMode) -> Result<RepoLock> {
        let mut pause = std::time::Duration::from_millis(10);
        loop {
            match self.try_lock(mode) {
                Err(Error::Locked(_)) if pause <= std::time::Duration::from_millis(80) => {
                    std::thread::sleep(pause);
                    pause *= 2;
                }
                other => return other,
            }
        }
    }

    fn try_lock(&self, mode: LockMode) -> Result<RepoLock> {
        let path = self.root.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)
            .at(&path)?;
        let res = match mode {
            LockMode::Shared => file.try_lock_shared(),
            LockMode::Exclusive => file.try_lock(),
        };
        match res {
            Ok(()) => Ok(RepoLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked(self.root.clone())),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }

    fn chain_dir(&self, chain_id: &str) -> PathBuf {
        self.root.join(CHAINS_DIR).join(chain_id)
    }

    /// The chunk store of a chain (created on first write). A chain or chunk directory that
    /// is a symlink is refused: a repository copied back from elsewhere must not make this
    /// tool read or write outside it.
    ///
    /// # Errors
    ///
    /// [`Error::Damaged`] for an id that is not a chain id, or a symlinked chain directory.
    pub fn chain_store(&self, chain_id: &str) -> Result<ChainStore> {
        if !is_backup_id(chain_id) {
            return Err(Error::Damaged(format!("{chain_id:?} is not a chain id")));
        }
        let chain = self.chain_dir(chain_id);
        for dir in [
            self.root.join(CHAINS_DIR),
            chain.clone(),
            chain.join("chunks"),
        ] {
            refuse_symlink(&dir)?;
        }
        #[cfg_attr(not(test), allow(unused_mut))]
        let mut store = ChainStore::new(chain.join("chunks"));
        #[cfg(test)]
        {
            store.writes_before_full = self
                .writes_before_full
                .map(std::sync::atomic::AtomicU64::new);
        }
        Ok(store)
    }

    /// Writes a backup's manifest: the commit point of a create. Everything it names must
    /// already be durable in the chain's store.
    ///
    /// # Errors
    ///
    /// When the manifest does not validate, the backup exists, or the file cannot be written.
    pub fn commit_manifest(&self, manifest: &BackupManifest) -> Result<StoredBackup> {
        let (bytes, stored) = encoded(manifest)?;
        let dir = self.chain_dir(&manifest.chain_id).join(MANIFESTS_DIR);
        refuse_symlink(&self.chain_dir(&manifest.chain_id))?;
        refuse_symlink(&dir)?;
        let new_dir = !dir.exists();
        create_private_dir_all(&dir)?;
        let path = dir.join(format!("{}{MANIFEST_EXT}", manifest.id));
        if path.exists() {
            return Err(Error::io(
                &path,
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, "backup already exists"),
            ));
        }
        if let Err(e) = atomic_write(&path, &bytes, true) {
            if new_dir {
                let _ = fs::remove_dir(&dir);
            }
            return Err(e.into());
        }
        Ok(stored)
    }

    /// The backup a manifest would be once committed (its checksum and size), without writing
    /// anything.
    ///
    /// # Errors
    ///
    /// When the manifest does not validate.
    pub fn preview_manifest(&self, manifest: &BackupManifest) -> Result<StoredBackup> {
        Ok(encoded(manifest)?.1)
    }

    /// Path of a backup's manifest file.
    pub fn manifest_path(&self, chain_id: &str, id: &str) -> PathBuf {
        self.chain_dir(chain_id)
            .join(MANIFESTS_DIR)
            .join(format!("{id}{MANIFEST_EXT}"))
    }

    /// Loads one manifest file, checking its checksum, its contents and that it sits where its
    /// ids say it should.
    ///
    /// # Errors
    ///
    /// [`Error::Damaged`] or [`Error::Format`] when the file is not a sound manifest stored in its
    /// place.
    pub fn load_manifest(&self, path: &Path) -> Result<StoredBackup> {
        let mut file = open_no_follow(path).map_err(|e| {
            Error::Damaged(format!(
                "{}: cannot be opened as a regular file: {e}",
                path.display()
            ))
        })?;
        let meta = file.metadata().at(path)?;
        let len = meta.len();
        if !meta.is_file() {
            return Err(Error::Damaged(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        if len > kyrodb_backup_format::repo::MAX_MANIFEST_SIZE {
            return Err(Error::Damaged(format!(
                "{}: {len} bytes is too large for a manifest",
                path.display()
            )));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        std::io::Read::read_to_end(&mut file, &mut bytes).at(path)?;
        let manifest = decode_manifest(&bytes).map_err(|e| e.in_file(path.display()))?;
        if path != self.manifest_path(&manifest.chain_id, &manifest.id) {
            return Err(Error::Damaged(format!(
                "{}: manifest of backup {} in chain {} is stored in the wrong place",
                path.display(),
                manifest.id,
                manifest.chain_id
            )));
        }
        Ok(StoredBackup {
            checksum: manifest_checksum(&bytes)?,
            manifest,
            manifest_bytes: len,
        })
    }

    /// Every backup, newest first, plus the manifest files that could not be read.
    ///
    /// # Errors
    ///
    /// When the repository's directories cannot be read (unreadable manifests are listed as
    /// problems, not errors).
    pub fn list(&self) -> Result<Listing> {
        let mut listing = Listing::default();
        let chains = self.root.join(CHAINS_DIR);
        let Ok(entries) = fs::read_dir(&chains) else {
            return Ok(listing);
        };
        for chain in entries {
            let chain = chain.at(&chains)?;
            let name = chain.file_name().to_string_lossy().into_owned();
            if !is_backup_id(&name) {
                continue;
            }
            let mdir = chain.path().join(MANIFESTS_DIR);
            if let Err(e) = refuse_symlink(&chain.path()).and_then(|()| refuse_symlink(&mdir)) {
                listing.problems.push((mdir, e));
                continue;
            }
            let Ok(manifests) = fs::read_dir(&mdir) else {
                continue;
            };
            let mut any = false;
            for m in manifests {
                let m = m.at(&mdir)?;
                let fname = m.file_name().to_string_lossy().into_owned();
                let Some(id) = fname.strip_suffix(MANIFEST_EXT) else {
                    continue;
                };
                if !is_backup_id(id) {
                    continue;
                }
                any = true;
                match self.load_manifest(&m.path()) {
                    Ok(b) => listing.backups.push(b),
                    Err(e) => listing.problems.push((m.path(), e)),
                }
            }
            // A full backup goes only with its whole chain (prune deletes newest first), so a
            // chain with manifests but without its full's is damage, not history.
            let full = mdir.join(format!("{name}{MANIFEST_EXT}"));
            if any && fs::symlink_metadata(&full).is_err() {
                listing.problems.push((
                    full,
                    Error::Damaged(format!(
                        "the manifest of full backup {name} is missing while its chain has other backups"
                    )),
                ));
            }
        }
        listing.backups.sort_by(|a, b| {
            let key = |x: &StoredBackup| (x.manifest.timestamp, x.manifest.subsec_nanos);
            key(b)
                .cmp(&key(a))
                .then_with(|| b.manifest.id.cmp(&a.manifest.id))
        });
        Ok(listing)
    }

    /// Finds a backup by full id or unique prefix of at least 8 characters.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::Ambiguous`], [`Error::PrefixTooShort`], or [`Error::Damaged`]
    /// when the manifest of that id cannot be read.
    pub fn find(&self, id_or_prefix: &str) -> Result<StoredBackup> {
        self.list()?.find(id_or_prefix)
    }

    /// Removes temporary files that an interrupted run left in the repository. Only files
    /// carrying this tool's temporary marker are touched. Call with the exclusive lock held.
    ///
    /// # Errors
    ///
    /// When a leftover cannot be removed.
    pub fn remove_leftovers(&self) -> Result<u64> {
        let mut removed = 0;
        for entry in walkdir_files(&self.root)? {
            if entry
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains(TMP_MARKER))
            {
                fs::remove_file(&entry).at(&entry)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// A manifest checked and encoded, and the backup it makes (checksum, size).
fn encoded(manifest: &BackupManifest) -> Result<(Vec<u8>, StoredBackup)> {
    manifest.validate()?;
    let bytes = encode_manifest(manifest)?;
    let stored = StoredBackup {
        checksum: manifest_checksum(&bytes)?,
        manifest: manifest.clone(),
        manifest_bytes: bytes.len() as u64,
    };
    Ok((bytes, stored))
}

/// Fails when `path` exists as a symlink.
pub(crate) fn refuse_symlink(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(Error::Damaged(format!(
            "{} is a symlink; the repository holds plain files and directories only",
            path.display()
        ))),
        _ => Ok(()),
    }
}

fn walkdir_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let e = e.at(&dir)?;
            let ft = e.file_type().at(&e.path())?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    Ok(out)
}

impl Listing {
    /// A backup of this listing by full id or unique prefix of at least 8 characters.
    ///
    /// # Errors
    ///
    /// As [`Repository::find`].
    pub fn find(&self, id_or_prefix: &str) -> Result<StoredBackup> {
        if let Some(b) = self.backups.iter().find(|b| b.manifest.id == id_or_prefix) {
            return Ok(b.clone());
        }
        if id_or_prefix.len() < 8 {
            return Err(Error::PrefixTooShort(id_or_prefix.to_string()));
        }
        let mut matches: Vec<&StoredBackup> = self
            .backups
            .iter()
            .filter(|b| b.manifest.id.starts_with(id_or_prefix))
            .collect();
        match matches.len() {
            0 => {
                // A damaged manifest of the wanted id is worth naming instead of "not found".
                if let Some((path, e)) = self.problems.iter().find(|(p, _)| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(id_or_prefix))
                }) {
                    return Err(Error::Damaged(format!(
                        "backup {id_or_prefix} cannot be read: {e} ({})",
                        path.display()
                    )));
                }
                Err(Error::NotFound(id_or_prefix.to_string()))
            }
            1 => Ok(matches.pop().expect("one match").clone()),
            _ => Err(Error::Ambiguous {
                prefix: id_or_prefix.to_string(),
                matches: matches.into_iter().map(|b| b.manifest.id.clone()).collect(),
            }),
        }
    }
}
