//! Backup repository encodings.
