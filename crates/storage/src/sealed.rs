//! The objects of an encrypted repository: a [`Backend`] that seals every object on its way in
//! and opens (authenticates, then decrypts) it on its way out, so the code above it reads and
//! writes plaintext and no plaintext reaches the store.
//!
//! Two kinds of object stay as they are: the repository's marker (it says the repository is
//! encrypted, and names its key's id) and the key slots under `keys/` (each holds the master key
//! wrapped by a passphrase). Everything else (manifests, chunks, leases, the archive's pieces,
//! bases and heartbeats) is sealed, each object under its own key and bound to its name.

use std::sync::Arc;

use kyrodb_backup_backend::{Backend, Entry, Error, Result, Written};
use kyrodb_backup_crypto::{head_len, plain_len, sealed_len, Sealer};

/// The folder of the key slots.
pub(crate) const KEYS_DIR: &str = "keys";

/// A backend whose objects are sealed (see the module doc).
pub(crate) struct SealedBackend {
    inner: Arc<dyn Backend>,
    sealer: Sealer,
    /// The marker's key, which is stored as it is.
    marker: &'static str,
}

impl std::fmt::Debug for SealedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedBackend")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl SealedBackend {
    pub(crate) fn new(inner: Arc<dyn Backend>, sealer: Sealer, marker: &'static str) -> Self {
        Self {
            inner,
            sealer,
            marker,
        }
    }

    /// Whether an object is stored as it is.
    fn plain(&self, key: &str) -> bool {
        key == self.marker
            || key
                .strip_prefix(KEYS_DIR)
                .is_some_and(|rest| rest.starts_with('/'))
    }

    fn damaged(&self, key: &str, e: &kyrodb_backup_crypto::Error) -> Error {
        let detail = match e {
            kyrodb_backup_crypto::Error::Damaged(d) => d.clone(),
            other => other.to_string(),
        };
        Error::Damaged {
            location: self.inner.location(),
            key: key.to_string(),
            detail,
        }
    }

    fn seal(&self, key: &str, bytes: &[u8]) -> Result<Vec<u8>> {
        self.sealer
            .seal(key, bytes)
            .map_err(|e| Error::Config(format!("cannot seal {key}: {e}")))
    }

    /// An entry with the size of its plaintext (0 for a size no sealed object has: such an
    /// object is damaged, and every size check above fails on it).
    fn entry(&self, mut e: Entry) -> Entry {
        if !self.plain(&e.key) {
            e.size = plain_len(e.size).unwrap_or(0);
        }
        e
    }
}

impl Backend for SealedBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn local_root(&self) -> Option<&std::path::Path> {
        self.inner.local_root()
    }

    fn read(&self, key: &str, limit: u64) -> Result<Vec<u8>> {
        if self.plain(key) {
            return self.inner.read(key, limit);
        }
        let sealed = self.inner.read(key, sealed_len(limit))?;
        let plain = self
            .sealer
            .open_owned(key, sealed)
            .map_err(|e| self.damaged(key, &e))?;
        if plain.len() as u64 > limit {
            return Err(Error::Damaged {
                location: self.inner.location(),
                key: key.to_string(),
                detail: format!("larger than the {limit} bytes an object of its kind may be"),
            });
        }
        Ok(plain)
    }

    fn read_head(&self, key: &str, len: u64) -> Result<(Vec<u8>, u64)> {
        if self.plain(key) {
            return self.inner.read_head(key, len);
        }
        let (prefix, total) = self
            .inner
            .read_head(key, if len == 0 { 0 } else { head_len(len) })?;
        let Some(size) = plain_len(total) else {
            return Err(Error::Damaged {
                location: self.inner.location(),
                key: key.to_string(),
                detail: format!("{total} bytes is no sealed object's length"),
            });
        };
        if len == 0 {
            // Existence and size only, as for a plain object: the bytes are checked when read.
            return Ok((Vec::new(), size));
        }
        let head = self
            .sealer
            .open_head(key, &prefix, total, len)
            .map_err(|e| self.damaged(key, &e))?;
        Ok((head, size))
    }

    fn write_new(&self, key: &str, bytes: &[u8]) -> Result<Written> {
        if self.plain(key) {
            return self.inner.write_new(key, bytes);
        }
        let sealed = self.seal(key, bytes)?;
        self.inner.write_new_owned(key, sealed)
    }

    fn write_new_owned(&self, key: &str, bytes: Vec<u8>) -> Result<Written> {
        if self.plain(key) {
            return self.inner.write_new_owned(key, bytes);
        }
        let sealed = self.seal(key, &bytes)?;
        drop(bytes);
        self.inner.write_new_owned(key, sealed)
    }

    fn write(&self, key: &str, bytes: &[u8]) -> Result<()> {
        if self.plain(key) {
            return self.inner.write(key, bytes);
        }
        let sealed = self.seal(key, bytes)?;
        self.inner.write(key, &sealed)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        Ok(self
            .inner
            .list(prefix)?
            .into_iter()
            .map(|e| self.entry(e))
            .collect())
    }

    fn list_folders(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.list_folders(prefix)
    }

    fn sync(&self) -> Result<()> {
        self.inner.sync()
    }

    fn requests(&self) -> Vec<(&'static str, u64)> {
        self.inner.requests()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kyrodb_backup_backend::{Backend, Error, LocalBackend, Written};
    use kyrodb_backup_crypto::{is_sealed, sealed_len, MasterKey};

    use super::SealedBackend;

    const MARKER: &str = "kyrodb-backup.json";

    /// A local store in a temporary directory, raw and sealed.
    struct Store {
        dir: tempfile::TempDir,
        raw: Arc<dyn Backend>,
        sealed: SealedBackend,
    }

    impl Store {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let raw: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path().join("repo")));
            let master = MasterKey::generate().unwrap();
            let sealed =
                SealedBackend::new(Arc::clone(&raw), master.keys().sealer().clone(), MARKER);
            Self { dir, raw, sealed }
        }

        /// The file of `key` on disk.
        fn path(&self, key: &str) -> std::path::PathBuf {
            self.dir.path().join("repo").join(key)
        }

        /// The raw bytes of `key` on disk.
        fn on_disk(&self, key: &str) -> Vec<u8> {
            std::fs::read(self.path(key)).unwrap()
        }
    }

    /// `n` bytes that do not repeat in any short period (xorshift).
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// The key and detail of a damage error, or a panic naming what it was.
    fn damage<T: std::fmt::Debug>(r: kyrodb_backup_backend::Result<T>) -> (String, String) {
        match r {
            Err(Error::Damaged { key, detail, .. }) => (key, detail),
            other => panic!("expected Damaged, got {other:?}"),
        }
    }

    /// A limit larger than any object of these tests.
    const BIG: u64 = 1 << 40;

    const SIZES: [usize; 6] = [0, 1, 65535, 65536, 65537, 300_000];

    #[test]
    fn objects_of_every_size_round_trip_through_each_write() {
        let s = Store::new();
        for (i, n) in SIZES.into_iter().enumerate() {
            let plain = bytes(n, i as u64);
            let keys = [
                format!("chains/c/chunks/{n}-write"),
                format!("chains/c/chunks/{n}-new"),
                format!("chains/c/chunks/{n}-owned"),
            ];
            s.sealed.write(&keys[0], &plain).unwrap();
            assert_eq!(
                s.sealed.write_new(&keys[1], &plain).unwrap(),
                Written::Created
            );
            assert_eq!(
                s.sealed.write_new_owned(&keys[2], plain.clone()).unwrap(),
                Written::Created
            );
            for key in &keys {
                let n64 = n as u64;
                assert_eq!(s.sealed.read(key, n64).unwrap(), plain, "{key}");
                assert_eq!(s.sealed.read(key, BIG).unwrap(), plain, "{key}");
                let (head, size) = s.sealed.read_head(key, 0).unwrap();
                assert_eq!(
                    (head.len(), size),
                    (0, n64),
                    "{key}: existence and size only"
                );
                for want in [16usize, 70_000] {
                    let (head, size) = s.sealed.read_head(key, want as u64).unwrap();
                    assert_eq!(size, n64, "{key}");
                    assert_eq!(head, plain[..want.min(n)], "{key}: first {want} bytes");
                }
                // Stored sealed: the magic, the sealed length, no plaintext.
                let raw = s.on_disk(key);
                assert!(is_sealed(&raw), "{key} is stored sealed");
                assert_eq!(raw.len() as u64, sealed_len(n64), "{key}");
                if n >= 32 {
                    assert!(!contains(&raw, &plain[..32]), "{key} holds its plaintext");
                    assert!(
                        !contains(&raw, &plain[n - 32..]),
                        "{key} holds its plaintext"
                    );
                }
                assert_eq!(s.raw.read(key, BIG).unwrap(), raw);
            }
        }
    }

    #[test]
    fn a_create_only_write_keeps_the_object_there_and_a_write_replaces_it() {
        let s = Store::new();
        let key = "manifests/one";
        let (first, second) = (bytes(100, 1), bytes(200, 2));
        assert_eq!(s.sealed.write_new(key, &first).unwrap(), Written::Created);
        assert_eq!(s.sealed.write_new(key, &second).unwrap(), Written::Existed);
        assert_eq!(
            s.sealed.write_new_owned(key, second.clone()).unwrap(),
            Written::Existed
        );
        assert_eq!(s.sealed.read(key, 1000).unwrap(), first);
        s.sealed.write(key, &second).unwrap();
        assert_eq!(s.sealed.read(key, 1000).unwrap(), second);
        // Sealing the same bytes twice gives other bytes (a fresh salt each time).
        let before = s.on_disk(key);
        s.sealed.write(key, &second).unwrap();
        assert_ne!(s.on_disk(key), before);
        assert_eq!(s.sealed.read(key, 1000).unwrap(), second);
    }

    #[test]
    fn a_listing_shows_plaintext_sizes() {
        let s = Store::new();
        for n in SIZES {
            s.sealed
                .write(&format!("chains/c/chunks/{n:06}"), &bytes(n, 7))
                .unwrap();
        }
        s.sealed.write(MARKER, b"{}\n").unwrap();
        s.sealed.write("keys/slot", b"slot bytes").unwrap();
        let listed: Vec<(String, u64)> = s
            .sealed
            .list("chains/")
            .unwrap()
            .into_iter()
            .map(|e| (e.key, e.size))
            .collect();
        let expected: Vec<(String, u64)> = SIZES
            .iter()
            .map(|&n| (format!("chains/c/chunks/{n:06}"), n as u64))
            .collect();
        assert_eq!(listed, expected);
        // The raw listing has the sealed sizes.
        for e in s.raw.list("chains/").unwrap() {
            let n: u64 = e.key.rsplit('/').next().unwrap().parse().unwrap();
            assert_eq!(e.size, sealed_len(n), "{}", e.key);
        }
        // Objects stored as they are list with their own sizes.
        let all = s.sealed.list("").unwrap();
        let size_of = |k: &str| all.iter().find(|e| e.key == k).unwrap().size;
        assert_eq!(size_of(MARKER), 3);
        assert_eq!(size_of("keys/slot"), 10);
        assert_eq!(all.len(), SIZES.len() + 2);
    }

    #[test]
    fn an_object_of_a_length_no_sealed_object_has_lists_as_empty_and_is_damaged() {
        let s = Store::new();
        // Too short for a header and a tag, and one byte past a full segment's end.
        let bad = [
            ("chains/c/chunks/short", vec![0u8; 10]),
            (
                "chains/c/chunks/odd",
                vec![0u8; sealed_len(65536) as usize + 1],
            ),
        ];
        for (key, raw) in &bad {
            s.raw.write(key, raw).unwrap();
        }
        for e in s.sealed.list("chains/").unwrap() {
            assert_eq!(e.size, 0, "{}", e.key);
        }
        for (key, _) in &bad {
            let (k, detail) = damage(s.sealed.read_head(key, 0));
            assert_eq!(&k, key);
            assert!(detail.contains("no sealed object's length"), "{detail}");
            let (k, _) = damage(s.sealed.read_head(key, 16));
            assert_eq!(&k, key);
            let (k, _) = damage(s.sealed.read(key, BIG));
            assert_eq!(&k, key);
        }
    }

    #[test]
    fn the_marker_and_the_key_slots_are_stored_as_they_are() {
        let s = Store::new();
        let marker = b"{\"repository\": \"kyrodb_backup\"}\n".to_vec();
        s.sealed.write(MARKER, &marker).unwrap();
        assert_eq!(
            s.sealed.write_new("keys/a", b"slot a").unwrap(),
            Written::Created
        );
        assert_eq!(
            s.sealed
                .write_new_owned("keys/b", b"slot b".to_vec())
                .unwrap(),
            Written::Created
        );
        assert_eq!(s.on_disk(MARKER), marker);
        assert_eq!(s.on_disk("keys/a"), b"slot a");
        assert_eq!(s.on_disk("keys/b"), b"slot b");
        assert_eq!(s.sealed.read(MARKER, 1024).unwrap(), marker);
        assert_eq!(s.sealed.read("keys/a", 1024).unwrap(), b"slot a");
        assert_eq!(
            s.sealed.read_head("keys/b", 4).unwrap(),
            (b"slot".to_vec(), 6)
        );
        // Plain objects keep the plain limit.
        assert!(matches!(
            s.sealed.read("keys/a", 5),
            Err(Error::Damaged { .. })
        ));
        // Only the marker at the top and what is inside `keys/` are plain: a name that merely
        // starts like them is sealed.
        for key in [
            "keys-old/a",
            "keysa",
            "chains/c/kyrodb-backup.json",
            "x/keys/a",
        ] {
            s.sealed.write(key, b"sealed").unwrap();
            assert!(is_sealed(&s.on_disk(key)), "{key} is sealed");
            assert_eq!(s.sealed.read(key, 6).unwrap(), b"sealed");
        }
    }

    #[test]
    fn an_object_copied_to_another_name_does_not_open() {
        let s = Store::new();
        let plain = bytes(1000, 3);
        s.sealed.write("chains/c/chunks/aa/one", &plain).unwrap();
        let raw = s.raw.read("chains/c/chunks/aa/one", BIG).unwrap();
        s.raw.write("chains/c/chunks/aa/two", &raw).unwrap();
        let (key, detail) = damage(s.sealed.read("chains/c/chunks/aa/two", BIG));
        assert_eq!(key, "chains/c/chunks/aa/two");
        assert!(detail.contains("does not authenticate"), "{detail}");
        let (key, _) = damage(s.sealed.read_head("chains/c/chunks/aa/two", 16));
        assert_eq!(key, "chains/c/chunks/aa/two");
        // Existence and size only do not open it (they are checked when read).
        assert_eq!(
            s.sealed.read_head("chains/c/chunks/aa/two", 0).unwrap(),
            (Vec::new(), 1000)
        );
        // The original still opens.
        assert_eq!(s.sealed.read("chains/c/chunks/aa/one", BIG).unwrap(), plain);
        // A sealed object moved into the plain names is read as the bytes it is.
        s.raw.write("keys/moved", &raw).unwrap();
        assert_eq!(s.sealed.read("keys/moved", BIG).unwrap(), raw);
    }

    #[test]
    fn the_read_limit_is_on_the_plaintext() {
        let s = Store::new();
        for n in [0usize, 1, 65536, 65537] {
            let key = format!("manifests/{n}");
            let plain = bytes(n, 5);
            s.sealed.write(&key, &plain).unwrap();
            assert_eq!(s.sealed.read(&key, n as u64).unwrap(), plain);
            if n > 0 {
                let (k, _) = damage(s.sealed.read(&key, n as u64 - 1));
                assert_eq!(k, key);
            }
        }
        // The sealed length of the object is not what is limited.
        let key = "manifests/100";
        s.sealed.write(key, &bytes(100, 6)).unwrap();
        assert!(s.raw.read(key, 100).is_err());
        assert_eq!(s.sealed.read(key, 100).unwrap().len(), 100);
    }

    #[test]
    fn a_changed_byte_anywhere_is_damage_naming_the_object() {
        let s = Store::new();
        let key = "chains/c/chunks/bb/obj";
        let plain = bytes(150_000, 9);
        s.sealed.write(key, &plain).unwrap();
        let good = s.on_disk(key);
        // Magic, version, salt, first segment, its tag, a later segment, the last tag.
        for at in [
            0,
            8,
            20,
            100,
            44 + 65536 + 3,
            44 + 2 * 65552 + 10,
            good.len() - 1,
        ] {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            std::fs::write(s.path(key), &bad).unwrap();
            let (k, detail) = damage(s.sealed.read(key, BIG));
            assert_eq!(k, key, "byte {at}");
            assert!(!detail.is_empty());
            let shown = Error::Damaged {
                location: s.sealed.location(),
                key: k,
                detail,
            }
            .to_string();
            assert!(shown.contains(key), "{shown}");
            // The head is checked as far as it reads: a change in the first segment or the
            // header fails it, one further on does not.
            let head = s.sealed.read_head(key, 16);
            if at < 44 + 65552 {
                assert_eq!(damage(head).0, key, "byte {at}");
            } else {
                assert_eq!(head.unwrap(), (plain[..16].to_vec(), 150_000), "byte {at}");
            }
        }
        // Truncated at a segment boundary: no longer a sealed object's length, or its new last
        // segment was not sealed as the last.
        let cut = &good[..44 + 65552];
        std::fs::write(s.path(key), cut).unwrap();
        assert_eq!(damage(s.sealed.read(key, BIG)).0, key);
        std::fs::write(s.path(key), &good).unwrap();
        assert_eq!(s.sealed.read(key, BIG).unwrap(), plain);
    }

    /// `sealed_len` saturates "so a caller may pass `u64::MAX` for no limit", and the sealed
    /// store passes a saturated limit on to the store under it.
    #[test]
    fn reading_with_no_limit_reads_the_whole_object() {
        let s = Store::new();
        let plain = bytes(1000, 11);
        s.sealed.write("manifests/m", &plain).unwrap();
        s.sealed.write("keys/k", &plain).unwrap();
        assert_eq!(s.sealed.read("manifests/m", u64::MAX).unwrap(), plain);
        assert_eq!(s.sealed.read("keys/k", u64::MAX).unwrap(), plain);
    }
}
