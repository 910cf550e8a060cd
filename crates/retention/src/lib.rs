//! Retention decisions for `kyrodb_backup`: which backups a policy keeps and why.
//!
//! This crate will be a pure function of (backups, policy, now); it reads no clock and touches
//! no storage. It is filled by the retention work (issue 4); until then it exports nothing.
