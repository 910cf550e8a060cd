//! The CLI tests, as one test binary (`cargo test --test it`): each module is one area, named
//! so that `cargo test --test it crash::` (or `faults::`, ...) runs just that area.

mod archive;
mod builtin;
mod cli;
mod concurrency;
mod crash;
mod docs;
mod drill;
mod encrypted;
mod faults;
mod follow;
mod golden;
mod hostile;
mod incremental;
mod live;
mod migrate;
mod output;
mod pitr;
mod prune;
mod s3_repo;
mod s3_support;
mod space;
mod support;
