//! KyroDB's on-disk formats and the encodings of the `kyrodb_backup` repository.
//!
//! PLACEHOLDER: crate doc written when the modules land.

mod error;
pub use error::{Error, Result};

// ---- KyroDB data-directory formats (owned by the format helper) ----

// ---- backup repository encodings (owned by the storage work) ----
mod repo;
pub use repo::*;
