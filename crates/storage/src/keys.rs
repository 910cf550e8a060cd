//! The keys of an encrypted repository: where a passphrase comes from ([`KeySource`]), opening
//! the master key from the key slots ([`Unlocker`]), making an encrypted repository, and adding
//! and removing key slots.
//!
//! Every key operation is one create-only write or one delete of a slot object, so a run killed
//! at any instant leaves the slots as they were or as they were meant to be; the last intact
//! slot of a repository is never removed, so a repository never becomes unopenable.

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

/// Every slot object: its key and either the slot or why it is unusable.
fn read_slots(
    backend: &Arc<dyn Backend>,
) -> Result<Vec<(String, std::result::Result<KeySlot, String>)>> {
    let mut out = Vec::new();
    for entry in backend.list(&format!("{KEYS_DIR}/"))? {
        let slot = match backend.read(&entry.key, MAX_SLOT) {
            Ok(bytes) => KeySlot::from_bytes(&bytes).map_err(|e| e.to_string()),
            Err(e) if e.is_not_found() => continue,
            Err(kyrodb_backup_backend::Error::Damaged { detail, .. }) => Err(detail),
            Err(e) => return Err(e.into()),
        };
        let slot = slot.and_then(|s| {
            if slot_key(&s.id) == entry.key {
                Ok(s)
            } else {
                Err(format!("names itself {}", s.id))
            }
        });
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
    let slots = read_slots(backend)?;
    if slots.is_empty() {
        return Err(Error::Damaged(format!(
            "{location} is encrypted but holds no key slot: its {KEYS_DIR}/ folder is missing"
        )));
    }
    let passphrase = unlock.ask(&location)?;
    let (mut damaged, mut tried) = (Vec::new(), 0);
    for (key, slot) in &slots {
        let slot = match slot {
            Ok(s) => s,
            Err(why) => {
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
            Ok(_) => damaged.push(format!(
                "{key} (it holds another key than the one kyrodb-backup.json names: one of the two is damaged, or the slot is another repository's)"
            )),
            Err(kyrodb_backup_crypto::Error::WrongPassphrase) => {}
            Err(e) => damaged.push(format!("{key} ({e})")),
        }
    }
    if damaged.is_empty() {
        Err(Error::WrongPassphrase {
            location,
            slots: tried,
        })
    } else {
        Err(Error::Damaged(format!(
            "the passphrase opens none of the intact key slots of {location}, and {} cannot be used: {}",
            if damaged.len() == 1 { "one slot" } else { "some slots" },
            damaged.join(", ")
        )))
    }
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
    /// passphrase `current` opens, when given).
    ///
    /// # Errors
    ///
    /// [`Error::KeyRefused`] for a plain repository; the store's errors.
    pub fn key_slots(&self, current: Option<&[u8]>) -> Result<Vec<KeySlotInfo>> {
        let master = self.master_or_refuse()?;
        let mut out = Vec::new();
        for (key, slot) in read_slots(self.raw_backend())? {
            out.push(match slot {
                Ok(s) => {
                    let (current, problem) = match current.map(|p| s.open(p)) {
                        Some(Ok(m)) if m.key_id() == master.key_id() => (true, None),
                        Some(Ok(_)) => (false, Some("the key of another repository".into())),
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
                Err(why) => KeySlotInfo {
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
    /// the last intact slot holding this repository's key: the repository would be unopenable.
    /// Returns the id removed.
    ///
    /// # Errors
    ///
    /// [`Error::KeyRefused`] as said, or when no slot (or several) match; the store's errors.
    pub fn remove_key_slot(&self, id: &str) -> Result<String> {
        let master = self.master_or_refuse()?;
        let slots = read_slots(self.raw_backend())?;
        let matching: Vec<&(String, std::result::Result<KeySlot, String>)> = slots
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
        // The slots that would be left and hold this repository's key. Whether a slot holds it
        // cannot be told without its passphrase, so every intact other slot counts; what is
        // damaged does not.
        let others = slots.iter().filter(|(k, s)| k != key && s.is_ok()).count();
        if others == 0 {
            return Err(Error::KeyRefused(format!(
                "{key} is the last intact key slot of {}: removing it would make the repository unopenable",
                self.location()
            )));
        }
        let _ = master;
        self.raw_backend().delete(key)?;
        self.raw_backend().sync()?;
        Ok(key.trim_start_matches(&format!("{KEYS_DIR}/")).to_string())
    }
}
