use std::fmt;

/// Everything that can go wrong while reading or writing a KyroDB file or a repository encoding.
///
/// Messages are lower case, one line, and carry the byte offset where one is known; callers that
/// know the file's name attach it with [`Error::in_file`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The underlying reader or writer failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The file does not start with the magic number of its kind.
    #[error("not a {what}: bad magic {found:#010x} (expected {expected:#010x})")]
    BadMagic {
        /// The kind of file that was expected.
        what: &'static str,
        /// The magic the format requires.
        expected: u32,
        /// The magic found.
        found: u32,
    },
    /// The data ends before the structure it announces.
    #[error("{what} truncated at offset {offset}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Where the data ran out.
        offset: u64,
    },
    /// A stored checksum does not match the bytes it covers.
    #[error("{what} checksum mismatch at offset {offset} (stored {stored}, computed {computed})")]
    Checksum {
        /// What the checksum covers.
        what: &'static str,
        /// Offset of the covered bytes.
        offset: u64,
        /// The stored checksum, as text.
        stored: String,
        /// The checksum of the bytes read, as text.
        computed: String,
    },
    /// The bytes are well framed but do not decode as any known layout.
    #[error("{what} malformed at offset {offset}: {detail}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// Where decoding failed.
        offset: u64,
        /// Why it failed.
        detail: String,
    },
    /// A data directory's MANIFEST cannot be parsed.
    #[error("invalid MANIFEST: {0}")]
    Manifest(String),
    /// A backup manifest of the repository cannot be decoded or fails its checksum.
    #[error("invalid backup manifest: {0}")]
    BackupManifest(String),
    /// A stored chunk cannot be decoded or does not hash to its name.
    #[error("chunk {hash}: {detail}")]
    Chunk {
        /// The chunk's content hash (hex).
        hash: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A requested distance metric contradicts the one a snapshot stores.
    #[error("the snapshot stores the metric {stored}; {requested} contradicts it")]
    MetricConflict {
        /// The metric in the snapshot.
        stored: crate::DistanceMetric,
        /// The metric asked for.
        requested: crate::DistanceMetric,
    },
    /// An error inside a named file.
    #[error("{file}: {source}")]
    InFile {
        /// The file's name.
        file: String,
        /// The error found in it.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// Attaches the name of the file the error was found in (once: an error that already names a
    /// file keeps its name).
    #[must_use]
    pub fn in_file(self, file: impl fmt::Display) -> Self {
        match self {
            e @ Error::InFile { .. } => e,
            e => Error::InFile {
                file: file.to_string(),
                source: Box::new(e),
            },
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
