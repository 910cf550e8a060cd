//! Small records a repository keeps beside its backups: the drills run on them and the
//! repository's settings.
//!
//! A drill record is one create-only object,
//! `drills/<backup id>/<unix second>-<nanoseconds>-<passed|failed>-<id>.json`: its key alone
//! says which backup, when (ordered within a second too) and whether it passed, so `list`, `show` and `check`
//! decide from one listing and read only the records they show. Settings are one object,
//! `settings.json`, replaced atomically.

use kyrodb_backup_backend::Written;
use kyrodb_backup_format::repo::is_backup_id;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::repository::Repository;

/// Where drill records live.
pub const DRILLS_PREFIX: &str = "drills/";

/// The settings object.
pub const SETTINGS_KEY: &str = "settings.json";

/// Largest record or settings object read back.
const MAX_RECORD_BYTES: u64 = 1 << 20;

/// One restore drill, as recorded in the repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    /// Record version (1).
    pub version: u32,
    /// The drill's own id (a UUID).
    pub id: String,
    /// Unix second the drill started.
    pub timestamp: u64,
    /// Nanoseconds within that second (orders drills of one second).
    #[serde(default)]
    pub timestamp_nanos: u32,
    /// The backup restored (for a point in time, the newest backup the plan used).
    pub backup_id: String,
    /// The point in time asked for, if any.
    pub point_in_time: Option<u64>,
    /// Whether everything matched.
    pub passed: bool,
    /// What differed or failed, when it did not pass.
    pub problem: Option<String>,
    /// Bytes restored.
    pub bytes: u64,
    /// Live documents of the restored state.
    pub vector_count: u64,
    /// Seconds of the restore (every byte checked, replayed, durable).
    pub restore_seconds: f64,
    /// Restore throughput in MB/s (10^6 bytes).
    pub restore_mb_per_s: f64,
    /// Seconds of the full check of the restored state.
    pub check_seconds: f64,
    /// Seconds of the golden queries.
    pub golden_seconds: f64,
    /// Seconds from start to the scratch copy removed.
    pub total_seconds: f64,
    /// Golden queries run (0: none).
    pub golden_queries: u64,
    /// Where the golden queries came from: `backup`, `file`, or `none`.
    pub golden_source: String,
    /// Version of the tool that ran the drill.
    pub tool_version: String,
}

/// What a drill record's key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillKey {
    /// The object key.
    pub key: String,
    /// The backup drilled.
    pub backup_id: String,
    /// Unix second of the drill.
    pub timestamp: u64,
    /// Nanoseconds within that second.
    pub nanos: u32,
    /// Whether it passed.
    pub passed: bool,
}

impl DrillKey {
    fn parse(key: &str) -> Option<Self> {
        let rest = key.strip_prefix(DRILLS_PREFIX)?;
        let (backup_id, name) = rest.split_once('/')?;
        let stem = name.strip_suffix(".json")?;
        let mut parts = stem.splitn(4, '-');
        let timestamp = parts.next()?.parse().ok()?;
        let nanos = parts
            .next()?
            .parse()
            .ok()
            .filter(|&n: &u32| n < 1_000_000_000)?;
        let passed = match parts.next()? {
            "passed" => true,
            "failed" => false,
            _ => return None,
        };
        parts.next()?;
        is_name(backup_id).then(|| Self {
            key: key.to_string(),
            backup_id: backup_id.to_string(),
            timestamp,
            nanos,
            passed,
        })
    }
}

/// Whether `s` can name a drilled backup in a key: a backup id, or a timeline's id.
fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A repository's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Golden queries `create` records when not told otherwise (0: none).
    #[serde(default)]
    pub golden_queries: u64,
}

impl Repository {
    /// Records a drill (create-only); returns the record's key.
    ///
    /// # Errors
    ///
    /// When the record cannot be written, or its ids are not ids.
    pub fn record_drill(&self, record: &DrillRecord) -> Result<String> {
        if !is_name(&record.backup_id) || !is_backup_id(&record.id) {
            return Err(Error::Damaged(format!(
                "drill record names {:?}, which is not a backup id",
                record.backup_id
            )));
        }
        let key = format!(
            "{DRILLS_PREFIX}{}/{:010}-{:09}-{}-{}.json",
            record.backup_id,
            record.timestamp,
            record.timestamp_nanos,
            if record.passed { "passed" } else { "failed" },
            record.id
        );
        let mut bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| Error::Damaged(format!("drill record does not encode: {e}")))?;
        bytes.push(b'\n');
        if self.backend().write_new(&key, &bytes)? == Written::Existed {
            return Err(Error::Damaged(format!(
                "{}: a drill record of that name exists",
                self.object_name(&key)
            )));
        }
        self.backend().sync()?;
        Ok(key)
    }

    /// Every drill record's key, oldest first (by second and nanosecond) (keys that are not drill records are left out).
    ///
    /// # Errors
    ///
    /// When the repository cannot be listed.
    pub fn drill_keys(&self) -> Result<Vec<DrillKey>> {
        self.drill_keys_under(DRILLS_PREFIX)
    }

    /// The keys of one backup's drill records, oldest first.
    ///
    /// # Errors
    ///
    /// When the repository cannot be listed.
    pub fn drill_keys_of(&self, backup_id: &str) -> Result<Vec<DrillKey>> {
        self.drill_keys_under(&format!("{DRILLS_PREFIX}{backup_id}/"))
    }

    fn drill_keys_under(&self, prefix: &str) -> Result<Vec<DrillKey>> {
        let mut keys: Vec<DrillKey> = self
            .backend()
            .list(prefix)?
            .iter()
            .filter_map(|e| DrillKey::parse(&e.key))
            .collect();
        keys.sort_by(|a, b| (a.timestamp, a.nanos, &a.key).cmp(&(b.timestamp, b.nanos, &b.key)));
        Ok(keys)
    }

    /// Reads one drill record and checks that it says what its key says.
    ///
    /// # Errors
    ///
    /// [`Error::Damaged`] when it does not decode or contradicts its key.
    pub fn load_drill(&self, key: &DrillKey) -> Result<DrillRecord> {
        let bytes = self.backend().read(&key.key, MAX_RECORD_BYTES)?;
        let r: DrillRecord = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Damaged(format!(
                "{}: not a drill record: {e}",
                self.object_name(&key.key)
            ))
        })?;
        if r.backup_id != key.backup_id
            || (r.timestamp, r.timestamp_nanos) != (key.timestamp, key.nanos)
            || r.passed != key.passed
        {
            return Err(Error::Damaged(format!(
                "{}: the record contradicts its name",
                self.object_name(&key.key)
            )));
        }
        Ok(r)
    }

    /// The repository's settings (defaults when none were set).
    ///
    /// # Errors
    ///
    /// When the settings object exists and does not decode, or cannot be read.
    pub fn settings(&self) -> Result<Settings> {
        match self.backend().read(SETTINGS_KEY, MAX_RECORD_BYTES) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::Damaged(format!("{}: {e}", self.object_name(SETTINGS_KEY)))),
            Err(kyrodb_backup_backend::Error::NotFound { .. }) => Ok(Settings::default()),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces the repository's settings (atomically).
    ///
    /// # Errors
    ///
    /// When they cannot be written.
    pub fn set_settings(&self, settings: &Settings) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(settings)
            .map_err(|e| Error::Damaged(format!("settings do not encode: {e}")))?;
        bytes.push(b'\n');
        self.backend().write(SETTINGS_KEY, &bytes)?;
        self.backend().sync()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drill_keys_parse_back() {
        let id = "0b8f5e3e-2a6c-4d3e-9f7a-1c2b3d4e5f60";
        let key = format!("drills/{id}/1764480000-000000123-passed-{id}.json");
        let k = DrillKey::parse(&key).unwrap();
        assert_eq!(
            (k.backup_id.as_str(), k.timestamp, k.nanos, k.passed),
            (id, 1_764_480_000, 123, true)
        );
        for bad in [
            format!("drills/{id}/1764480000-000000000-maybe-{id}.json"),
            format!("drills/{id}/x-000000000-passed-{id}.json"),
            format!("drills/{id}/1764480000-1000000000-passed-{id}.json"),
            format!("drills/{id}/1764480000-passed-{id}.json"),
            format!("drills/not_an.id/1764480000-000000000-passed-{id}.json"),
            format!("drills/{id}/1764480000-000000000-passed-{id}.tmp"),
            format!("drills/{id}/1764480000-000000000-passed"),
        ] {
            assert_eq!(DrillKey::parse(&bad), None, "{bad}");
        }
    }
}
