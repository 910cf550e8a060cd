//! The keys and the sealing of an encrypted `kyrodb_backup` repository.
//!
//! What it is for: a repository's [`MasterKey`] (64 random bytes), stored only inside
//! [`KeySlot`]s that wrap it under a passphrase; the working keys derived from it
//! ([`RepoKeys`]: the [`Sealer`] of objects, the key of chunk ids, the gear table of the
//! chunker); and the sealed-object format, which encrypts and authenticates every object and
//! binds it to its name in the store.
//! What it is not for: storing or reading anything. It is pure: no file or network I/O, no
//! clock (a slot's creation time is an argument), no environment. Its only outside input is the
//! operating system's random source. Choosing which objects are sealed, asking for the
//! passphrase, and where slots live are the storage and CLI crates' business.
//!
//! ```
//! use kyrodb_backup_crypto::{random_id, KdfParams, KeySlot, MasterKey};
//!
//! let master = MasterKey::generate()?;
//! // A real repository uses `KdfParams::default()`; these are cheap for the example.
//! let kdf = KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 };
//! let slot = KeySlot::new(&master, b"correct horse", kdf, random_id()?, 1_764_460_800)?;
//! let stored = slot.to_bytes();
//!
//! // Later: read the slot back and open it with the passphrase.
//! let opened = KeySlot::from_bytes(&stored)?.open(b"correct horse")?;
//! assert_eq!(opened.key_id(), master.key_id());
//!
//! let keys = opened.keys();
//! let sealed = keys.sealer().seal("manifests/b1.json", b"{\"id\":\"b1\"}")?;
//! assert_eq!(keys.sealer().open("manifests/b1.json", &sealed)?, b"{\"id\":\"b1\"}");
//! // Stored under another name, it does not open.
//! assert!(keys.sealer().open("manifests/b2.json", &sealed).is_err());
//! # Ok::<(), kyrodb_backup_crypto::Error>(())
//! ```
//!
//! # Keys
//!
//! Every key below is derived with `blake3::derive_key(context, master)` under its own context
//! string; the contexts are part of the format.
//!
//! | key | context | use |
//! | --- | --- | --- |
//! | key id | `kyrodb_backup 2026-11-30 key id` | its first 16 bytes, as hex, name the master key ([`MasterKey::key_id`]) |
//! | data key | `kyrodb_backup 2026-11-30 data key` | the [`Sealer`]'s key, from which each object's key is derived |
//! | chunk-id key | `kyrodb_backup 2026-11-30 chunk id` | `blake3::keyed_hash` of a chunk, first 16 bytes as a little-endian `u128` ([`RepoKeys::chunk_id`]) |
//! | gear key | `kyrodb_backup 2026-11-30 gear table` | the first 2048 bytes of `blake3::Hasher::new_keyed(gear key).finalize_xof()`, as 256 little-endian `u64` ([`RepoKeys::gear`]) |
//!
//! Key material is wiped from memory when dropped, and no `Debug` form shows any of it.
//!
//! # Sealed objects
//!
//! A sealed object is a 44-byte header ([`HEADER_LEN`]) followed by the sealed segments:
//!
//! | bytes | what |
//! | --- | --- |
//! | 0..8 | magic, `KYROSEAL` ([`is_sealed`] checks it) |
//! | 8 | version, 1 |
//! | 9 | algorithm, 1 = AES-256-GCM |
//! | 10..12 | reserved, zero |
//! | 12..44 | salt: 32 random bytes, fresh for every object |
//! | 44.. | the segments |
//!
//! The object's own key is `blake3::keyed_hash(data key, salt)`, used as an AES-256-GCM key.
//! Every object is sealed under its own random key, so a (key, nonce) pair never repeats, not
//! even across writers that seal at the same time with no coordination (short of two 32-byte
//! random salts colliding).
//!
//! The plaintext is cut into segments of [`SEGMENT`] (64 KiB) bytes, the last one shorter; an
//! empty plaintext is one empty segment. Each segment is sealed on its own and stored as its
//! ciphertext (as long as its plaintext) followed by its 16-byte tag, so segment `i` starts at
//! byte `44 + i * (SEGMENT + 16)`.
//!
//! - The nonce of segment `i` (12 bytes) is `i` as a big-endian `u64`, then a big-endian `u32`
//!   that is 1 for the object's last segment and 0 for the others. Reordered segments, a
//!   truncation (even at a segment boundary, where the new last segment was not sealed as the
//!   last) and appended bytes all fail to authenticate.
//! - The associated data of every segment is the 44 header bytes followed by the UTF-8 bytes of
//!   the object's key in the store, so a changed header fails, and so does an object moved or
//!   copied to another key.
//!
//! So a plaintext of `n` bytes seals to [`sealed_len`]`(n) = 44 + n + 16 * max(1, ceil(n /
//! SEGMENT))` bytes, and [`plain_len`] inverts it (it is `None` for a length no object has).
//! [`Sealer::open`] authenticates every segment before it returns anything.
//! [`Sealer::open_head`] opens only the first bytes of an object from the first
//! `min(`[`head_len`]`(want), sealed length)` bytes of it, given its whole length (which tells
//! which segment is the last). Every failure is [`Error::Damaged`], with a short detail: "not a
//! sealed object", "unsupported sealing version N", "its length fits no sealed object",
//! "segment N does not authenticate (changed, truncated, or moved from another object)".
//!
//! # Key slots
//!
//! A key slot ([`KeySlot::to_bytes`]) is a JSON object, pretty-printed with two-space indents,
//! its fields in this order, followed by a newline:
//!
//! ```json
//! {
//!   "id": "3f0c9a1b2c4d5e6f",
//!   "key_id": "<32 hex digits: the id of the master key it wraps>",
//!   "created": 1764460800,
//!   "kdf": {
//!     "algorithm": "argon2id",
//!     "version": 19,
//!     "memory_kib": 65536,
//!     "iterations": 3,
//!     "parallelism": 4
//!   },
//!   "salt": "<64 hex digits: 32 random bytes>",
//!   "wrapped": "<184 hex digits: nonce, ciphertext, tag>",
//!   "checksum": "<64 hex digits>"
//! }
//! ```
//!
//! - `key_id` is the [`MasterKey::key_id`] of the master key the slot wraps, so whose key a
//!   slot holds can be told without its passphrase (a repository names its key too, and passes
//!   over the slots of another).
//! - `created` is in Unix seconds; the `kdf` parameters are [`KdfParams`].
//! - The wrapping key is Argon2id (version 0x13, 32 bytes of output) of the passphrase with the
//!   salt and the parameters.
//! - `wrapped` is a 12-byte random nonce, then the AES-256-GCM ciphertext of the 64-byte master
//!   key under the wrapping key, then its 16-byte tag. Its associated data is
//!   `"kyrodb_backup key slot\0"`, the id's UTF-8 bytes, the key id's 32 ASCII hex digits,
//!   `created` as a little-endian `u64`, `memory_kib`, `iterations` and `parallelism` as
//!   little-endian `u32`, then the salt: a slot any of whose fields was changed does not open.
//! - `checksum` is the hex blake3 hash of the slot's stored form (newline included) with
//!   `checksum` set to `""`.
//!
//! All hex is lowercase. [`KeySlot::from_bytes`] accepts only what [`KeySlot::to_bytes`] would
//! write, byte for byte, with a matching checksum; [`KeySlot::open`] fails with
//! [`Error::WrongPassphrase`] when the wrap does not authenticate, and with [`Error::Damaged`]
//! when the key it unwraps is not the one `key_id` names.

mod error;
mod hex;
mod keys;
mod seal;
mod slot;

pub use error::{Error, Result};
pub use keys::{random_id, MasterKey, RepoKeys};
pub use seal::{head_len, is_sealed, plain_len, sealed_len, Sealer, HEADER_LEN, SEGMENT};
pub use slot::{KdfParams, KeySlot};

/// A passphrase, wiped from memory when dropped.
pub type Secret = zeroize::Zeroizing<Vec<u8>>;
