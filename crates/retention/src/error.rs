//! The crate's one error type.

/// Why a retention policy cannot be used.
///
/// [`plan`](crate::plan) itself never fails: every policy, including one that keeps nothing but
/// the newest backup, is valid there. The error comes from reading a policy written as text
/// (`RetentionPolicy::from_str`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A policy written as text could not be read.
    #[error("invalid policy: {0}")]
    InvalidPolicy(String),
}
