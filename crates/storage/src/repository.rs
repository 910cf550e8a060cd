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
use crate::keys::Unlocker;
use kyrodb_backup_crypto::{MasterKey, RepoKeys};

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encryption: Option<Encryption>,
}

/// What the marker of an encrypted repository says of its encryption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Encryption {
    /// How objects are sealed.
    pub(crate) cipher: String,
    /// How passphrases become keys.
    pub(crate) kdf: String,
    /// How chunks are named.
    pub(crate) chunk_ids: String,
    /// The master key's public id: a key slot whose master has another id belongs to another
    /// repository.
    pub(crate) key_id: String,
}

impl Encryption {
    pub(crate) fn of(key_id: String) -> Self {
        Self {
            cipher: "aes-256-gcm, a key per object".into(),
            kdf: "argon2id".into(),
            chunk_ids: "blake3-keyed-128".into(),
            key_id,
        }
    }
}

/// The first format version of an encrypted repository (a plain one stays at
/// [`REPOSITORY_VERSION`], so older builds keep reading plain repositories and refuse encrypted
/// ones as newer than they support).
pub const ENCRYPTED_REPOSITORY_VERSION: u32 = 2;

/// The one form of the repository's config file for a version.
fn config_bytes(version: u32, encryption: Option<&Encryption>) -> Vec<u8> {
    let config = Config {
        repository: "kyrodb_backup".into(),
        version,
        encryption: encryption.cloned(),
    };
    let mut bytes = serde_json::to_vec_pretty(&config).expect("config serializes");
    bytes.push(b'\n');
    bytes
}

/// A `kyrodb_backup` repository: the same objects in a local directory or under an S3 prefix,
/// so a copy made with any tool (`cp -r`, `aws s3 sync`) is a repository too.
///
/// ```text
/// kyrodb-backup.json                        format marker and version (and, when encrypted,
///                                           the cipher and the master key's id)
/// keys/<slot>                               encrypted only: the master key, wrapped by a passphrase
/// chains/<full-id>/manifests/<id>.manifest  one per backup of the chain: its commit point
/// chains/<full-id>/chunks/<hh>/<hash>       the chain's chunk store
/// locks/create-<id>.json, locks/prune.json  leases of running creates and prunes
/// archive/<timeline>/...                    the continuous archive
/// ```
///
/// In an encrypted repository every object but the marker and the key slots is sealed
/// (`kyrodb-backup-crypto`), and chunks are named by a keyed hash.
#[derive(Debug, Clone)]
pub struct Repository {
    backend: Arc<dyn Backend>,
    /// The store itself, under the sealing of an encrypted repository.
    raw: Arc<dyn Backend>,
    /// An encrypted repository's master key (from the key slot that opened it).
    master: Option<Arc<MasterKey>>,
    /// Its working keys.
    keys: Option<Arc<RepoKeys>>,
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
            raw: Arc::clone(&backend),
            backend,
            master: None,
            keys: None,
            #[cfg(test)]
            writes_before_full: None,
        }
    }

    /// How to name an object of `backend` to a person.
    fn name_on(backend: &Arc<dyn Backend>, key: &str) -> String {
        match backend.local_root() {
            Some(root) => root.join(key).display().to_string(),
            None => format!("{}/{key}", backend.location()),
        }
    }

    /// The marker's config, read and checked; `Ok(None)` when there is no repository.
    fn read_config(backend: &Arc<dyn Backend>) -> Result<Option<Config>> {
        let name = |key: &str| Self::name_on(backend, key);
        let bytes = match backend.read(CONFIG_FILE, MAX_CONFIG) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                if !backend.list_folders(&format!("{CHAINS_DIR}/"))?.is_empty() {
                    return Err(Error::Damaged(format!(
                        "{} is missing but {} holds backups: the repository is damaged",
                        name(CONFIG_FILE),
                        backend.location()
                    )));
                }
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let config_path = name(CONFIG_FILE);
        let config: Config = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Damaged(format!("{config_path} is damaged: {e}")))?;
        if config.repository != "kyrodb_backup" {
            return Err(Error::Damaged(format!(
                "{config_path} does not describe a kyrodb_backup repository"
            )));
        }
        if config.version > ENCRYPTED_REPOSITORY_VERSION {
            return Err(Error::UnsupportedVersion {
                found: config.version,
                supported: ENCRYPTED_REPOSITORY_VERSION,
            });
        }
        // The file has one canonical form; any other byte is damage (it carries no checksum of
        // its own, so this is how every stored byte stays checked). An encrypted repository
        // has the encrypted version and an encryption record, a plain one neither.
        let consistent =
            (config.version >= ENCRYPTED_REPOSITORY_VERSION) == config.encryption.is_some();
        let known = config.encryption.as_ref().is_none_or(|e| {
            *e == Encryption::of(e.key_id.clone())
                && e.key_id.len() == 32
                && e.key_id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if !consistent
            || !known
            || bytes != config_bytes(config.version, config.encryption.as_ref())
        {
            return Err(Error::Damaged(format!(
                "{config_path} is damaged (not its canonical content)"
            )));
        }
        Ok(Some(config))
    }

    /// Opens an existing plain repository on `backend`, checking its format version (an
    /// encrypted one needs [`Repository::open_with`]).
    ///
    /// # Errors
    ///
    /// [`Error::NotARepository`], [`Error::UnsupportedVersion`], or [`Error::Damaged`] for a
    /// marker that is not in its canonical form; [`Error::KeyRequired`] for an encrypted one.
    pub fn open_on(backend: Arc<dyn Backend>) -> Result<Self> {
        Self::open_with(backend, None)
    }

    /// Opens an existing repository on `backend`; an encrypted one with the passphrase that
    /// `unlock` gives (asked only when the repository is encrypted).
    ///
    /// # Errors
    ///
    /// As [`Repository::open_on`]; [`Error::KeyRequired`] when it is encrypted and `unlock`
    /// gives no passphrase, [`Error::WrongPassphrase`] when the passphrase opens no key slot,
    /// [`Error::Damaged`] when no intact slot opens and a slot is damaged.
    pub fn open_with(backend: Arc<dyn Backend>, unlock: Option<&Unlocker>) -> Result<Self> {
        let Some(config) = Self::read_config(&backend)? else {
            return Err(Error::NotARepository(backend.location()));
        };
        let Some(encryption) = config.encryption else {
            // Key slots beside a plain marker: the marker of an encrypted repository was
            // replaced (or damaged into another canonical form). Writing on would store
            // plaintext where sealed objects are expected.
            if !backend
                .list(&format!("{}/", crate::sealed::KEYS_DIR))?
                .is_empty()
            {
                return Err(Error::Damaged(format!(
                    "{} says the repository is plain, but {} holds key slots: the marker of an encrypted repository was replaced or damaged",
                    Self::name_on(&backend, CONFIG_FILE),
                    backend.location()
                )));
            }
            return Ok(Self::with(backend));
        };
        let Some(unlock) = unlock else {
            return Err(Error::KeyRequired {
                location: backend.location(),
                why: "no key source".into(),
            });
        };
        let master = crate::keys::unlock(&backend, &encryption.key_id, unlock)?;
        Ok(Self::encrypted(backend, master))
    }

    /// The handle of an encrypted repository on `raw` whose master key is `master`.
    pub(crate) fn encrypted(raw: Arc<dyn Backend>, master: Arc<MasterKey>) -> Self {
        let keys = Arc::new(master.keys());
        let sealed: Arc<dyn Backend> = Arc::new(crate::sealed::SealedBackend::new(
            Arc::clone(&raw),
            keys.sealer().clone(),
            CONFIG_FILE,
        ));
        Self {
            backend: sealed,
            raw,
            master: Some(master),
            keys: Some(keys),
            #[cfg(test)]
            writes_before_full: None,
        }
    }

    /// Opens the repository at `location`.
    ///
    /// # Errors
    ///
    /// As [`Repository::open_on`], and when the location cannot describe a store.
    pub fn open_at(location: &Location) -> Result<Self> {
        Self::open_on(kyrodb_backup_backend::open(location)?)
    }

    /// [`Repository::open_with`] the repository at `location`.
    ///
    /// # Errors
    ///
    /// As [`Repository::open_with`], and when the location cannot describe a store.
    pub fn open_at_with(location: &Location, unlock: Option<&Unlocker>) -> Result<Self> {
        Self::open_with(kyrodb_backup_backend::open(location)?, unlock)
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
        Self::open_or_init_with(backend, None)
    }

    /// Opens the repository on `backend` (an encrypted one with `unlock`), making a plain,
    /// empty one if there is none yet.
    ///
    /// # Errors
    ///
    /// As [`Repository::open_with`], and when the marker cannot be written.
    pub fn open_or_init_with(backend: Arc<dyn Backend>, unlock: Option<&Unlocker>) -> Result<Self> {
        match Self::open_with(Arc::clone(&backend), unlock) {
            Err(Error::NotARepository(_)) => {}
            other => return other,
        }
        Self::refuse_unfinished_encrypted(&backend)?;
        Self::write_marker(&backend, &config_bytes(REPOSITORY_VERSION, None))?;
        Self::open_with(backend, unlock)
    }

    /// Refuses to make a plain repository where key slots wait without a marker: an encrypted
    /// repository was being made there and its run stopped before its commit point. Making the
    /// encrypted one again removes them; a plain marker beside them would read as an
    /// encrypted repository's marker replaced.
    pub(crate) fn refuse_unfinished_encrypted(backend: &Arc<dyn Backend>) -> Result<()> {
        if backend
            .list(&format!("{}/", crate::sealed::KEYS_DIR))?
            .is_empty()
        {
            return Ok(());
        }
        Err(Error::AlreadyExists(format!(
            "{} holds key slots but no marker: an encrypted repository was being made there and did not finish (making it again removes them)",
            backend.location()
        )))
    }

    /// Writes the marker create-only (another run making the same repository at the same time
    /// wins or loses whole), durably, with the local directory made first.
    pub(crate) fn write_marker(backend: &Arc<dyn Backend>, bytes: &[u8]) -> Result<Written> {
        Self::make_local_root(backend)?;
        let written = backend.write_new(CONFIG_FILE, bytes)?;
        backend.sync()?;
        Self::sync_local_parent(backend)?;
        Ok(written)
    }

    /// Makes a local repository's directory (mode 0700).
    pub(crate) fn make_local_root(backend: &Arc<dyn Backend>) -> Result<()> {
        if let Some(root) = backend.local_root() {
            kyrodb_backup_durable::create_private_dir_all(root)?;
        }
        Ok(())
    }

    /// Makes a local repository directory's name durable in its parent.
    fn sync_local_parent(backend: &Arc<dyn Backend>) -> Result<()> {
        if let Some(root) = backend.local_root() {
            // The new directory's name, in its parent (`.` for a bare relative name).
            let parent = root.parent().filter(|p| !p.as_os_str().is_empty());
            kyrodb_backup_durable::fsync_dir(parent.unwrap_or(Path::new(".")))?;
        }
        Ok(())
    }

    /// The marker of a new encrypted repository whose master key has id `key_id`.
    pub(crate) fn encrypted_marker(key_id: String) -> Vec<u8> {
        config_bytes(ENCRYPTED_REPOSITORY_VERSION, Some(&Encryption::of(key_id)))
    }

    /// The marker of a new plain repository.
    pub(crate) fn plain_marker() -> Vec<u8> {
        config_bytes(REPOSITORY_VERSION, None)
    }

    /// Whether a repository exists on `backend` (the marker is read and checked, nothing else).
    ///
    /// # Errors
    ///
    /// As the store fails, and [`Error::Damaged`] for a damaged marker.
    pub fn exists_on(backend: &Arc<dyn Backend>) -> Result<bool> {
        Ok(Self::read_config(backend)?.is_some())
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

    /// [`Repository::open_or_init_with`] at `location`.
    ///
    /// # Errors
    ///
    /// As [`Repository::open_or_init_with`].
    pub fn open_or_init_at_with(location: &Location, unlock: Option<&Unlocker>) -> Result<Self> {
        Self::open_or_init_with(kyrodb_backup_backend::open(location)?, unlock)
    }

    /// [`Repository::open_or_init`] a local directory.
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
    /// As [`Repository::open_with`], for a repository that exists.
    pub fn open_for_preview_at(location: &Location, unlock: Option<&Unlocker>) -> Result<Self> {
        let backend = kyrodb_backup_backend::open(location)?;
        match Self::open_with(Arc::clone(&backend), unlock) {
            Err(Error::NotARepository(_)) => Ok(Self::with(backend)),
            other => other,
        }
    }

    /// Whether the repository is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.keys.is_some()
    }

    /// The master key of an encrypted repository.
    pub(crate) fn master(&self) -> Option<&Arc<MasterKey>> {
        self.master.as_ref()
    }

    /// The store itself (for an encrypted repository: under the sealing, where only the
    /// marker and the key slots are readable).
    pub(crate) fn raw_backend(&self) -> &Arc<dyn Backend> {
        &self.raw
    }

    /// The working keys of an encrypted repository.
    pub(crate) fn keys(&self) -> Option<&Arc<RepoKeys>> {
        self.keys.as_ref()
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
            self.keys.clone(),
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
