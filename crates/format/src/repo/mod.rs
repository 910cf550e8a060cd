//! The encodings of the `kyrodb_backup` repository: chunk files, backup manifests and the
//! snapshot id lists incrementals count from. Each carries its own checksum, so a repository
//! copied anywhere can be checked without other state.

mod archive;
mod encoding;
pub(crate) mod id_list;

pub use archive::{
    decode_piece, encode_piece, piece_frames, BaseName, Piece, PieceFrame, PieceName, TimelineId,
    MAX_PIECE_SIZE,
};
pub use encoding::{
    chunk_header, decode_chunk, decode_chunk_with, decode_manifest, encode_chunk, encode_manifest,
    is_backup_id, manifest_checksum, stored_chunk_payload, BackupManifest, BackupType, ChunkRef,
    ContentHash, EncodedChunk, FileEntry, FileKind, GoldenQueries, SkippedFile, SnapshotIds,
    SnapshotSummary, SourceStamp, WalIndex, WalSummary, CHUNK_HEADER_LEN, GOLDEN_MANIFEST_VERSION,
    MANIFEST_VERSION, MAX_CHUNK_SIZE, MAX_MANIFEST_SIZE, REPOSITORY_VERSION,
};
pub use id_list::{read_id_list, recover_from_snapshot_ids, SnapshotIdRecorder, MAX_ID_LIST_BYTES};
