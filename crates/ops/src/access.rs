//! Which repository a command acts on, and how an encrypted one is opened.

use std::path::{Path, PathBuf};

use kyrodb_backup_storage::backend::Location;
use kyrodb_backup_storage::{Repository, Unlocker};

use crate::error::{Error, Result};

/// A repository to act on: where it is, and where the passphrase of an encrypted one comes
/// from (asked only when the repository turns out to be encrypted). A path or a [`Location`]
/// converts into one without keys, which opens plain repositories only.
///
/// ```
/// use kyrodb_backup_ops::RepoRef;
///
/// let plain = RepoRef::from(std::path::Path::new("/srv/backups"));
/// let encrypted = RepoRef::from(std::path::Path::new("/srv/vault")).with_passphrase("correct horse");
/// assert_eq!(plain.display(), "/srv/backups");
/// assert!(encrypted.keys.is_some());
/// ```
#[derive(Debug, Clone)]
pub struct RepoRef {
    /// Where it is.
    pub location: Location,
    /// How to open it when it is encrypted.
    pub keys: Option<Unlocker>,
    /// Whether the commands that make a missing repository (create, copy's target, archive)
    /// may make a plain one. A front end that was given a passphrase says no: the operator
    /// meant an encrypted repository, which [`init`](crate::init) makes.
    pub make_plain: bool,
}

impl RepoRef {
    /// The repository at `location`, without keys.
    pub fn new(location: impl Into<Location>) -> Self {
        Self {
            location: location.into(),
            keys: None,
            make_plain: true,
        }
    }

    /// The same repository, opened with `keys` when it is encrypted.
    #[must_use]
    pub fn with_keys(mut self, keys: Unlocker) -> Self {
        self.keys = Some(keys);
        self
    }

    /// The same repository, never made plain when missing (see [`RepoRef::make_plain`]).
    #[must_use]
    pub fn never_made_plain(mut self) -> Self {
        self.make_plain = false;
        self
    }

    /// The same repository, opened with `passphrase` when it is encrypted.
    #[must_use]
    pub fn with_passphrase(self, passphrase: impl AsRef<[u8]>) -> Self {
        self.with_keys(Unlocker::passphrase(passphrase))
    }

    /// How to name it to a person.
    pub fn display(&self) -> String {
        self.location.display()
    }

    /// The directory, for a local repository.
    pub fn as_local(&self) -> Option<&Path> {
        self.location.as_local()
    }

    /// Opens it (it must exist).
    pub(crate) fn open(&self) -> Result<Repository> {
        Ok(Repository::open_at_with(
            &self.location,
            self.keys.as_ref(),
        )?)
    }

    /// Opens it, making a plain one if there is none.
    pub(crate) fn open_or_init(&self) -> Result<Repository> {
        if !self.make_plain {
            return match self.open() {
                Err(Error::NotARepository(_)) => Err(Error::KeyRefused(format!(
                    "{} holds no repository, and a passphrase was given: a plain one is not made where an encrypted one was meant",
                    self.display()
                ))),
                other => other,
            };
        }
        Ok(Repository::open_or_init_at_with(
            &self.location,
            self.keys.as_ref(),
        )?)
    }

    /// Opens it when it exists; otherwise a handle that lists nothing and writes nothing.
    pub(crate) fn open_for_preview(&self) -> Result<Repository> {
        Ok(Repository::open_for_preview_at(
            &self.location,
            self.keys.as_ref(),
        )?)
    }
}

impl PartialEq for RepoRef {
    fn eq(&self, other: &Self) -> bool {
        self.location == other.location
    }
}

impl From<Location> for RepoRef {
    fn from(l: Location) -> Self {
        Self::new(l)
    }
}

impl From<&Location> for RepoRef {
    fn from(l: &Location) -> Self {
        Self::new(l.clone())
    }
}

impl From<&RepoRef> for RepoRef {
    fn from(r: &RepoRef) -> Self {
        r.clone()
    }
}

impl From<PathBuf> for RepoRef {
    fn from(p: PathBuf) -> Self {
        Self::new(p)
    }
}

impl From<&PathBuf> for RepoRef {
    fn from(p: &PathBuf) -> Self {
        Self::new(p.clone())
    }
}

impl From<&Path> for RepoRef {
    fn from(p: &Path) -> Self {
        Self::new(p.to_path_buf())
    }
}
