//! Incremental chains and point-in-time resolution for `kyrodb_backup`.
//!
//! This crate will decide, from the backups of a chain and a target second, which captured
//! bytes rebuild the data directory's state at that second, or prove that none can. It is
//! filled by the incremental-chain work (issue 3); until then it exports nothing, so nothing
//! can depend on behaviour it does not have.
