//! The repository's layout, lock and manifests.

use std::sync::Arc;

use kyrodb_backup_backend::{Backend, Location, Written};
use kyrodb_backup_format::repo::{
    decode_manifest, encode_manifest, is_backup_id, manifest_checksum, BackupManifest, ContentHash,
    REPOSITORY_VERSION,
};
use serde::{Deserialize, Serialize};

use crate::chunkstore::ChainStore;
use crate::error::{Error, Result};

const CONFIG_FILE: &str = "kyrodb-backup.json";
const CHAINS_DIR: &str = "chains";
const MANIFESTS_DIR: &str = "manifests";
const MANIFEST_EXT: &str = ".manifest";
/// Largest config object read.
const MAX_CONFIG: u64 = 64 * 1024;

/// Age after which a temporary file is a leftover even when its writer's pid runs (a pid
/// reused, or a writer on another host of a shared file system).
pub const LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

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

/// A `kyrodb_backup` repository: the same objects in a local directory or under an S3 prefix,
/// so a copy made with any tool (`cp -r`, `aws s3 sync`) is a repository too.
///
/// ```text
/// kyrodb-backup.json                        format marker and version
/// chains/<full-id>/manifests/<id>.manifest  one per backup of the chain: its commit point
/// chains/<full-id>/chunks/<hh>/<hash>       the chain's chunk store
/// locks/create-<id>.json, locks/prune.json  leases of running creates and prunes
/// ```
#[derive(Debug, Clone)]
pub struct Repository {
    backend: Arc<dyn Backend>,
    /// Tests: the chain stores it hands out fail every chunk write after this many.
    #[cfg(test)]
    pub(crate) writes_before_full: Option<u64>,
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

/// What listing the repository found: backups newest first, and objects it could not read.
#[derive(Debug, Default)]
pub struct Listing {
    /// Readable backups, newest first (by second, then sub-second, then id).
    pub backups: Vec<StoredBackup>,
    /// Manifests that failed to load (where, as a path or URL), with why.
    pub problems: Vec<(PathBuf, Error)>,
}

use std::path::{Path, PathBuf};

impl Repository {
    fn with(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            #[cfg(test)]
            writes_before_full: None,
        }
    }

    /// Opens an existing repository on `backend`, checking its format version.
    ///
    /// # Errors
    ///
    /// [`Error::NotARepository`], [`Error::UnsupportedVersion`], or [`Error::Damaged`] for a
    /// marker that is not in its canonical form.
    pub fn open_on(backend: Arc<dyn Backend>) -> Result<Self> {
        let repo = Self::with(backend);
        let bytes = match repo.backend.read(CONFIG_FILE, MAX_CONFIG) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                if !repo
                    .backend
                    .list_folders(&format!("{CHAINS_DIR}/"))?
                    .is_empty()
                {
                    return Err(Error::Damaged(format!(
                        "{} is missing but {} holds backups: the repository is damaged",
                        repo.object_name(CONFIG_FILE),
                        repo.location()
                    )));
                }
                return Err(Error::NotARepository(repo.location()));
            }
            Err(e) => return Err(e.into()),
        };
        let config_path = repo.object_name(CONFIG_FILE);
        let config: Config = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Damaged(format!("{config_path} is damaged: {e}")))?;
        if config.repository != "kyrodb_backup" {
            return Err(Error::Damaged(format!(
                "{config_path} does not describe a kyrodb_backup repository"
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
                "{config_path} is damaged (not its canonical content)"
            )));
        }
        Ok(repo)
    }

    /// Opens the repository at `location`.
    ///
    /// # Errors
    ///
    /// As [`Repository::open_on`], and when the location cannot describe a store.
    pub fn open_at(location: &Location) -> Result<Self> {
        Self::open_on(kyrodb_backup_backend::open(location)?)
    }

    /// Opens an existing local repository.
    ///
    /// # Errors
    ///
    /// As [`Repository::open_on`].
    pub fn open(root: &Path) -> Result<Self> {
        Self::open_at(&Location::local(root))
    }

    /// Opens the repository on `backend`, making it (an empty one) if there is none yet.
    ///
    /// # Errors
    ///
    /// As [`Repository::open_on`], and when the marker cannot be written.
    pub fn open_or_init_on(backend: Arc<dyn Backend>) -> Result<Self> {
        match Self::open_on(Arc::clone(&backend)) {
            Err(Error::NotARepository(_)) => {}
            other => return other,
        }
        if let Some(root) = backend.local_root() {
            kyrodb_backup_durable::create_private_dir_all(root)?;
        }
        backend.write_new(CONFIG_FILE, &config_bytes(REPOSITORY_VERSION))?;
        backend.sync()?;
        if let Some(root) = backend.local_root() {
            // The new directory's name, in its parent (`.` for a bare relative name).
            let parent = root.parent().filter(|p| !p.as_os_str().is_empty());
            kyrodb_backup_durable::fsync_dir(parent.unwrap_or(Path::new(".")))?;
        }
        Self::open_on(backend)
    }

    /// Opens the repository at `location`, making it (an empty one; a local directory with
    /// mode 0700) if there is none yet.
    ///
    /// # Errors
    ///
    /// As [`Repository::open_or_init_on`].
    pub fn open_or_init_at(location: &Location) -> Result<Self> {
        Self::open_or_init_on(kyrodb_backup_backend::open(location)?)
    }

    /// [`Repository::open_or_init_at`] a local directory.
    ///
    /// # Errors
    ///
    /// As [`Repository::open_or_init_on`].
    pub fn open_or_init(root: &Path) -> Result<Self> {
        Self::open_or_init_at(&Location::local(root))
    }

    /// The repository at `location` for a look that writes nothing (a dry run): opened when it
    /// exists; otherwise a handle on the repository that would be made there, which lists no
    /// backup.
    ///
    /// # Errors
    ///
    /// As [`Repository::open_on`], for a repository that exists.
    pub fn open_for_preview_at(location: &Location) -> Result<Self> {
        let backend = kyrodb_backup_backend::open(location)?;
        match Self::open_on(Arc::clone(&backend)) {
            Err(Error::NotARepository(_)) => Ok(Self::with(backend)),
            other => other,
        }
    }

    /// Whether the local directory `root` holds a repository.
    pub fn exists(root: &Path) -> bool {
        root.join(CONFIG_FILE).is_file()
    }

    /// The store the repository's objects live in.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// How to name the repository to a person.
    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// The repository's directory, for a local one.
    pub fn local_root(&self) -> Option<&Path> {
        self.backend.local_root()
    }

    /// How to name an object to a person: its path, or its URL.
    pub fn object_name(&self, key: &str) -> String {
        match self.backend.local_root() {
            Some(root) => root.join(key).display().to_string(),
            None => format!("{}/{key}", self.backend.location()),
        }
    }

    fn chain_prefix(chain_id: &str) -> String {
        format!("{CHAINS_DIR}/{chain_id}/")
    }

    /// The chunk store of a chain.
    ///
    /// # Errors
    ///
    /// [`Error::Damaged`] for an id that is not a chain id.
    pub fn chain_store(&self, chain_id: &str) -> Result<ChainStore> {
        if !is_backup_id(chain_id) {
            return Err(Error::Damaged(format!("{chain_id:?} is not a chain id")));
        }
        #[cfg_attr(not(test), allow(unused_mut))]
        let mut store = ChainStore::new(
            Arc::clone(&self.backend),
            format!("{}chunks/", Self::chain_prefix(chain_id)),
        );
        #[cfg(test)]
        {
            store.writes_before_full = self
                .writes_before_full
                .map(std::sync::atomic::AtomicU64::new);
        }
        Ok(store)
    }

    /// Writes a backup's manifest, create-only: the commit point of a create. Everything it
    /// names must already be durable in the chain's store.
    ///
    /// # Errors
    ///
    /// When the manifest does not validate, the backup exists, or it cannot be written.
    pub fn commit_manifest(&self, manifest: &BackupManifest) -> Result<StoredBackup> {
        let (bytes, stored) = encoded(manifest)?;
        let key = Self::manifest_key(&manifest.chain_id, &manifest.id);
        if self.backend.write_new(&key, &bytes)? == Written::Existed {
            return Err(Error::Damaged(format!(
                "{}: backup {} already exists",
                self.object_name(&key),
                manifest.id
            )));
        }
        self.backend.sync()?;
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

    /// Key of a backup's manifest.
    pub fn manifest_key(chain_id: &str, id: &str) -> String {
        format!("{CHAINS_DIR}/{chain_id}/{MANIFESTS_DIR}/{id}{MANIFEST_EXT}")
    }

    /// Path (or URL) of a backup's manifest, to name it to a person.
    pub fn manifest_path(&self, chain_id: &str, id: &str) -> PathBuf {
        PathBuf::from(self.object_name(&Self::manifest_key(chain_id, id)))
    }

    /// Whether the manifest of a backup exists (one read; no listing).
    ///
    /// # Errors
    ///
    /// As the store fails.
    pub fn has_manifest(&self, chain_id: &str, id: &str) -> Result<bool> {
        match self.backend.read_head(&Self::manifest_key(chain_id, id), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Loads one manifest object, checking its checksum, its contents and that it sits where
    /// its ids say it should.
    ///
    /// # Errors
    ///
    /// [`Error::Damaged`] or [`Error::Format`] when it is not a sound manifest stored in its
    /// place.
    pub fn load_manifest(&self, key: &str) -> Result<StoredBackup> {
        let name = self.object_name(key);
        let bytes = self
            .backend
            .read(key, kyrodb_backup_format::repo::MAX_MANIFEST_SIZE)
            .map_err(|e| match e {
                kyrodb_backup_backend::Error::Damaged { detail, .. }
                    if detail.contains("too large") =>
                {
                    Error::Damaged(format!("{name}: too large for a manifest: {detail}"))
                }
                kyrodb_backup_backend::Error::Damaged { detail, .. } => {
                    Error::Damaged(format!("{name}: {detail}"))
                }
                e if e.is_not_found() => Error::Damaged(format!("{name} is missing")),
                e => e.into(),
            })?;
        let manifest = decode_manifest(&bytes).map_err(|e| e.in_file(&name))?;
        if key != Self::manifest_key(&manifest.chain_id, &manifest.id) {
            return Err(Error::Damaged(format!(
                "{name}: manifest of backup {} in chain {} is stored in the wrong place",
                manifest.id, manifest.chain_id
            )));
        }
        Ok(StoredBackup {
            checksum: manifest_checksum(&bytes)?,
            manifest,
            manifest_bytes: bytes.len() as u64,
        })
    }

    /// The manifest keys of every chain (chain id, manifest keys), from two kinds of listing:
    /// the chains, then each chain's manifests.
    ///
    /// # Errors
    ///
    /// When the store cannot be listed.
    pub(crate) fn manifest_keys(&self) -> Result<Vec<(String, Vec<SizedKey>)>> {
        let chains: Vec<String> = self
            .backend
            .list_folders(&format!("{CHAINS_DIR}/"))?
            .into_iter()
            .filter(|c| is_backup_id(c))
            .collect();
        // One listing per chain, several at a time (each is a round trip on an object store).
        let listed = parallel_map(&chains, 16, |chain| {
            let prefix = format!("{}{MANIFESTS_DIR}/", Self::chain_prefix(chain));
            self.backend.list(&prefix).map(|entries| {
                entries
                    .into_iter()
                    .map(|e| (e.key, e.size))
                    .filter(|(k, _)| {
                        k.strip_prefix(&prefix)
                            .and_then(|n| n.strip_suffix(MANIFEST_EXT))
                            .is_some_and(is_backup_id)
                    })
                    .collect::<Vec<SizedKey>>()
            })
        });
        let mut out = Vec::with_capacity(chains.len());
        for (chain, keys) in chains.into_iter().zip(listed) {
            out.push((chain, keys?));
        }
        Ok(out)
    }

    /// Every backup, newest first, plus the manifests that could not be read. Manifests are
    /// read several at a time (an object store answers each in a round trip).
    ///
    /// # Errors
    ///
    /// When the store cannot be listed (unreadable manifests are listed as problems, not
    /// errors).
    pub fn list(&self) -> Result<Listing> {
        let mut listing = Listing::default();
        let chains = match self.manifest_keys() {
            Ok(c) => c,
            Err(Error::Damaged(detail)) => {
                listing
                    .problems
                    .push((PathBuf::from(self.location()), Error::Damaged(detail)));
                return Ok(listing);
            }
            Err(e) => return Err(e),
        };
        let keys: Vec<&String> = chains.iter().flat_map(|(_, k)| k).map(|(k, _)| k).collect();
        // Many small reads hide an object store's round trips best when many are in flight;
        // large manifests (over 1 MiB each) are read fewer at a time, to bound memory.
        let largest = chains
            .iter()
            .flat_map(|(_, k)| k)
            .map(|(_, size)| *size)
            .max()
            .unwrap_or(0);
        let width = if largest <= 1 << 20 { 64 } else { 8 };
        let loaded = parallel_map(&keys, width, |k| self.load_manifest(k));
        for (key, res) in keys.iter().zip(loaded) {
            match res {
                Ok(b) => listing.backups.push(b),
                Err(e @ Error::Backend(_)) => return Err(e),
                Err(e) => listing
                    .problems
                    .push((PathBuf::from(self.object_name(key)), e)),
            }
        }
        // A full backup goes only with its whole chain (prune deletes newest first), so a
        // chain with manifests but without its full's is damage, not history.
        for (chain, keys) in &chains {
            let full = Self::manifest_key(chain, chain);
            if !keys.is_empty() && !keys.iter().any(|(k, _)| *k == full) {
                listing.problems.push((
                    PathBuf::from(self.object_name(&full)),
                    Error::Damaged(format!(
                        "the manifest of full backup {chain} is missing while its chain has other backups"
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

    /// Removes temporary files that an interrupted run left in a local repository: only files
    /// carrying this tool's temporary marker, whose writer (the process id in the name) is not
    /// running on this host, or that were last written more than [`LEFTOVER_AGE`] before
    /// `now`. A run that is still writing keeps its own. An object store has none: its writes
    /// are whole.
    ///
    /// # Errors
    ///
    /// When a leftover cannot be removed.
    pub fn remove_leftovers(&self, now: std::time::SystemTime) -> Result<u64> {
        let cutoff = now
            .checked_sub(LEFTOVER_AGE)
            .unwrap_or(std::time::UNIX_EPOCH);
        let Some(root) = self.backend.local_root() else {
            return Ok(0);
        };
        let marker = kyrodb_backup_durable::TMP_MARKER;
        let mut removed = 0;
        for entry in walkdir_files(root)? {
            let Some(name) = entry.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                continue;
            };
            let Some((_, tail)) = name.split_once(marker) else {
                continue;
            };
            let writer_gone = tail
                .split('-')
                .next()
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
            let old = std::fs::symlink_metadata(&entry)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            if writer_gone || old {
                match std::fs::remove_file(&entry) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(&entry, e)),
                }
            }
        }
        Ok(removed)
    }
}

/// Runs `f` over `items` with up to `width` at a time on scoped threads, results in order:
/// what lets a store's round trips overlap.
pub fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    width: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<R>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..width.min(items.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                *results[i].lock().expect("lock") = Some(f(item));
            });
        }
    });
    results
        .into_iter()
        .map(|m| m.into_inner().expect("lock").expect("every item mapped"))
        .collect()
}

/// An object's key and size, as a listing gives them.
type SizedKey = (String, u64);

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

fn walkdir_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let e = e.map_err(|err| Error::io(&dir, err))?;
            let ft = e.file_type().map_err(|err| Error::io(e.path(), err))?;
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
