//! The master key, the working keys derived from it, and the OS random source.

use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::seal::Sealer;
use crate::{hex, Error, Result};

/// The length of a master key in bytes.
pub(crate) const MASTER_LEN: usize = 64;

/// The `blake3::derive_key` contexts. Changing any of them makes every existing repository
/// unreadable: they are part of the format.
const KEY_ID_CONTEXT: &str = "kyrodb_backup 2026-11-30 key id";
const DATA_KEY_CONTEXT: &str = "kyrodb_backup 2026-11-30 data key";
const CHUNK_ID_CONTEXT: &str = "kyrodb_backup 2026-11-30 chunk id";
const GEAR_CONTEXT: &str = "kyrodb_backup 2026-11-30 gear table";

/// Fills `buf` from the operating system's random source; `what` names what the bytes are for.
pub(crate) fn fill_random(buf: &mut [u8], what: &str) -> Result<()> {
    SystemRandom::new()
        .fill(buf)
        .map_err(|_| Error::Random(format!("no random bytes for {what}")))
}

/// A fresh random id: 16 lowercase hex characters (8 random bytes), as key slots are named.
///
/// # Errors
///
/// [`Error::Random`] when the operating system's random source fails.
pub fn random_id() -> Result<String> {
    let mut bytes = [0u8; 8];
    fill_random(&mut bytes, "an id")?;
    Ok(hex::encode(&bytes))
}

/// The root secret of an encrypted repository: 64 random bytes, wiped from memory when
/// dropped.
///
/// It is only ever stored wrapped in a [`KeySlot`](crate::KeySlot); every key that touches data
/// is derived from it by [`MasterKey::keys`]. Its [`Debug`] form shows only its
/// [`key_id`](MasterKey::key_id).
pub struct MasterKey(Zeroizing<[u8; MASTER_LEN]>);

impl MasterKey {
    /// A new master key from the operating system's random source.
    ///
    /// # Errors
    ///
    /// [`Error::Random`] when the random source fails.
    pub fn generate() -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; MASTER_LEN]);
        fill_random(&mut bytes[..], "a master key")?;
        Ok(Self(bytes))
    }

    /// The master key made of `bytes` (an opened key slot's, or a test's).
    pub(crate) fn from_secret(bytes: Zeroizing<[u8; MASTER_LEN]>) -> Self {
        Self(bytes)
    }

    /// A master key of fixed bytes, for tests that pin derived values.
    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: [u8; MASTER_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret bytes, for wrapping them in a key slot.
    pub(crate) fn secret(&self) -> &[u8; MASTER_LEN] {
        &self.0
    }

    /// The key's public name: 32 lowercase hex characters, the first 16 bytes of
    /// `blake3::derive_key("kyrodb_backup 2026-11-30 key id", master)`.
    ///
    /// It tells which master key a repository or a key slot belongs to, and reveals nothing of
    /// the key itself.
    pub fn key_id(&self) -> String {
        let derived = Zeroizing::new(blake3::derive_key(KEY_ID_CONTEXT, &self.0[..]));
        hex::encode(&derived[..16])
    }

    /// The working keys derived from this master key.
    pub fn keys(&self) -> RepoKeys {
        let data_key = Zeroizing::new(blake3::derive_key(DATA_KEY_CONTEXT, &self.0[..]));
        let chunk_key = Zeroizing::new(blake3::derive_key(CHUNK_ID_CONTEXT, &self.0[..]));
        let gear_key = Zeroizing::new(blake3::derive_key(GEAR_CONTEXT, &self.0[..]));

        let mut stream = Zeroizing::new([0u8; 256 * 8]);
        blake3::Hasher::new_keyed(&gear_key)
            .finalize_xof()
            .fill(&mut stream[..]);
        let mut gear = Box::new(Zeroizing::new([0u64; 256]));
        for (entry, bytes) in gear.iter_mut().zip(stream.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(bytes);
            *entry = u64::from_le_bytes(word);
        }

        RepoKeys {
            sealer: Sealer::new(data_key),
            chunk_key,
            gear,
        }
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.key_id())
    }
}

/// The working keys of a repository, derived from its [`MasterKey`] by
/// `blake3::derive_key` under a distinct context each: the [`Sealer`] of its objects, the key of
/// its chunk ids, and the gear table of its content-defined chunker. All are wiped from memory
/// when dropped; the [`Debug`] form shows none of them.
#[derive(Clone)]
pub struct RepoKeys {
    sealer: Sealer,
    chunk_key: Zeroizing<[u8; 32]>,
    gear: Box<Zeroizing<[u64; 256]>>,
}

impl RepoKeys {
    /// The sealer of the repository's objects.
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// The id of a chunk of plaintext: the first 16 bytes of its blake3 keyed hash under the
    /// chunk-id key, read as a little-endian `u128`.
    ///
    /// Keyed, so the ids in a repository tell nothing about its contents to someone without the
    /// key (no one can test whether a known file is stored by hashing it).
    pub fn chunk_id(&self, plain: &[u8]) -> u128 {
        let hash = blake3::keyed_hash(&self.chunk_key, plain);
        let mut first = [0u8; 16];
        first.copy_from_slice(&hash.as_bytes()[..16]);
        u128::from_le_bytes(first)
    }

    /// The 256 random `u64` of a keyed content-defined chunker (a gear hash), read as
    /// little-endian words from the blake3 output stream keyed by the gear key.
    ///
    /// Keyed, so the chunk boundaries (and so the chunk sizes an observer sees) depend on the
    /// key as well as on the data.
    pub fn gear(&self) -> &[u64; 256] {
        &self.gear
    }
}

impl std::fmt::Debug for RepoKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoKeys").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::{random_id, MasterKey};

    fn fixed(byte: u8) -> MasterKey {
        MasterKey::from_bytes([byte; 64])
    }

    fn is_lower_hex(text: &str) -> bool {
        text.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    #[test]
    fn key_id_is_pinned_for_a_fixed_master() {
        // Pinned: a change here means existing repositories no longer recognise their keys.
        let id = fixed(7).key_id();
        assert_eq!(id, fixed(7).key_id());
        assert_eq!(id.len(), 32);
        assert!(is_lower_hex(&id));
        let expected = blake3::derive_key("kyrodb_backup 2026-11-30 key id", &[7u8; 64]);
        assert_eq!(id, crate::hex::encode(&expected[..16]));
        assert_eq!(id, PINNED_KEY_ID);
    }

    const PINNED_KEY_ID: &str = "243943c6081b97a6744336ab93f6c2f0";

    #[test]
    fn key_ids_differ_across_masters() {
        assert_ne!(fixed(7).key_id(), fixed(8).key_id());
        let a = MasterKey::generate().unwrap();
        let b = MasterKey::generate().unwrap();
        assert_ne!(a.key_id(), b.key_id());
        assert_ne!(a.secret(), b.secret());
    }

    #[test]
    fn debug_shows_only_the_key_id() {
        let master = fixed(7);
        assert_eq!(
            format!("{master:?}"),
            format!("MasterKey({})", master.key_id())
        );
        assert_eq!(format!("{:?}", master.keys()), "RepoKeys { .. }");
        assert_eq!(format!("{:?}", master.keys().sealer()), "Sealer { .. }");
    }

    #[test]
    fn chunk_ids_are_keyed_and_stable() {
        let a = fixed(7).keys();
        let b = fixed(8).keys();
        let data = b"the same bytes in two repositories";
        assert_eq!(a.chunk_id(data), fixed(7).keys().chunk_id(data));
        assert_eq!(a.chunk_id(data), a.clone().chunk_id(data));
        assert_ne!(a.chunk_id(data), b.chunk_id(data));
        assert_ne!(a.chunk_id(data), a.chunk_id(b"other bytes"));
        assert_ne!(a.chunk_id(b""), b.chunk_id(b""));
        // Little-endian first 16 bytes of the keyed hash, pinned.
        let key = blake3::derive_key("kyrodb_backup 2026-11-30 chunk id", &[7u8; 64]);
        let hash = blake3::keyed_hash(&key, data);
        let expected = u128::from_le_bytes(hash.as_bytes()[..16].try_into().unwrap());
        assert_eq!(a.chunk_id(data), expected);
        assert_eq!(a.chunk_id(data), PINNED_CHUNK_ID);
    }

    const PINNED_CHUNK_ID: u128 = 49_682_825_219_564_601_602_324_365_301_348_156_565;

    #[test]
    fn gear_tables_are_keyed() {
        let a = fixed(7).keys();
        let b = fixed(8).keys();
        assert_eq!(a.gear(), fixed(7).keys().gear());
        assert_ne!(a.gear(), b.gear());
        // Random-looking: no two entries equal, and not all zero.
        let mut sorted = a.gear().to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
        // The first word is the first 8 bytes of the keyed output stream.
        let key = blake3::derive_key("kyrodb_backup 2026-11-30 gear table", &[7u8; 64]);
        let mut first = [0u8; 8];
        blake3::Hasher::new_keyed(&key)
            .finalize_xof()
            .fill(&mut first);
        assert_eq!(a.gear()[0], u64::from_le_bytes(first));
        assert_eq!(a.gear()[0], PINNED_GEAR_0);
    }

    const PINNED_GEAR_0: u64 = 1_998_830_815_287_486_444;

    #[test]
    fn the_working_keys_are_distinct() {
        let keys = fixed(7).keys();
        let data_key = keys.sealer().data_key();
        assert_ne!(&data_key[..], &keys.chunk_key[..]);
        let gear_bytes: Vec<u8> = keys.gear()[..4]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        assert_ne!(&data_key[..], &gear_bytes[..]);
    }

    #[test]
    fn random_ids_are_16_hex_and_differ() {
        let a = random_id().unwrap();
        let b = random_id().unwrap();
        assert_eq!(a.len(), 16);
        assert!(is_lower_hex(&a));
        assert_ne!(a, b);
    }
}
