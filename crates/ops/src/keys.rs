//! `init` and `key add | list | remove | passwd`: making a repository (plain or encrypted) and
//! managing an encrypted one's key slots.

use kyrodb_backup_storage::crypto::{KdfParams, Secret};
use kyrodb_backup_storage::{init_encrypted, init_plain, KeySlotInfo};
use serde::Serialize;

use crate::access::RepoRef;
use crate::error::{Error, Result};
use crate::model::Now;

/// What `init` is asked to do.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct InitOptions {
    /// Make an encrypted repository (its passphrase from the [`RepoRef`]'s keys).
    pub encrypt: bool,
    /// Argon2id parameters of its first key slot.
    pub kdf: KdfParams,
}

impl InitOptions {
    /// A plain repository.
    pub fn plain() -> Self {
        Self::default()
    }

    /// An encrypted repository with the default Argon2id parameters.
    pub fn encrypted() -> Self {
        Self {
            encrypt: true,
            kdf: KdfParams::default(),
        }
    }
}

/// What `init` made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InitReport {
    /// Where.
    pub location: String,
    /// Whether it is encrypted.
    pub encrypted: bool,
    /// The id of its first key slot (encrypted only).
    pub key_slot: Option<String>,
}

/// Makes an empty repository at `repo`: plain, or encrypted with a new random master key
/// wrapped by the passphrase of `repo`'s keys. The location must hold no repository.
///
/// # Errors
///
/// [`Error::AlreadyExists`] when it holds one, [`Error::KeyRequired`] when an encrypted one is
/// asked for without a passphrase, the store's errors.
pub fn init(repo: impl Into<RepoRef>, opts: &InitOptions, now: Now) -> Result<InitReport> {
    let repo = repo.into();
    let backend = kyrodb_backup_storage::backend::open(&repo.location)?;
    let location = repo.display();
    if !opts.encrypt {
        init_plain(backend)?;
        return Ok(InitReport {
            location,
            encrypted: false,
            key_slot: None,
        });
    }
    let passphrase = passphrase_of(&repo)?;
    let made = init_encrypted(
        backend,
        &passphrase,
        &kyrodb_backup_storage::InitOptions {
            kdf: opts.kdf,
            now: now.secs,
        },
    )?;
    let slots = made.key_slots(None)?;
    Ok(InitReport {
        location,
        encrypted: true,
        key_slot: slots.first().map(|s| s.id.clone()),
    })
}

/// The repository, opened; refused when it is plain (it has no keys).
fn encrypted(repo: &RepoRef) -> Result<kyrodb_backup_storage::Repository> {
    let opened = repo.open()?;
    if !opened.is_encrypted() {
        return Err(Error::KeyRefused(format!(
            "{} is not encrypted: it has no keys",
            repo.display()
        )));
    }
    Ok(opened)
}

fn passphrase_of(repo: &RepoRef) -> Result<Secret> {
    let Some(keys) = &repo.keys else {
        return Err(Error::KeyRequired {
            location: repo.display(),
            why: "no key source".into(),
        });
    };
    Ok(keys.passphrase_for(&repo.display())?)
}

/// Opens the encrypted repository at `repo` with its passphrase, and nothing else: what a front
/// end runs before it asks for a new passphrase, so a wrong current one (or a plain repository)
/// fails first. The key it derives stays with `repo`'s keys, so the key command that follows
/// derives none again.
///
/// # Errors
///
/// [`Error::KeyRefused`] for a plain repository; as opening it.
pub fn key_unlock(repo: impl Into<RepoRef>) -> Result<()> {
    encrypted(&repo.into()).map(drop)
}

/// What `key list` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyListReport {
    /// The repository.
    pub location: String,
    /// Its key slots.
    pub slots: Vec<KeySlotInfo>,
}

/// The key slots of the encrypted repository at `repo`, marking the one its passphrase opens.
///
/// # Errors
///
/// [`Error::KeyRefused`] for a plain repository; as opening it.
pub fn key_list(repo: impl Into<RepoRef>) -> Result<KeyListReport> {
    let repo = repo.into();
    let opened = encrypted(&repo)?;
    let passphrase = passphrase_of(&repo)?;
    Ok(KeyListReport {
        location: opened.location(),
        slots: opened.key_slots(Some(&passphrase))?,
    })
}

/// What a key change did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyChangeReport {
    /// The repository.
    pub location: String,
    /// The slot added, if any.
    pub added: Option<String>,
    /// The slot removed, if any.
    pub removed: Option<String>,
}

/// Adds a key slot to the encrypted repository at `repo` (opened with its keys), wrapping its
/// master key with `new_passphrase`. Nothing is re-encrypted.
///
/// # Errors
///
/// As opening it; [`Error::KeyRefused`] for a plain repository.
pub fn key_add(
    repo: impl Into<RepoRef>,
    new_passphrase: &[u8],
    kdf: KdfParams,
    now: Now,
) -> Result<KeyChangeReport> {
    let repo = encrypted(&repo.into())?;
    let id = repo.add_key_slot(new_passphrase, kdf, now.secs)?;
    Ok(KeyChangeReport {
        location: repo.location(),
        added: Some(id),
        removed: None,
    })
}

/// Removes a key slot (id or unique prefix) of the encrypted repository at `repo`; refuses to
/// remove its last intact slot.
///
/// # Errors
///
/// As opening it; [`Error::KeyRefused`] as said.
pub fn key_remove(repo: impl Into<RepoRef>, id: &str) -> Result<KeyChangeReport> {
    let repo = encrypted(&repo.into())?;
    let removed = repo.remove_key_slot(id)?;
    Ok(KeyChangeReport {
        location: repo.location(),
        added: None,
        removed: Some(removed),
    })
}

/// Changes the passphrase: adds a slot for `new_passphrase`, then removes the slot the current
/// passphrase opened. Killed between the two steps, both passphrases open the repository.
///
/// # Errors
///
/// As [`key_add`] and [`key_remove`].
pub fn key_passwd(
    repo: impl Into<RepoRef>,
    new_passphrase: &[u8],
    kdf: KdfParams,
    now: Now,
) -> Result<KeyChangeReport> {
    let repo = repo.into();
    let opened = encrypted(&repo)?;
    let passphrase = passphrase_of(&repo)?;
    let current = opened
        .key_slots(Some(&passphrase))?
        .into_iter()
        .find(|s| s.current)
        .ok_or_else(|| Error::KeyRefused("no key slot opens with the current passphrase".into()))?;
    let added = opened.add_key_slot(new_passphrase, kdf, now.secs)?;
    let removed = opened.remove_key_slot(&current.id)?;
    Ok(KeyChangeReport {
        location: opened.location(),
        added: Some(added),
        removed: Some(removed),
    })
}
