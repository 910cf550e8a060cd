//! Key slots: the master key wrapped under a passphrase, and the Argon2id parameters that turn
//! the passphrase into the wrapping key. The format is described in the crate doc.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::keys::{fill_random, MASTER_LEN};
use crate::{hex, Error, MasterKey, Result};

/// The most memory a key derivation may ask for: 4 GiB, in KiB.
const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
/// The key derivation function a slot names.
const KDF_ALGORITHM: &str = "argon2id";
/// Its version (0x13).
const KDF_VERSION: u32 = 19;
/// The bytes of a slot's salt.
const SALT_LEN: usize = 32;
/// The bytes of the wrap's nonce.
const NONCE_LEN: usize = 12;
/// The hex digits of a master key's id ([`MasterKey::key_id`]).
const KEY_ID_DIGITS: usize = 32;
/// The bytes of an AES-GCM tag.
const TAG_LEN: usize = 16;
/// The bytes of a wrapped master key: nonce, ciphertext, tag.
const WRAPPED_LEN: usize = NONCE_LEN + MASTER_LEN + TAG_LEN;
/// The start of the associated data of every wrap.
const AAD_PREFIX: &[u8] = b"kyrodb_backup key slot\0";

/// The cost of turning a passphrase into a wrapping key with Argon2id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB (at least 8 per lane, at most 4 GiB).
    pub memory_kib: u32,
    /// Passes over the memory (at least 1).
    pub iterations: u32,
    /// Lanes (at least 1).
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// The second option RFC 9106 recommends: 64 MiB (65 536 KiB), 3 iterations, 4 lanes.
    fn default() -> Self {
        Self {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 4,
        }
    }
}

impl KdfParams {
    /// Checks that Argon2id can run with these parameters, and that they ask for at most 4 GiB
    /// of memory.
    ///
    /// # Errors
    ///
    /// [`Error::Kdf`] saying what is wrong.
    pub fn validate(&self) -> Result<()> {
        self.argon2().map(|_| ())
    }

    fn argon2(&self) -> Result<argon2::Argon2<'static>> {
        let Self {
            memory_kib,
            iterations,
            parallelism,
        } = *self;
        if memory_kib > MAX_MEMORY_KIB {
            return Err(Error::Kdf(format!(
                "{memory_kib} KiB of memory is more than the {MAX_MEMORY_KIB} KiB (4 GiB) allowed"
            )));
        }
        let params =
            argon2::Params::new(memory_kib, iterations, parallelism, Some(32)).map_err(|e| {
                Error::Kdf(format!(
                    "{e} ({memory_kib} KiB of memory, {iterations} iterations, \
                     {parallelism} lanes)"
                ))
            })?;
        Ok(argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params,
        ))
    }

    /// The 32-byte key Argon2id derives from `passphrase` and `salt`.
    fn derive(&self, passphrase: &[u8], salt: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let mut key = Zeroizing::new([0u8; 32]);
        self.argon2()?
            .hash_password_into(passphrase, salt, &mut key[..])
            .map_err(|e| Error::Kdf(e.to_string()))?;
        Ok(key)
    }
}

/// The repository's master key wrapped under one passphrase.
///
/// A repository may hold several slots, one per passphrase; each opens to the same
/// [`MasterKey`]. The slot's own fields are public to read; changing any of them makes the slot
/// no longer open (they are bound to the wrap). A slot names the key it wraps
/// ([`key_id`](KeySlot::key_id)), so whose key it holds can be told without its passphrase.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySlot {
    /// The slot's name (a [`random_id`](crate::random_id) as a rule).
    pub id: String,
    /// The id of the master key it wraps ([`MasterKey::key_id`]): 32 lowercase hex digits.
    pub key_id: String,
    /// When it was made, in Unix seconds.
    pub created: u64,
    /// The cost of its key derivation.
    pub kdf: KdfParams,
    salt: [u8; SALT_LEN],
    wrapped: [u8; WRAPPED_LEN],
}

impl std::fmt::Debug for KeySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySlot")
            .field("id", &self.id)
            .field("key_id", &self.key_id)
            .field("created", &self.created)
            .field("kdf", &self.kdf)
            .finish_non_exhaustive()
    }
}

/// A slot as stored: the field order is the format's.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotWire {
    id: String,
    key_id: String,
    created: u64,
    kdf: KdfWire,
    salt: String,
    wrapped: String,
    checksum: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfWire {
    algorithm: String,
    version: u32,
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
}

fn damaged(detail: impl Into<String>) -> Error {
    Error::Damaged(detail.into())
}

/// The bytes a lowercase hex field of exactly `N` bytes spells.
fn decode_field<const N: usize>(text: &str, field: &str) -> Result<[u8; N]> {
    let bytes = hex::decode(text).ok_or_else(|| damaged(format!("its {field} is not hex")))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| damaged(format!("its {field} is {} bytes, not {N}", bytes.len())))
}

impl KeySlot {
    /// The master key wrapped under `passphrase`, with a fresh random salt and nonce; the slot
    /// names it by its [`key_id`](MasterKey::key_id).
    ///
    /// # Errors
    ///
    /// [`Error::Kdf`] when `kdf` is not valid ([`KdfParams::validate`]), [`Error::Random`] when
    /// the operating system's random source fails.
    pub fn new(
        master: &MasterKey,
        passphrase: &[u8],
        kdf: KdfParams,
        id: String,
        created: u64,
    ) -> Result<Self> {
        kdf.validate()?;
        let mut salt = [0u8; SALT_LEN];
        fill_random(&mut salt, "a key slot's salt")?;
        let mut wrapped = [0u8; WRAPPED_LEN];
        fill_random(&mut wrapped[..NONCE_LEN], "a key slot's nonce")?;
        let mut slot = Self {
            id,
            key_id: master.key_id(),
            created,
            kdf,
            salt,
            wrapped,
        };
        slot.wrap(master, passphrase)?;
        Ok(slot)
    }

    /// Wraps `master` under `passphrase` into `wrapped`, with the nonce already there and the
    /// slot's other fields as associated data.
    fn wrap(&mut self, master: &MasterKey, passphrase: &[u8]) -> Result<()> {
        let cipher = self.cipher(passphrase)?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&self.wrapped[..NONCE_LEN]);
        let aad = self.aad();
        let body = &mut self.wrapped[NONCE_LEN..NONCE_LEN + MASTER_LEN];
        body.copy_from_slice(master.secret());
        let tag = cipher
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad[..]),
                body,
            )
            .map_err(|_| damaged("the cipher refused to wrap the master key"))?;
        self.wrapped[NONCE_LEN + MASTER_LEN..].copy_from_slice(tag.as_ref());
        Ok(())
    }

    /// The master key, unwrapped with `passphrase`.
    ///
    /// # Errors
    ///
    /// [`Error::WrongPassphrase`] when the wrap does not authenticate: the passphrase is not this
    /// slot's, or the slot was changed. [`Error::Kdf`] when its parameters were changed to ones
    /// that are not valid. [`Error::Damaged`] when the key it wraps is not the one its
    /// [`key_id`](KeySlot::key_id) names (the key id is bound to the wrap, so only a forger
    /// holding the passphrase could make such a slot).
    pub fn open(&self, passphrase: &[u8]) -> Result<MasterKey> {
        let cipher = self.cipher(passphrase)?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&self.wrapped[..NONCE_LEN]);
        let mut buf = Zeroizing::new([0u8; MASTER_LEN + TAG_LEN]);
        buf.copy_from_slice(&self.wrapped[NONCE_LEN..]);
        let plain = cipher
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&self.aad()[..]),
                &mut buf[..],
            )
            .map_err(|_| Error::WrongPassphrase)?;
        let mut master = Zeroizing::new([0u8; MASTER_LEN]);
        master.copy_from_slice(plain);
        let master = MasterKey::from_secret(master);
        if master.key_id() != self.key_id {
            return Err(damaged("the key it wraps is not the one it names"));
        }
        Ok(master)
    }

    /// The slot as stored: pretty-printed JSON (two-space indents, fields in the format's order)
    /// and a trailing newline, with its checksum.
    pub fn to_bytes(&self) -> Vec<u8> {
        let sum = blake3::hash(&self.serialize(String::new()));
        self.serialize(hex::encode(sum.as_bytes()))
    }

    /// The slot stored as `bytes`.
    ///
    /// # Errors
    ///
    /// [`Error::Damaged`] when they are not a key slot's JSON, name a key derivation other than
    /// Argon2id version 19 or parameters that are not valid, hold a field that is not lowercase
    /// hex of the right length (a `key_id` of other than 32 lowercase hex digits included), are
    /// not in the exact form [`KeySlot::to_bytes`] writes, or their checksum does not match.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let wire: SlotWire =
            serde_json::from_slice(bytes).map_err(|e| damaged(format!("not a key slot: {e}")))?;
        if wire.kdf.algorithm != KDF_ALGORITHM || wire.kdf.version != KDF_VERSION {
            return Err(damaged(format!(
                "unsupported key derivation {:?} version {}",
                wire.kdf.algorithm, wire.kdf.version
            )));
        }
        let kdf = KdfParams {
            memory_kib: wire.kdf.memory_kib,
            iterations: wire.kdf.iterations,
            parallelism: wire.kdf.parallelism,
        };
        kdf.validate().map_err(|e| damaged(e.to_string()))?;
        if wire.key_id.len() != KEY_ID_DIGITS
            || !wire
                .key_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(damaged(format!(
                "its key id is not {KEY_ID_DIGITS} lowercase hex digits"
            )));
        }
        let salt = decode_field::<SALT_LEN>(&wire.salt, "salt")?;
        let wrapped = decode_field::<WRAPPED_LEN>(&wire.wrapped, "wrapped key")?;
        let checksum = decode_field::<32>(&wire.checksum, "checksum")?;
        let slot = Self {
            id: wire.id,
            key_id: wire.key_id,
            created: wire.created,
            kdf,
            salt,
            wrapped,
        };
        if slot.serialize(wire.checksum) != bytes {
            return Err(damaged("not in its canonical form"));
        }
        if blake3::hash(&slot.serialize(String::new())) != checksum {
            return Err(damaged("checksum does not match"));
        }
        Ok(slot)
    }

    /// The stored form with `checksum` in its checksum field.
    fn serialize(&self, checksum: String) -> Vec<u8> {
        let wire = SlotWire {
            id: self.id.clone(),
            key_id: self.key_id.clone(),
            created: self.created,
            kdf: KdfWire {
                algorithm: KDF_ALGORITHM.to_string(),
                version: KDF_VERSION,
                memory_kib: self.kdf.memory_kib,
                iterations: self.kdf.iterations,
                parallelism: self.kdf.parallelism,
            },
            salt: hex::encode(&self.salt),
            wrapped: hex::encode(&self.wrapped),
            checksum,
        };
        let mut out = serde_json::to_vec_pretty(&wire).expect("strings and numbers serialize");
        out.push(b'\n');
        out
    }

    /// The associated data of the wrap: everything else the slot says.
    fn aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(
            AAD_PREFIX.len() + self.id.len() + self.key_id.len() + 8 + 12 + SALT_LEN,
        );
        aad.extend_from_slice(AAD_PREFIX);
        aad.extend_from_slice(self.id.as_bytes());
        aad.extend_from_slice(self.key_id.as_bytes());
        aad.extend_from_slice(&self.created.to_le_bytes());
        aad.extend_from_slice(&self.kdf.memory_kib.to_le_bytes());
        aad.extend_from_slice(&self.kdf.iterations.to_le_bytes());
        aad.extend_from_slice(&self.kdf.parallelism.to_le_bytes());
        aad.extend_from_slice(&self.salt);
        aad
    }

    /// The wrapping cipher: AES-256-GCM under the key Argon2id derives from `passphrase`.
    fn cipher(&self, passphrase: &[u8]) -> Result<LessSafeKey> {
        let key = self.kdf.derive(passphrase, &self.salt)?;
        let unbound = UnboundKey::new(&AES_256_GCM, &key[..])
            .map_err(|_| damaged("the cipher refused the wrapping key"))?;
        Ok(LessSafeKey::new(unbound))
    }
}

#[cfg(test)]
mod tests {
    use super::{KdfParams, KeySlot};
    use crate::{Error, MasterKey};

    const CHEAP: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    fn slot(master: &MasterKey, passphrase: &[u8]) -> KeySlot {
        KeySlot::new(
            master,
            passphrase,
            CHEAP,
            "0123456789abcdef".into(),
            1_764_460_800,
        )
        .unwrap()
    }

    fn damaged_detail(result: crate::Result<KeySlot>) -> String {
        match result {
            Err(Error::Damaged(detail)) => detail,
            other => panic!("expected Damaged, got {other:?}"),
        }
    }

    /// `value` stored with a checksum made to match, as a careful forger would.
    fn rechecksummed(mut value: serde_json::Value) -> Vec<u8> {
        value["checksum"] = "".into();
        let mut bytes = serde_json::to_vec_pretty(&value).unwrap();
        bytes.push(b'\n');
        value["checksum"] = crate::hex::encode(blake3::hash(&bytes).as_bytes()).into();
        let mut bytes = serde_json::to_vec_pretty(&value).unwrap();
        bytes.push(b'\n');
        bytes
    }

    fn as_value(slot: &KeySlot) -> serde_json::Value {
        serde_json::from_slice(&slot.to_bytes()).unwrap()
    }

    #[test]
    fn opens_with_its_passphrase() {
        let master = MasterKey::generate().unwrap();
        let slot = slot(&master, b"correct horse");
        assert_eq!(
            slot.open(b"correct horse").unwrap().key_id(),
            master.key_id()
        );
        assert_eq!(
            slot.open(b"correct horse").unwrap().secret(),
            master.secret()
        );
    }

    #[test]
    fn a_wrong_passphrase_does_not_open_it() {
        let master = MasterKey::generate().unwrap();
        let slot = slot(&master, b"correct horse");
        for wrong in [
            &b"correct hors"[..],
            b"correct horsE",
            b"",
            b"correct horse ",
        ] {
            assert!(matches!(slot.open(wrong), Err(Error::WrongPassphrase)));
        }
        let empty = self::slot(&master, b"");
        assert_eq!(empty.open(b"").unwrap().key_id(), master.key_id());
        assert!(matches!(empty.open(b"x"), Err(Error::WrongPassphrase)));
    }

    #[test]
    fn two_passphrases_open_the_same_master() {
        let master = MasterKey::generate().unwrap();
        let a = slot(&master, b"alpha");
        let b = slot(&master, b"bravo");
        assert_ne!(a.to_bytes(), b.to_bytes());
        let from_a = a.open(b"alpha").unwrap();
        let from_b = b.open(b"bravo").unwrap();
        assert_eq!(from_a.key_id(), master.key_id());
        assert_eq!(from_a.key_id(), from_b.key_id());
        assert!(matches!(a.open(b"bravo"), Err(Error::WrongPassphrase)));
        // The same passphrase twice still gives two different slots (fresh salt and nonce).
        assert_ne!(slot(&master, b"alpha").to_bytes(), a.to_bytes());
    }

    #[test]
    fn stored_form_round_trips_byte_for_byte() {
        let master = MasterKey::generate().unwrap();
        let slot = slot(&master, b"pass");
        let bytes = slot.to_bytes();
        let back = KeySlot::from_bytes(&bytes).unwrap();
        assert_eq!(back, slot);
        assert_eq!(back.to_bytes(), bytes);
        assert_eq!(back.open(b"pass").unwrap().key_id(), master.key_id());
    }

    #[test]
    fn stored_form_is_as_documented() {
        let master = MasterKey::generate().unwrap();
        let slot = slot(&master, b"pass");
        let text = String::from_utf8(slot.to_bytes()).unwrap();
        assert!(text.ends_with("}\n"));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["id", "key_id", "created", "kdf", "salt", "wrapped", "checksum"]
        );
        let kdf: Vec<&str> = value["kdf"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            kdf,
            [
                "algorithm",
                "version",
                "memory_kib",
                "iterations",
                "parallelism"
            ]
        );
        assert_eq!(value["id"], "0123456789abcdef");
        assert_eq!(value["key_id"], master.key_id().as_str());
        assert_eq!(value["created"], 1_764_460_800);
        assert_eq!(value["kdf"]["algorithm"], "argon2id");
        assert_eq!(value["kdf"]["version"], 19);
        assert_eq!(value["kdf"]["memory_kib"], 64);
        assert_eq!(value["salt"].as_str().unwrap().len(), 64);
        assert_eq!(value["wrapped"].as_str().unwrap().len(), 2 * (12 + 64 + 16));
        assert_eq!(value["checksum"].as_str().unwrap().len(), 64);
        assert!(text.starts_with(&format!(
            "{{\n  \"id\": \"0123456789abcdef\",\n  \"key_id\": \"{}\",\n  \"created\": 1764460800,\n",
            master.key_id()
        )));
        // The checksum is blake3 of the same bytes with an empty checksum.
        assert_eq!(rechecksummed(value), slot.to_bytes());
    }

    #[test]
    fn it_names_the_key_it_wraps() {
        let master = MasterKey::generate().unwrap();
        let slot = slot(&master, b"pass");
        assert_eq!(slot.key_id, master.key_id());
        let back = KeySlot::from_bytes(&slot.to_bytes()).unwrap();
        assert_eq!(back.key_id, master.key_id());
        assert_eq!(back.open(b"pass").unwrap().key_id(), back.key_id);
        // Slots of two masters name two keys, even under the same passphrase and id.
        let other = MasterKey::generate().unwrap();
        assert_ne!(self::slot(&other, b"pass").key_id, slot.key_id);
        assert!(format!("{slot:?}").contains(&master.key_id()));
    }

    #[test]
    fn a_slot_renamed_to_another_key_does_not_open() {
        let master = MasterKey::generate().unwrap();
        let slot = slot(&master, b"pass");
        let other = MasterKey::generate().unwrap().key_id();
        // Re-checksummed, as a careful forger would: it reads, names the other key, and the
        // wrap no longer authenticates (the key id is in its associated data).
        let mut changed = as_value(&slot);
        changed["key_id"] = other.clone().into();
        let read = KeySlot::from_bytes(&rechecksummed(changed)).unwrap();
        assert_eq!(read.key_id, other);
        assert!(matches!(read.open(b"pass"), Err(Error::WrongPassphrase)));
        // Through the public field too.
        let mut changed = slot.clone();
        changed.key_id = other;
        let read = KeySlot::from_bytes(&changed.to_bytes()).unwrap();
        assert!(matches!(read.open(b"pass"), Err(Error::WrongPassphrase)));
        // A wrap that authenticates but holds another key than the one named (only a forger
        // with the passphrase makes one) is damage.
        let mut lying = slot.clone();
        lying.key_id = MasterKey::generate().unwrap().key_id();
        lying.wrap(&master, b"pass").unwrap();
        let read = KeySlot::from_bytes(&lying.to_bytes()).unwrap();
        match read.open(b"pass") {
            Err(Error::Damaged(detail)) => {
                assert_eq!(detail, "the key it wraps is not the one it names");
            }
            other => panic!("expected Damaged, got {other:?}"),
        }
    }

    #[test]
    fn every_changed_byte_is_refused() {
        let master = MasterKey::generate().unwrap();
        let slot = slot(&master, b"pass");
        let bytes = slot.to_bytes();
        let mut tried = 0;
        for i in 0..bytes.len() {
            for replacement in [bytes[i] ^ 0x01, bytes[i] ^ 0x20, b' ', b'0', b'"', b'\n'] {
                if replacement == bytes[i] {
                    continue;
                }
                let mut changed = bytes.clone();
                changed[i] = replacement;
                tried += 1;
                match KeySlot::from_bytes(&changed) {
                    Err(Error::Damaged(_)) => {}
                    Err(other) => panic!("byte {i} to {replacement}: {other:?}"),
                    Ok(read) => assert!(
                        read.open(b"pass").is_err(),
                        "byte {i} changed to {replacement} still opens"
                    ),
                }
            }
        }
        assert!(tried > 5 * bytes.len());
        // Removing or adding a byte as well.
        for i in 0..bytes.len() {
            let mut shorter = bytes.clone();
            shorter.remove(i);
            assert!(KeySlot::from_bytes(&shorter).is_err(), "byte {i} removed");
            let mut longer = bytes.clone();
            longer.insert(i, b' ');
            assert!(KeySlot::from_bytes(&longer).is_err(), "space at {i}");
        }
    }

    #[test]
    fn consistent_changes_do_not_open() {
        let master = MasterKey::generate().unwrap();
        let slot = slot(&master, b"pass");
        let base = as_value(&slot);
        let other_key_id = MasterKey::generate().unwrap().key_id();
        let edits: [(&str, &str, serde_json::Value); 7] = [
            ("kdf", "memory_kib", 72.into()),
            ("kdf", "iterations", 2.into()),
            ("kdf", "parallelism", 2.into()),
            ("", "id", "0123456789abcdee".into()),
            ("", "key_id", other_key_id.into()),
            ("", "created", 1_764_460_801.into()),
            ("", "salt", "00".repeat(32).into()),
        ];
        for (outer, field, value) in edits {
            let mut changed = base.clone();
            if outer.is_empty() {
                changed[field] = value;
            } else {
                changed[outer][field] = value;
            }
            let read = KeySlot::from_bytes(&rechecksummed(changed)).unwrap();
            assert!(
                matches!(read.open(b"pass"), Err(Error::WrongPassphrase)),
                "{field} changed"
            );
        }
        // Through the public fields too.
        let mut changed = slot.clone();
        changed.kdf.iterations = 2;
        let read = KeySlot::from_bytes(&changed.to_bytes()).unwrap();
        assert!(matches!(read.open(b"pass"), Err(Error::WrongPassphrase)));
        // And a wrapped key from another slot of the same master does not fit this one.
        let other = self::slot(&master, b"pass");
        let mut spliced = base.clone();
        spliced["wrapped"] = as_value(&other)["wrapped"].clone();
        let read = KeySlot::from_bytes(&rechecksummed(spliced)).unwrap();
        assert!(matches!(read.open(b"pass"), Err(Error::WrongPassphrase)));
    }

    #[test]
    fn malformed_slots_are_refused() {
        let master = MasterKey::generate().unwrap();
        let slot = slot(&master, b"pass");
        let bytes = slot.to_bytes();
        let base = as_value(&slot);

        assert!(damaged_detail(KeySlot::from_bytes(b"")).starts_with("not a key slot"));
        assert!(damaged_detail(KeySlot::from_bytes(b"[1]")).starts_with("not a key slot"));

        let mut compact = serde_json::to_vec(&base).unwrap();
        compact.push(b'\n');
        assert_eq!(
            damaged_detail(KeySlot::from_bytes(&compact)),
            "not in its canonical form"
        );
        assert_eq!(
            damaged_detail(KeySlot::from_bytes(&bytes[..bytes.len() - 1])),
            "not in its canonical form"
        );
        let upper = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("\"0123456789abcdef\"", "\"0123456789\\u0061bcdef\"");
        assert_eq!(
            damaged_detail(KeySlot::from_bytes(upper.as_bytes())),
            "not in its canonical form"
        );

        let mut wrong_sum = base.clone();
        wrong_sum["checksum"] = "00".repeat(32).into();
        let mut wrong_sum = serde_json::to_vec_pretty(&wrong_sum).unwrap();
        wrong_sum.push(b'\n');
        assert_eq!(
            damaged_detail(KeySlot::from_bytes(&wrong_sum)),
            "checksum does not match"
        );

        let mut short_sum = base.clone();
        short_sum["checksum"] = "ab".into();
        let mut short_sum = serde_json::to_vec_pretty(&short_sum).unwrap();
        short_sum.push(b'\n');
        assert_eq!(
            damaged_detail(KeySlot::from_bytes(&short_sum)),
            "its checksum is 1 bytes, not 32"
        );

        let cases: [(&str, &str, serde_json::Value, &str); 8] = [
            (
                "kdf",
                "algorithm",
                "argon2i".into(),
                "unsupported key derivation",
            ),
            ("kdf", "version", 16.into(), "unsupported key derivation"),
            (
                "kdf",
                "iterations",
                0.into(),
                "invalid key derivation parameters",
            ),
            (
                "kdf",
                "parallelism",
                0.into(),
                "invalid key derivation parameters",
            ),
            (
                "kdf",
                "memory_kib",
                4.into(),
                "invalid key derivation parameters",
            ),
            ("", "salt", "AB".repeat(32).into(), "its salt is not hex"),
            (
                "",
                "salt",
                "ab".repeat(31).into(),
                "its salt is 31 bytes, not 32",
            ),
            (
                "",
                "wrapped",
                "ab".repeat(91).into(),
                "its wrapped key is 91 bytes, not 92",
            ),
        ];
        for (outer, field, value, expect) in cases {
            let mut changed = base.clone();
            if outer.is_empty() {
                changed[field] = value;
            } else {
                changed[outer][field] = value;
            }
            let detail = damaged_detail(KeySlot::from_bytes(&rechecksummed(changed)));
            assert!(detail.starts_with(expect), "{field}: {detail}");
        }

        let mut extra = base.clone();
        extra["note"] = "hello".into();
        assert!(damaged_detail(KeySlot::from_bytes(&rechecksummed(extra)))
            .starts_with("not a key slot"));
        let mut missing = base;
        missing.as_object_mut().unwrap().remove("created");
        assert!(damaged_detail(KeySlot::from_bytes(&rechecksummed(missing)))
            .starts_with("not a key slot"));
    }

    #[test]
    fn a_key_id_not_32_lowercase_hex_digits_is_refused() {
        let master = MasterKey::generate().unwrap();
        let base = as_value(&slot(&master, b"pass"));
        for bad in [
            "AB".repeat(16),
            "gh".repeat(16),
            "ab".repeat(15),
            "ab".repeat(17),
            format!("{}A", &master.key_id()[..31]),
            String::new(),
        ] {
            let mut changed = base.clone();
            changed["key_id"] = bad.clone().into();
            assert_eq!(
                damaged_detail(KeySlot::from_bytes(&rechecksummed(changed))),
                "its key id is not 32 lowercase hex digits",
                "{bad:?}"
            );
        }
        let mut missing = base;
        missing.as_object_mut().unwrap().remove("key_id");
        assert!(damaged_detail(KeySlot::from_bytes(&rechecksummed(missing)))
            .starts_with("not a key slot"));
    }

    #[test]
    fn default_params_are_rfc_9106s_second_option() {
        let params = KdfParams::default();
        assert_eq!(
            params,
            KdfParams {
                memory_kib: 65_536,
                iterations: 3,
                parallelism: 4
            }
        );
        params.validate().unwrap();
        CHEAP.validate().unwrap();
    }

    #[test]
    fn invalid_params_are_refused() {
        let kdf_err = |memory_kib, iterations, parallelism| {
            matches!(
                KdfParams {
                    memory_kib,
                    iterations,
                    parallelism
                }
                .validate(),
                Err(Error::Kdf(_))
            )
        };
        assert!(kdf_err(4 * 1024 * 1024 + 1, 1, 1));
        assert!(kdf_err(u32::MAX, 1, 1));
        assert!(kdf_err(64, 0, 1));
        assert!(kdf_err(64, 1, 0));
        assert!(kdf_err(64, 1, 9)); // less than 8 KiB a lane
        assert!(kdf_err(7, 1, 1));
        assert!(!kdf_err(4 * 1024 * 1024, 1, 1));
        assert!(!kdf_err(8, 1, 1));
        // A slot is never made with them.
        let master = MasterKey::generate().unwrap();
        let bad = KdfParams {
            memory_kib: 64,
            iterations: 0,
            parallelism: 1,
        };
        assert!(matches!(
            KeySlot::new(&master, b"pass", bad, "x".into(), 0),
            Err(Error::Kdf(_))
        ));
    }

    #[test]
    fn kdf_params_serialize_by_name() {
        let json = serde_json::to_string(&CHEAP).unwrap();
        assert_eq!(json, r#"{"memory_kib":64,"iterations":1,"parallelism":1}"#);
        assert_eq!(serde_json::from_str::<KdfParams>(&json).unwrap(), CHEAP);
    }
}
