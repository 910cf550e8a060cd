//! The keys of an encrypted repository: where a passphrase comes from ([`KeySource`]), opening
//! the master key from the key slots ([`Unlocker`]), making an encrypted repository, and adding
//! and removing key slots.
//!
//! Every key operation is one create-only write or one delete of a slot object, so a run killed
//! at any instant leaves the slots as they were or as they were meant to be; the last intact
//! slot of a repository is never removed, so a repository never becomes unopenable. A slot names
//! the key it wraps, so the slot of another repository (copied into `keys/` by hand, say) is
//! told apart without its passphrase: it is never tried, and never counts as a way in.

use std::sync::{Arc, Mutex};

use kyrodb_backup_backend::{Backend, Written};
use kyrodb_backup_crypto::{KdfParams, KeySlot, MasterKey, Secret};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::sealed::KEYS_DIR;

/// Largest key slot object read.
const MAX_SLOT: u64 = 16 * 1024;

/// Where the passphrase of an encrypted repository comes from. Asked only when a repository
/// turns out to be encrypted, so a source that prompts never prompts for a plain one.
pub trait KeySource: Send + Sync + std::fmt::Debug {
    /// The passphrase of the encrypted repository at `location`, or why there is none (say, no
    /// terminal to ask on).
    ///
    /// # Errors
    ///
    /// Why there is no passphrase, as a sentence for the person running the command.
    fn passphrase(&self, location: &str) -> std::result::Result<Secret, String>;
}

/// A passphrase known up front (from a file, a variable, a test).
#[derive(Clone)]
pub struct Passphrase(Secret);

impl Passphrase {
    /// This passphrase.
    pub fn new(passphrase: impl AsRef<[u8]>) -> Self {
        Self(Secret::new(passphrase.as_ref().to_vec()))
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

impl KeySource for Passphrase {
    fn passphrase(&self, _location: &str) -> std::result::Result<Secret, String> {
        Ok(self.0.clone())
    }
}

/// Opens encrypted repositories with the passphrases of a [`KeySource`], and remembers the
/// master keys it opened, so a command that opens a repository several times derives the key
/// from the passphrase (the slow part, on purpose) once. Clones share what they remember.
#[derive(Clone, Debug)]
pub struct Unlocker {
    source: Arc<dyn KeySource>,
    opened: Arc<Mutex<Vec<Opened>>>,
}

/// A master key opened by an [`Unlocker`], by its id.
type Opened = (String, Arc<MasterKey>);

impl Unlocker {
    /// An unlocker asking `source`.
    pub fn new(source: Arc<dyn KeySource>) -> Self {
        Self {
            source,
            opened: Arc::default(),
        }
    }

    /// An unlocker with a fixed passphrase.
    pub fn passphrase(passphrase: impl AsRef<[u8]>) -> Self {
        Self::new(Arc::new(Passphrase::new(passphrase)))
    }

    /// The passphrase for `location`, from the source.
    ///
    /// # Errors
    ///
    /// [`Error::KeyRequired`] when the source has none.
    pub fn passphrase_for(&self, location: &str) -> Result<Secret> {
        self.ask(location)
    }

    pub(crate) fn ask(&self, location: &str) -> Result<Secret> {
        self.source
            .passphrase(location)
            .map_err(|why| Error::KeyRequired {
                location: location.to_string(),
                why,
            })
    }

    fn remembered(&self, key_id: &str) -> Option<Arc<MasterKey>> {
        self.opened
            .lock()
            .expect("lock")
            .iter()
            .find(|(id, _)| id == key_id)
            .map(|(_, m)| Arc::clone(m))
    }

    fn remember(&self, master: &Arc<MasterKey>) {
        self.opened
            .lock()
            .expect("lock")
            .push((master.key_id(), Arc::clone(master)));
    }
}

/// One key slot as `key list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeySlotInfo {
    /// The slot's id.
    pub id: String,
    /// When it was added (Unix seconds).
    pub created: u64,
    /// Its Argon2id parameters.
    pub kdf: KdfParams,
    /// Whether the passphrase in use opened this slot.
    pub current: bool,
    /// Why it cannot be used (damaged, or the key of another repository); `None` when intact.
    pub problem: Option<String>,
}

fn slot_key(id: &str) -> String {
    format!("{KEYS_DIR}/{id}")
}

/// A slot object as read.
enum Slot {
    /// Intact, and naming this repository's key.
    Own(KeySlot),
    /// Intact, but naming the key of another repository: unusable, and why.
    Foreign(KeySlot, String),
    /// Damaged: why.
    Damaged(String),
}

/// Every slot object: its key and what it is, for the repository whose master key has id
/// `key_id` (what its marker names).
fn read_slots(backend: &Arc<dyn Backend>, key_id: &str) -> Result<Vec<(String, Slot)>> {
    let mut out = Vec::new();
    for entry in backend.list(&format!("{KEYS_DIR}/"))? {
        let slot = match backend.read(&entry.key, MAX_SLOT) {
            Ok(bytes) => KeySlot::from_bytes(&bytes).map_err(|e| e.to_string()),
            Err(e) if e.is_not_found() => continue,
            Err(kyrodb_backup_backend::Error::Damaged { detail, .. }) => Err(detail),
            Err(e) => return Err(e.into()),
        };
        let slot = match slot {
            Err(why) => Slot::Damaged(why),
            Ok(s) if slot_key(&s.id) != entry.key => {
                Slot::Damaged(format!("names itself {}", s.id))
            }
            Ok(s) if s.key_id != key_id => {
                let why = format!(
                    "the key of another repository (its key id is {}, the one kyrodb-backup.json names is {key_id})",
                    s.key_id
                );
                Slot::Foreign(s, why)
            }
            Ok(s) => Slot::Own(s),
        };
        out.push((entry.key, slot));
    }
    Ok(out)
}

/// The master key with id `key_id`, from the first slot the passphrase opens.
pub(crate) fn unlock(
    backend: &Arc<dyn Backend>,
    key_id: &str,
    unlock: &Unlocker,
) -> Result<Arc<MasterKey>> {
    if let Some(master) = unlock.remembered(key_id) {
        return Ok(master);
    }
    let location = backend.location();
    let slots = read_slots(backend, key_id)?;
    if slots.is_empty() {
        return Err(Error::Damaged(format!(
            "{location} is encrypted but holds no key slot: its {KEYS_DIR}/ folder is missing"
        )));
    }
    let passphrase = unlock.ask(&location)?;
    // Slots that cannot be used: damaged ones, and those naming the key of another repository
    // (passed over without deriving a key for them: they cannot open this repository).
    let (mut damaged, mut foreign, mut tried) = (Vec::new(), Vec::new(), 0);
    for (key, slot) in &slots {
        let slot = match slot {
            Slot::Own(s) => s,
            Slot::Foreign(_, why) => {
                foreign.push(format!("{key} ({why})"));
                continue;
            }
            Slot::Damaged(why) => {
                damaged.push(format!("{key} ({why})"));
                continue;
            }
        };
        tried += 1;
        match slot.open(&passphrase) {
            Ok(master) if master.key_id() == key_id => {
                let master = Arc::new(master);
                unlock.remember(&master);
                return Ok(master);
            }
            // Not expected: `open` refuses a key other than the one the slot names, and this
            // slot names the marker's. Checked anyway: only that key may be trusted.
            Ok(_) => damaged.push(format!(
                "{key} (it holds another key than the one kyrodb-backup.json names: one of the two is damaged)"
            )),
            Err(kyrodb_backup_crypto::Error::WrongPassphrase) => {}
            Err(e) => damaged.push(format!("{key} ({e})")),
        }
    }
    // A wrong passphrase only when an intact slot of this repository was tried and none is
    // damaged; slots of other repositories alone leave it with no way in: damage.
    if damaged.is_empty() && tried > 0 {
        return Err(Error::WrongPassphrase {
            location,
            slots: tried,
        });
    }
    let unusable = damaged.len() + foreign.len();
    let listed = [damaged, foreign].concat().join(", ");
    Err(Error::Damaged(if tried == 0 {
        format!("{location} holds no usable key slot of its own: {listed}")
    } else {
        format!(
            "the passphrase opens none of the intact key slots of {location}, and {} cannot be used: {listed}",
            if unusable == 1 { "one slot" } else { "some slots" },
        )
    }))
}

/// What making an encrypted repository needs.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Argon2id parameters of the first key slot.
    pub kdf: KdfParams,
    /// Now, in Unix seconds (recorded in the slot).
    pub now: u64,
}

/// Makes an encrypted repository on `backend`: a new random master key, one key slot wrapping
/// it with `passphrase`, then the marker (create-only: the commit point). The location must
/// hold no repository.
///
/// # Errors
///
/// [`Error::AlreadyExists`] when it holds one; the store's errors.
pub fn init_encrypted(
    backend: Arc<dyn Backend>,
    passphrase: &[u8],
    opts: &InitOptions,
) -> Result<Repository> {
    if Repository::exists_on(&backend)? {
        return Err(Error::AlreadyExists(format!(
            "{} already holds a repository",
            backend.location()
        )));
    }
    opts.kdf.validate().map_err(crypto_error)?;
    let master = MasterKey::generate().map_err(crypto_error)?;
    let id = kyrodb_backup_crypto::random_id().map_err(crypto_error)?;
    let slot =
        KeySlot::new(&master, passphrase, opts.kdf, id.clone(), opts.now).map_err(crypto_error)?;
    Repository::make_local_root(&backend)?;
    // Slots without a marker are what inits killed before their commit point left: removed
    // once this one commits, so they never count as a way into the repository.
    let strays: Vec<String> = backend
        .list(&format!("{KEYS_DIR}/"))?
        .into_iter()
        .map(|e| e.key)
        .collect();
    // The slot first: a marker never names a key no slot holds. A run killed before the marker
    // leaves a slot of a master nothing uses (the next init ignores it: its key id differs).
    backend.write_new(&slot_key(&id), &slot.to_bytes())?;
    backend.sync()?;
    let marker = Repository::encrypted_marker(master.key_id());
    if Repository::write_marker(&backend, &marker)? == Written::Existed {
        let _ = backend.delete(&slot_key(&id));
        return Err(Error::AlreadyExists(format!(
            "{} already holds a repository (made at the same time by another run)",
            backend.location()
        )));
    }
    for key in strays {
        backend.delete(&key)?;
    }
    backend.sync()?;
    Ok(Repository::encrypted(backend, Arc::new(master)))
}

/// Makes a plain repository on `backend` (what `create` also does by itself); the location
/// must hold no repository.
///
/// # Errors
///
/// [`Error::AlreadyExists`] when it holds one; the store's errors.
pub fn init_plain(backend: Arc<dyn Backend>) -> Result<Repository> {
    if !Repository::exists_on(&backend)? {
        Repository::refuse_unfinished_encrypted(&backend)?;
    }
    if Repository::exists_on(&backend)?
        || Repository::write_marker(&backend, &Repository::plain_marker())? == Written::Existed
    {
        return Err(Error::AlreadyExists(format!(
            "{} already holds a repository",
            backend.location()
        )));
    }
    Repository::open_on(backend)
}

fn crypto_error(e: kyrodb_backup_crypto::Error) -> Error {
    match e {
        kyrodb_backup_crypto::Error::Damaged(d) => Error::Damaged(d),
        other => Error::KeyRefused(other.to_string()),
    }
}

impl Repository {
    fn master_or_refuse(&self) -> Result<&Arc<MasterKey>> {
        self.master().ok_or_else(|| {
            Error::KeyRefused(format!(
                "{} is not encrypted: it has no keys",
                self.location()
            ))
        })
    }

    /// The key slots, each with whether the master key in use came from it (the slot the
    /// passphrase `current` opens, when given) and what makes it unusable: damage, or naming
    /// the key of another repository (told without any passphrase; `current` is not tried on
    /// such a slot).
    ///
    /// # Errors
    ///
    /// [`Error::KeyRefused`] for a plain repository; the store's errors.
    pub fn key_slots(&self, current: Option<&[u8]>) -> Result<Vec<KeySlotInfo>> {
        let master = self.master_or_refuse()?;
        let mut out = Vec::new();
        for (key, slot) in read_slots(self.raw_backend(), &master.key_id())? {
            out.push(match slot {
                Slot::Own(s) => {
                    let (current, problem) = match current.map(|p| s.open(p)) {
                        Some(Ok(m)) if m.key_id() == master.key_id() => (true, None),
                        Some(Ok(_)) => (false, Some("the key of another repository".into())),
                        Some(Err(kyrodb_backup_crypto::Error::Damaged(why))) => (false, Some(why)),
                        _ => (false, None),
                    };
                    KeySlotInfo {
                        id: s.id,
                        created: s.created,
                        kdf: s.kdf,
                        current,
                        problem,
                    }
                }
                // Told from what it names: no passphrase needed, and none tried on it.
                Slot::Foreign(s, why) => KeySlotInfo {
                    id: s.id,
                    created: s.created,
                    kdf: s.kdf,
                    current: false,
                    problem: Some(why),
                },
                Slot::Damaged(why) => KeySlotInfo {
                    id: key.trim_start_matches(&format!("{KEYS_DIR}/")).to_string(),
                    created: 0,
                    kdf: KdfParams::default(),
                    current: false,
                    problem: Some(why),
                },
            });
        }
        Ok(out)
    }

    /// Adds a key slot wrapping the master key in use with `passphrase`; returns its id. One
    /// create-only write, made durable before this returns.
    ///
    /// # Errors
    ///
    /// [`Error::KeyRefused`] for a plain repository or parameters Argon2 refuses; the store's
    /// errors.
    pub fn add_key_slot(&self, passphrase: &[u8], kdf: KdfParams, now: u64) -> Result<String> {
        let master = self.master_or_refuse()?;
        kdf.validate().map_err(crypto_error)?;
        let id = kyrodb_backup_crypto::random_id().map_err(crypto_error)?;
        let slot = KeySlot::new(master, passphrase, kdf, id.clone(), now).map_err(crypto_error)?;
        // The slot must open before it is trusted with the repository's only copy of the key.
        let back = KeySlot::from_bytes(&slot.to_bytes())
            .and_then(|s| s.open(passphrase))
            .map_err(crypto_error)?;
        if back.key_id() != master.key_id() {
            return Err(Error::KeyRefused("the new key slot does not open".into()));
        }
        if self
            .raw_backend()
            .write_new(&slot_key(&id), &slot.to_bytes())?
            == Written::Existed
        {
            return Err(Error::KeyRefused(format!("key slot {id} exists already")));
        }
        self.raw_backend().sync()?;
        Ok(id)
    }

    /// Removes a key slot (by id or unique prefix of at least 4 characters). Refuses to remove
    /// the last intact slot naming this repository's key: the repository would be unopenable
    /// (damaged slots and slots of another repository are no way in). Returns the id removed.
    ///
    /// # Errors
    ///
    /// [`Error::KeyRefused`] as said, or when no slot (or several) match; the store's errors.
    pub fn remove_key_slot(&self, id: &str) -> Result<String> {
        let master = self.master_or_refuse()?;
        let slots = read_slots(self.raw_backend(), &master.key_id())?;
        let matching: Vec<&(String, Slot)> = slots
            .iter()
            .filter(|(key, _)| {
                id.len() >= 4
                    && key
                        .strip_prefix(&format!("{KEYS_DIR}/"))
                        .is_some_and(|k| k.starts_with(id))
            })
            .collect();
        let (key, _) = match matching.as_slice() {
            [one] => *one,
            [] => {
                return Err(Error::KeyRefused(format!(
                    "no key slot of {} matches {id:?}",
                    self.location()
                )))
            }
            _ => {
                return Err(Error::KeyRefused(format!(
                    "key slot prefix {id:?} matches several slots"
                )))
            }
        };
        // The slots that would be left and hold this repository's key: the intact ones naming
        // it. What is damaged does not count, nor does a slot of another repository.
        let others = slots
            .iter()
            .filter(|(k, s)| k != key && matches!(s, Slot::Own(_)))
            .count();
        if others == 0 {
            return Err(Error::KeyRefused(format!(
                "{key} is the last intact key slot of {}: removing it would make the repository unopenable",
                self.location()
            )));
        }
        self.raw_backend().delete(key)?;
        self.raw_backend().sync()?;
        Ok(key.trim_start_matches(&format!("{KEYS_DIR}/")).to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use kyrodb_backup_backend::{Backend, LocalBackend};
    use kyrodb_backup_crypto::{is_sealed, KdfParams, Secret};

    use super::{init_encrypted, init_plain, InitOptions, KeySource, Unlocker};
    use crate::error::Error;
    use crate::repository::Repository;

    /// Argon2id as cheap as it goes: these tests are about slots, not their cost.
    const KDF: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    const NOW: u64 = 1_800_000_000;
    const CHAIN: &str = "0190a1b2-c3d4-4e5f-8a9b-0c1d2e3f4a5b";

    fn opts() -> InitOptions {
        InitOptions { kdf: KDF, now: NOW }
    }

    fn store(root: &Path) -> Arc<dyn Backend> {
        Arc::new(LocalBackend::new(root.to_path_buf()))
    }

    fn open(root: &Path, passphrase: &str) -> crate::Result<Repository> {
        Repository::open_with(store(root), Some(&Unlocker::passphrase(passphrase)))
    }

    /// The encrypted repository at `root`, made with `passphrase`.
    fn made(root: &Path, passphrase: &str) -> Repository {
        init_encrypted(store(root), passphrase.as_bytes(), &opts()).unwrap()
    }

    /// The slot files under `root/keys`, sorted.
    fn slot_files(root: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = match std::fs::read_dir(root.join("keys")) {
            Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        };
        out.sort();
        out
    }

    fn file_name(p: &Path) -> String {
        p.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// Changes one hex digit of a slot's wrapped key on disk, as a flipped bit would.
    fn damage_slot(path: &Path) {
        let mut bytes = std::fs::read(path).unwrap();
        let at = bytes
            .windows(12)
            .position(|w| w == b"\"wrapped\": \"")
            .unwrap()
            + 12
            + 40;
        bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
        std::fs::write(path, bytes).unwrap();
    }

    /// A passphrase source that counts how often it is asked.
    #[derive(Debug)]
    struct Counting {
        passphrase: &'static str,
        asked: AtomicUsize,
    }

    impl KeySource for Counting {
        fn passphrase(&self, _location: &str) -> std::result::Result<Secret, String> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            Ok(Secret::new(self.passphrase.as_bytes().to_vec()))
        }
    }

    /// A source with no passphrase to give.
    #[derive(Debug)]
    struct NoTerminal;

    impl KeySource for NoTerminal {
        fn passphrase(&self, _location: &str) -> std::result::Result<Secret, String> {
            Err("no terminal to ask on".into())
        }
    }

    #[test]
    fn an_encrypted_repository_opens_with_its_passphrase_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        let repo = made(&root, "correct horse");
        assert!(repo.is_encrypted());
        let marker = std::fs::read_to_string(root.join("kyrodb-backup.json")).unwrap();
        assert!(
            marker.contains(&repo.master().unwrap().key_id()),
            "{marker}"
        );
        assert_eq!(slot_files(&root).len(), 1);

        let opened = open(&root, "correct horse").unwrap();
        assert!(opened.is_encrypted());
        assert_eq!(
            opened.master().unwrap().key_id(),
            repo.master().unwrap().key_id()
        );

        match open(&root, "wrong horse") {
            Err(Error::WrongPassphrase { location, slots }) => {
                assert_eq!((location.as_str(), slots), (root.to_str().unwrap(), 1));
            }
            other => panic!("expected WrongPassphrase, got {other:?}"),
        }
        for unlock in [None, Some(Unlocker::new(Arc::new(NoTerminal)))] {
            match Repository::open_with(store(&root), unlock.as_ref()) {
                Err(Error::KeyRequired { location, why }) => {
                    assert_eq!(location, root.to_str().unwrap());
                    assert!(unlock.is_none() || why == "no terminal to ask on", "{why}");
                }
                other => panic!("expected KeyRequired, got {other:?}"),
            }
        }
        assert!(matches!(
            Repository::open(&root),
            Err(Error::KeyRequired { .. })
        ));
    }

    #[test]
    fn an_unlocker_asks_once_and_its_clones_remember() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        made(&root, "pass");
        let source = Arc::new(Counting {
            passphrase: "pass",
            asked: AtomicUsize::new(0),
        });
        let unlock = Unlocker::new(Arc::clone(&source) as Arc<dyn KeySource>);
        for _ in 0..3 {
            Repository::open_with(store(&root), Some(&unlock)).unwrap();
        }
        Repository::open_with(store(&root), Some(&unlock.clone())).unwrap();
        assert_eq!(source.asked.load(Ordering::SeqCst), 1);
        // Another unlocker remembers nothing of it.
        let fresh = Unlocker::new(Arc::clone(&source) as Arc<dyn KeySource>);
        Repository::open_with(store(&root), Some(&fresh)).unwrap();
        assert_eq!(source.asked.load(Ordering::SeqCst), 2);
        // A plain repository never asks.
        let plain = tmp.path().join("plain");
        init_plain(store(&plain)).unwrap();
        let opened = Repository::open_with(store(&plain), Some(&fresh)).unwrap();
        assert!(!opened.is_encrypted());
        let never = Arc::new(Counting {
            passphrase: "pass",
            asked: AtomicUsize::new(0),
        });
        let unlock = Unlocker::new(Arc::clone(&never) as Arc<dyn KeySource>);
        Repository::open_with(store(&plain), Some(&unlock)).unwrap();
        assert_eq!(never.asked.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_repository_is_made_once() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        made(&root, "first");
        let marker = std::fs::read(root.join("kyrodb-backup.json")).unwrap();
        let slots = slot_files(&root);
        assert!(matches!(
            init_encrypted(store(&root), b"second", &opts()),
            Err(Error::AlreadyExists(_))
        ));
        assert!(matches!(
            init_plain(store(&root)),
            Err(Error::AlreadyExists(_))
        ));
        // Nothing changed: the same marker and slot, and only the first passphrase opens it.
        assert_eq!(
            std::fs::read(root.join("kyrodb-backup.json")).unwrap(),
            marker
        );
        assert_eq!(slot_files(&root), slots);
        open(&root, "first").unwrap();
        assert!(matches!(
            open(&root, "second"),
            Err(Error::WrongPassphrase { slots: 1, .. })
        ));

        let plain = tmp.path().join("plain");
        init_plain(store(&plain)).unwrap();
        assert!(matches!(
            init_encrypted(store(&plain), b"p", &opts()),
            Err(Error::AlreadyExists(_))
        ));
        assert!(matches!(
            init_plain(store(&plain)),
            Err(Error::AlreadyExists(_))
        ));
        assert!(slot_files(&plain).is_empty());
    }

    #[test]
    fn added_slots_open_and_removing_keeps_one() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        let repo = made(&root, "one");
        let first = file_name(&slot_files(&root)[0]);
        let second = repo.add_key_slot(b"two", KDF, NOW + 60).unwrap();
        assert_ne!(first, second);
        assert_eq!(slot_files(&root).len(), 2);
        let key_id = repo.master().unwrap().key_id();
        for p in ["one", "two"] {
            assert_eq!(open(&root, p).unwrap().master().unwrap().key_id(), key_id);
        }
        assert!(matches!(
            open(&root, "three"),
            Err(Error::WrongPassphrase { slots: 2, .. })
        ));

        let slots = repo.key_slots(Some(b"two")).unwrap();
        assert_eq!(slots.len(), 2);
        for s in &slots {
            assert_eq!(s.problem, None);
            assert_eq!(s.kdf, KDF);
            assert_eq!(s.current, s.id == second, "{s:?}");
            assert_eq!(s.created, if s.id == second { NOW + 60 } else { NOW });
        }

        // Ids shorter than 4 characters, and ids of no slot, are refused.
        assert!(matches!(
            repo.remove_key_slot(&first[..3]),
            Err(Error::KeyRefused(_))
        ));
        assert!(matches!(
            repo.remove_key_slot("zzzzzzzz"),
            Err(Error::KeyRefused(_))
        ));
        // By a prefix: the other passphrase still opens, the removed one does not.
        assert_eq!(repo.remove_key_slot(&first[..6]).unwrap(), first);
        assert_eq!(slot_files(&root).len(), 1);
        open(&root, "two").unwrap();
        assert!(matches!(
            open(&root, "one"),
            Err(Error::WrongPassphrase { slots: 1, .. })
        ));
        // The last one stays.
        assert!(matches!(
            repo.remove_key_slot(&second),
            Err(Error::KeyRefused(_))
        ));
        assert_eq!(file_name(&slot_files(&root)[0]), second);
        open(&root, "two").unwrap();
    }

    #[test]
    fn a_plain_repository_has_no_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("plain");
        let repo = init_plain(store(&root)).unwrap();
        assert!(!repo.is_encrypted());
        assert!(matches!(repo.key_slots(None), Err(Error::KeyRefused(_))));
        assert!(matches!(
            repo.add_key_slot(b"p", KDF, NOW),
            Err(Error::KeyRefused(_))
        ));
        assert!(matches!(
            repo.remove_key_slot("abcdef"),
            Err(Error::KeyRefused(_))
        ));
        assert!(slot_files(&root).is_empty());
        // A slot beside a plain marker: the marker of an encrypted repository was replaced.
        std::fs::create_dir_all(root.join("keys")).unwrap();
        std::fs::write(root.join("keys/0123456789abcdef"), b"{}").unwrap();
        match Repository::open_with(store(&root), Some(&Unlocker::passphrase("p"))) {
            Err(Error::Damaged(m)) => assert!(m.contains("holds key slots"), "{m}"),
            other => panic!("expected Damaged, got {other:?}"),
        }
    }

    #[test]
    fn a_damaged_slot_is_passed_over_when_another_opens() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        let repo = made(&root, "one");
        let first = slot_files(&root)[0].clone();
        let second = repo.add_key_slot(b"two", KDF, NOW).unwrap();
        damage_slot(&first);
        open(&root, "two").unwrap();
        // The passphrase of the damaged slot opens no intact one: damage, naming the slot.
        match open(&root, "one") {
            Err(Error::Damaged(m)) => assert!(m.contains(&file_name(&first)), "{m}"),
            other => panic!("expected Damaged, got {other:?}"),
        }
        let slots = repo.key_slots(Some(b"two")).unwrap();
        let damaged = slots.iter().find(|s| s.id == file_name(&first)).unwrap();
        assert!(damaged.problem.is_some() && !damaged.current, "{damaged:?}");
        let intact = slots.iter().find(|s| s.id == second).unwrap();
        assert!(intact.problem.is_none() && intact.current, "{intact:?}");
        // A damaged slot does not count as a way in: the intact one cannot be removed.
        assert!(matches!(
            repo.remove_key_slot(&second),
            Err(Error::KeyRefused(_))
        ));
        // The damaged one can.
        repo.remove_key_slot(&file_name(&first)).unwrap();
        assert_eq!(slot_files(&root).len(), 1);
        open(&root, "two").unwrap();
    }

    #[test]
    fn a_damaged_sole_slot_is_damage_not_a_wrong_passphrase() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        made(&root, "one");
        let slot = slot_files(&root)[0].clone();
        damage_slot(&slot);
        for p in ["one", "other"] {
            match open(&root, p) {
                Err(Error::Damaged(m)) => {
                    assert!(m.contains(&format!("keys/{}", file_name(&slot))), "{m}");
                }
                other => panic!("expected Damaged, got {other:?}"),
            }
        }
        // A slot that names itself otherwise than its object is damaged too.
        let tmp2 = tempfile::tempdir().unwrap();
        let root2 = tmp2.path().join("repo");
        made(&root2, "one");
        let slot = slot_files(&root2)[0].clone();
        std::fs::rename(&slot, root2.join("keys/0000000000000000")).unwrap();
        match open(&root2, "one") {
            Err(Error::Damaged(m)) => assert!(m.contains("names itself"), "{m}"),
            other => panic!("expected Damaged, got {other:?}"),
        }
        // No slot at all.
        std::fs::remove_file(root2.join("keys/0000000000000000")).unwrap();
        match open(&root2, "one") {
            Err(Error::Damaged(m)) => assert!(m.contains("holds no key slot"), "{m}"),
            other => panic!("expected Damaged, got {other:?}"),
        }
    }

    #[test]
    fn the_slot_of_a_killed_init_is_removed_by_the_next() {
        let tmp = tempfile::tempdir().unwrap();
        // A slot of a master no marker names, as an init killed before its marker leaves.
        let other = tmp.path().join("other");
        made(&other, "pass");
        let stray = slot_files(&other)[0].clone();
        let root = tmp.path().join("repo");
        std::fs::create_dir_all(root.join("keys")).unwrap();
        std::fs::copy(&stray, root.join("keys").join(file_name(&stray))).unwrap();
        assert!(!Repository::exists_on(&store(&root)).unwrap());

        let repo = made(&root, "pass");
        let slots = slot_files(&root);
        assert_eq!(slots.len(), 1, "{slots:?}");
        assert_ne!(file_name(&slots[0]), file_name(&stray));
        assert_eq!(repo.key_slots(None).unwrap().len(), 1);
        let opened = open(&root, "pass").unwrap();
        assert_eq!(
            opened.master().unwrap().key_id(),
            repo.master().unwrap().key_id()
        );
    }

    /// Repository `b` made with `b_pass`, holding also the slot of repository `a` made with
    /// `a_pass` (copied in by hand); the two repositories and the copied slot's id.
    fn with_a_foreign_slot(
        tmp: &Path,
        a_pass: &str,
        b_pass: &str,
    ) -> (Repository, Repository, String) {
        let repo_a = made(&tmp.join("a"), a_pass);
        let b = tmp.join("b");
        let repo_b = made(&b, b_pass);
        let foreign = slot_files(&tmp.join("a"))[0].clone();
        std::fs::copy(&foreign, b.join("keys").join(file_name(&foreign))).unwrap();
        (repo_a, repo_b, file_name(&foreign))
    }

    fn key_id(repo: &Repository) -> String {
        repo.master().unwrap().key_id()
    }

    /// What `key list` says of a slot of `from` found in `into`.
    fn foreign_problem(from: &Repository, into: &Repository) -> String {
        format!(
            "the key of another repository (its key id is {}, the one kyrodb-backup.json names is {})",
            key_id(from),
            key_id(into)
        )
    }

    #[test]
    fn the_slot_of_another_repository_is_not_a_way_in() {
        let tmp = tempfile::tempdir().unwrap();
        let (repo_a, repo_b, foreign) = with_a_foreign_slot(tmp.path(), "shared", "b's own");
        let b = tmp.path().join("b");
        let own = repo_b
            .key_slots(None)
            .unwrap()
            .into_iter()
            .find(|s| s.id != foreign)
            .unwrap()
            .id;

        // The passphrase of the foreign slot: that slot is passed over (never tried), B's own
        // intact slot is tried and does not open: a wrong passphrase, one slot tried.
        assert!(matches!(
            open(&b, "shared"),
            Err(Error::WrongPassphrase { slots: 1, .. })
        ));
        // B's own passphrase still opens it, whatever order the slots are tried in.
        let opened = open(&b, "b's own").unwrap();
        assert_eq!(key_id(&opened), key_id(&repo_b));

        // Listed as foreign with no passphrase at all, and with any: never current.
        for current in [None, Some(&b"shared"[..]), Some(&b"b's own"[..])] {
            let slots = repo_b.key_slots(current).unwrap();
            assert_eq!(slots.len(), 2);
            let listed = slots.iter().find(|s| s.id == foreign).unwrap();
            assert_eq!(
                listed.problem.as_deref(),
                Some(foreign_problem(&repo_a, &repo_b).as_str())
            );
            assert!(!listed.current, "{listed:?}");
            // What the slot says of itself is shown.
            assert_eq!((listed.created, listed.kdf), (NOW, KDF));
            let mine = slots.iter().find(|s| s.id == own).unwrap();
            assert_eq!(mine.problem, None);
            assert_eq!(mine.current, current == Some(&b"b's own"[..]));
        }

        // Never counted as a way in: B's only own slot stays.
        match repo_b.remove_key_slot(&own) {
            Err(Error::KeyRefused(m)) => {
                assert!(m.contains("is the last intact key slot of"), "{m}");
                assert!(m.contains(&format!("keys/{own}")), "{m}");
            }
            other => panic!("expected KeyRefused, got {other:?}"),
        }
        assert_eq!(slot_files(&b).len(), 2);
        // The foreign one can go, and then B is as it was made.
        assert_eq!(repo_b.remove_key_slot(&foreign).unwrap(), foreign);
        assert_eq!(slot_files(&b), [b.join("keys").join(&own)]);
        open(&b, "b's own").unwrap();
        assert!(matches!(
            repo_b.remove_key_slot(&own),
            Err(Error::KeyRefused(_))
        ));
    }

    #[test]
    fn a_slot_copied_in_under_the_same_passphrase_does_not_let_the_last_own_one_go() {
        let tmp = tempfile::tempdir().unwrap();
        let (repo_a, repo_b, foreign) = with_a_foreign_slot(tmp.path(), "same", "same");
        let b = tmp.path().join("b");
        // The passphrase opens B, from B's own slot.
        let opened = open(&b, "same").unwrap();
        assert_eq!(key_id(&opened), key_id(&repo_b));
        let slots = repo_b.key_slots(Some(b"same")).unwrap();
        let listed = slots.iter().find(|s| s.id == foreign).unwrap();
        assert_eq!(
            listed.problem.as_deref(),
            Some(foreign_problem(&repo_a, &repo_b).as_str())
        );
        assert!(!listed.current);
        let own = slots.iter().find(|s| s.id != foreign).unwrap();
        assert!(own.current && own.problem.is_none(), "{own:?}");
        // Two intact slots the passphrase opens, but only one is B's: it stays.
        match repo_b.remove_key_slot(&own.id) {
            Err(Error::KeyRefused(m)) => {
                assert!(m.contains("is the last intact key slot of"), "{m}");
            }
            other => panic!("expected KeyRefused, got {other:?}"),
        }
        open(&b, "same").unwrap();
        // A second own slot is a way in; the first can go then.
        repo_b.add_key_slot(b"other", KDF, NOW).unwrap();
        assert_eq!(repo_b.remove_key_slot(&own.id).unwrap(), own.id);
        open(&b, "other").unwrap();
        assert!(matches!(
            open(&b, "same"),
            Err(Error::WrongPassphrase { slots: 1, .. })
        ));
    }

    #[test]
    fn slots_of_another_repository_alone_are_damage_naming_them() {
        let tmp = tempfile::tempdir().unwrap();
        let (repo_a, repo_b, foreign) = with_a_foreign_slot(tmp.path(), "shared", "b's own");
        let b = tmp.path().join("b");
        let own = slot_files(&b)
            .into_iter()
            .find(|p| file_name(p) != foreign)
            .unwrap();
        let problem = foreign_problem(&repo_a, &repo_b);

        // B's own slot damaged: no slot of B is usable, whatever the passphrase.
        let own_bytes = std::fs::read(&own).unwrap();
        damage_slot(&own);
        for p in ["shared", "b's own", "neither"] {
            match open(&b, p) {
                Err(Error::Damaged(m)) => {
                    assert!(m.contains("holds no usable key slot of its own"), "{m}");
                    assert!(m.contains(&format!("keys/{}", file_name(&own))), "{m}");
                    assert!(m.contains(&format!("keys/{foreign} ({problem})")), "{m}");
                }
                other => panic!("{p}: expected Damaged, got {other:?}"),
            }
        }
        // B's own slot gone (removed by hand): the foreign one alone, named.
        std::fs::remove_file(&own).unwrap();
        for p in ["shared", "b's own"] {
            match open(&b, p) {
                Err(Error::Damaged(m)) => {
                    assert!(m.contains("holds no usable key slot of its own"), "{m}");
                    assert!(m.ends_with(&format!("keys/{foreign} ({problem})")), "{m}");
                }
                other => panic!("{p}: expected Damaged, got {other:?}"),
            }
        }
        // Put back, B opens again with its own passphrase only.
        std::fs::write(&own, own_bytes).unwrap();
        open(&b, "b's own").unwrap();
        assert!(matches!(
            open(&b, "shared"),
            Err(Error::WrongPassphrase { slots: 1, .. })
        ));
    }

    #[test]
    fn chunks_are_named_by_the_repository_key() {
        let tmp = tempfile::tempdir().unwrap();
        let plain = init_plain(store(&tmp.path().join("plain"))).unwrap();
        let enc = made(&tmp.path().join("enc"), "p");
        let enc_again = open(&tmp.path().join("enc"), "p").unwrap();
        let other = made(&tmp.path().join("other"), "p");
        let bytes = b"the same bytes in every repository".repeat(100);

        let (in_plain, _) = plain.chain_store(CHAIN).unwrap().put(&bytes).unwrap();
        let (in_enc, written) = enc.chain_store(CHAIN).unwrap().put(&bytes).unwrap();
        let (in_other, _) = other.chain_store(CHAIN).unwrap().put(&bytes).unwrap();
        assert!(written > 0);
        assert_eq!(in_plain.size, in_enc.size);
        assert_eq!(
            in_plain.hash,
            kyrodb_backup_format::repo::ContentHash::of(&bytes)
        );
        assert_ne!(in_plain.hash, in_enc.hash);
        assert_ne!(in_enc.hash, in_other.hash);
        // Another handle on the same repository names it the same, and finds it.
        let again = enc_again.chain_store(CHAIN).unwrap();
        assert_eq!(again.id_of(&bytes), in_enc.hash);
        assert!(again.contains(in_enc.hash));
        assert_eq!(again.get(&in_enc).unwrap(), bytes);
        // Stored sealed, under the keyed name.
        let key = again.chunk_key(in_enc.hash);
        let raw = std::fs::read(tmp.path().join("enc").join(&key)).unwrap();
        assert!(is_sealed(&raw));
        assert!(!tmp
            .path()
            .join("enc")
            .join(again.chunk_key(in_plain.hash))
            .exists());

        let store = |r: &Repository| r.chain_store(CHAIN).unwrap();
        assert!(store(&enc).same_naming(&store(&enc_again)));
        assert!(store(&enc_again).same_naming(&store(&enc)));
        assert!(store(&plain).same_naming(&store(&plain)));
        assert!(!store(&plain).same_naming(&store(&enc)));
        assert!(!store(&enc).same_naming(&store(&plain)));
        assert!(!store(&enc).same_naming(&store(&other)));
    }

    /// The location an `init --encrypt` killed before its marker leaves: a slot and no marker.
    fn killed_encrypted_init(tmp: &Path) -> PathBuf {
        let other = tmp.join("other");
        made(&other, "pass");
        let stray = slot_files(&other)[0].clone();
        let root = tmp.join("repo");
        std::fs::create_dir_all(root.join("keys")).unwrap();
        std::fs::copy(&stray, root.join("keys").join(file_name(&stray))).unwrap();
        root
    }

    /// What a make that ran over the stray slot of a killed encrypted init left is usable:
    /// either it made a repository that opens, or it failed and left no marker, so the
    /// encrypted init that was meant can still be run.
    fn assert_usable_after(root: &Path, made_plain: crate::Result<Repository>) {
        match made_plain {
            Ok(_) => {
                Repository::open_on(store(root)).unwrap();
            }
            Err(e) => {
                assert!(
                    !root.join("kyrodb-backup.json").exists(),
                    "it failed ({e}) but left its plain marker beside the stray slot: \
                     every later open is Damaged, and init --encrypt says AlreadyExists ({:?})",
                    init_encrypted(store(root), b"pass", &opts()).map(|_| ())
                );
                made(root, "pass");
            }
        }
    }

    #[test]
    fn a_plain_init_over_the_slot_of_a_killed_encrypted_init_leaves_a_usable_location() {
        let tmp = tempfile::tempdir().unwrap();
        let root = killed_encrypted_init(tmp.path());
        assert_usable_after(&root, init_plain(store(&root)));
    }

    #[test]
    fn a_create_over_the_slot_of_a_killed_encrypted_init_leaves_a_usable_location() {
        let tmp = tempfile::tempdir().unwrap();
        let root = killed_encrypted_init(tmp.path());
        // What `create` (and a copy's target) does with a location that holds no repository.
        assert_usable_after(&root, Repository::open_or_init_on(store(&root)));
    }
}
