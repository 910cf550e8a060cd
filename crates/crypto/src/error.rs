//! The crate's one error type.

/// Why a key could not be made or opened, or an object could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The passphrase given does not open the key slot (its wrapped master key does not
    /// authenticate under the key derived from it).
    #[error("the passphrase does not open this key slot")]
    WrongPassphrase,
    /// A sealed object or a key slot is damaged, or is not one at all. The detail says what is
    /// wrong with it.
    #[error("damaged: {0}")]
    Damaged(String),
    /// The operating system's random source failed.
    #[error("the operating system's random source failed: {0}")]
    Random(String),
    /// Argon2 parameters that cannot be used.
    #[error("invalid key derivation parameters: {0}")]
    Kdf(String),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
