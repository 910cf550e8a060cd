//! Leases: how runs that write or delete know of each other without a lock server.
//!
//! A `create` announces itself with a lease object `locks/create-<id>.json` before it reads
//! anything of its chain, and renews it while it runs. A `prune` takes `locks/prune.json`
//! (create-only, so two prunes exclude each other), then lists the create leases, and leaves
//! alone every chain a live create writes to: its manifests and its chunks, even those no
//! manifest names yet. A create reads `locks/prune.json` after writing its lease and waits
//! while a live prune holds it. Whichever of the two writes second sees the other, so a prune
//! never deletes a chunk that a create which started before it will reference.
//!
//! A lease is live while its holder runs: on the same host (same boot, same pid namespace),
//! while its process (same pid, same start time) exists; elsewhere (another host, another
//! container), until the expiry its holder wrote, which the holder moves forward while it runs. A lease whose create committed its backup is finished whatever the
//! clock says. A killed run's lease is therefore stale at once on its own host, and after the
//! time to live elsewhere; the next prune deletes it. Creates never need to delete anything:
//! with credentials that cannot delete, a create's lease stays until a prune removes it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kyrodb_backup_backend::{Backend, Written};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The folder of the lease objects.
pub(crate) const LOCKS: &str = "locks/";
const PRUNE_KEY: &str = "locks/prune.json";
const MAX_LEASE: u64 = 64 * 1024;

/// How long a create (or a copy into a repository) waits for a running prune to finish before
/// it gives up.
pub const PRUNE_WAIT: Duration = Duration::from_secs(300);

/// How long a lease of a run on another host stays live without being renewed.
pub const LEASE_TTL: Duration = Duration::from_secs(10 * 60);

/// What a lease object says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct LeaseRecord {
    /// `create` or `prune`.
    pub kind: String,
    /// The chain a create writes to.
    #[serde(default)]
    pub chain_id: Option<String>,
    /// The backup a create makes.
    #[serde(default)]
    pub backup_id: Option<String>,
    /// The holder's host name.
    pub host: String,
    /// The holder's boot and pid namespace (`/proc/sys/kernel/random/boot_id` and
    /// `/proc/self/ns/pid`): a pid means something only within both.
    #[serde(default)]
    pub pid_space: String,
    /// The holder's process id.
    pub pid: u32,
    /// The holder process's start time in clock ticks since boot (tells a reused pid apart).
    #[serde(default)]
    pub pid_start: u64,
    /// Unix second after which the lease is stale unless its holder is seen alive.
    pub expires: u64,
}

/// The host this process runs on.
pub(crate) fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Which boot and pid namespace this process runs in (empty when `/proc` does not say): two
/// processes with the same pid space can see each other's pids; containers that share a host
/// name but not their pid namespace cannot.
pub(crate) fn pid_space() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if boot.trim().is_empty() || ns.is_empty() {
        String::new()
    } else {
        format!("{}/{ns}", boot.trim())
    }
}

/// Start time of a process in clock ticks since boot, from `/proc/<pid>/stat`.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields count after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl LeaseRecord {
    /// Whether the holder may still be running, as seen from `host` (in `space`, see
    /// [`pid_space`]) at Unix second `now`: by its process where its pid can be looked up,
    /// else by its expiry.
    pub fn is_live(&self, host: &str, space: &str, now: u64) -> bool {
        if self.host == host && !space.is_empty() && self.pid_space == space {
            return process_start(self.pid).is_some_and(|s| s == self.pid_start);
        }
        now < self.expires
    }
}

/// A lease this process holds; renewed by a thread while held, given up when dropped.
#[derive(Debug)]
pub struct Lease {
    backend: Arc<dyn Backend>,
    key: String,
    stop: Arc<AtomicBool>,
    renewer: Option<std::thread::JoinHandle<()>>,
    /// When the last write of the lease succeeded.
    renewed: Arc<Mutex<Instant>>,
}

impl Lease {
    fn start(
        backend: &Arc<dyn Backend>,
        key: String,
        mut record: LeaseRecord,
        now: u64,
        create_only: bool,
    ) -> Result<Option<Self>> {
        record.expires = now + LEASE_TTL.as_secs();
        let bytes = serde_json::to_vec(&record).expect("lease serializes");
        if create_only {
            if backend.write_new(&key, &bytes)? == Written::Existed {
                return Ok(None);
            }
        } else {
            backend.write(&key, &bytes)?;
        }
        backend.sync()?;
        let stop = Arc::new(AtomicBool::new(false));
        let renewed = Arc::new(Mutex::new(Instant::now()));
        let handle = {
            let (backend, key, stop, renewed) = (
                Arc::clone(backend),
                key.clone(),
                Arc::clone(&stop),
                Arc::clone(&renewed),
            );
            let started = Instant::now();
            std::thread::Builder::new()
                .name("kyrodb-backup-lease".into())
                .spawn(move || {
                    let every = LEASE_TTL / 4;
                    let mut last = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::park_timeout(Duration::from_secs(1));
                        if last.elapsed() < every {
                            continue;
                        }
                        last = Instant::now();
                        let mut r = record.clone();
                        r.expires = now + started.elapsed().as_secs() + LEASE_TTL.as_secs();
                        let bytes = serde_json::to_vec(&r).expect("lease serializes");
                        match backend.write(&key, &bytes) {
                            Ok(()) => *renewed.lock().expect("lock") = Instant::now(),
                            Err(e) => tracing::warn!(%e, "cannot renew the lease"),
                        }
                    }
                })
                .ok()
        };
        Ok(Some(Self {
            backend: Arc::clone(backend),
            key,
            stop,
            renewer: handle,
            renewed,
        }))
    }

    /// Fails when the lease may have lapsed (not renewed within its time to live): a prune
    /// on another host may then have collected chunks this run counted on.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`].
    pub fn check(&self) -> Result<()> {
        let since = self.renewed.lock().expect("lock").elapsed();
        if since + Duration::from_secs(30) >= LEASE_TTL {
            return Err(Error::LeaseLost(format!(
                "{}: this run's lease was not renewed for {}s",
                self.key,
                since.as_secs()
            )));
        }
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.renewer.take() {
            h.thread().unpark();
            let _ = h.join();
        }
        // With credentials that may not delete, the lease stays for a prune to remove.
        if let Err(e) = self.backend.delete(&self.key) {
            tracing::debug!(%e, key = %self.key, "lease left for prune to remove");
        } else {
            let _ = self.backend.sync();
        }
    }
}

fn record(kind: &str, chain_id: Option<&str>, backup_id: Option<&str>) -> LeaseRecord {
    let pid = std::process::id();
    LeaseRecord {
        kind: kind.into(),
        chain_id: chain_id.map(str::to_string),
        backup_id: backup_id.map(str::to_string),
        host: host_name(),
        pid_space: pid_space(),
        pid,
        pid_start: process_start(pid).unwrap_or(0),
        expires: 0,
    }
}

/// Every lease object, with what it says (unreadable ones as `None`).
pub(crate) fn read_leases(backend: &dyn Backend) -> Result<Vec<(String, Option<LeaseRecord>)>> {
    let mut out = Vec::new();
    for e in backend.list(LOCKS)? {
        let rec = match backend.read(&e.key, MAX_LEASE) {
            Ok(b) => serde_json::from_slice(&b).ok(),
            Err(err) if err.is_not_found() => continue,
            Err(err) => return Err(err.into()),
        };
        out.push((e.key, rec));
    }
    Ok(out)
}

/// The lease at `key`, if one exists and its holder may be running.
fn live_holder(backend: &dyn Backend, key: &str, now: u64) -> Result<Option<LeaseRecord>> {
    match backend.read(key, MAX_LEASE) {
        Ok(b) => Ok(serde_json::from_slice::<LeaseRecord>(&b)
            .ok()
            .filter(|r| r.is_live(&host_name(), &pid_space(), now))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The prune lease, if one exists and its holder may be running.
fn live_prune(backend: &dyn Backend, now: u64) -> Result<Option<LeaseRecord>> {
    live_holder(backend, PRUNE_KEY, now)
}

/// Takes the lease at `key` that one run at a time holds, create-only; a stale one (its holder
/// gone) is replaced. `busy` words the refusal from the live holder's record.
fn exclusive_lease(
    backend: &Arc<dyn Backend>,
    key: &str,
    kind: &str,
    now: u64,
    busy: impl Fn(&LeaseRecord) -> String,
) -> Result<Lease> {
    for _ in 0..3 {
        if let Some(lease) = Lease::start(backend, key.into(), record(kind, None, None), now, true)?
        {
            return Ok(lease);
        }
        if let Some(holder) = live_holder(backend.as_ref(), key, now)? {
            return Err(Error::Locked(format!(
                "repository {} is locked: {}",
                backend.location(),
                busy(&holder)
            )));
        }
        tracing::info!(key, "removing the stale lease of a run that is gone");
        backend.delete(key)?;
    }
    Err(Error::Locked(format!(
        "repository {} is locked: other runs keep taking {key}",
        backend.location()
    )))
}

/// Announces a create of backup `backup_id` in chain `chain_id`, then waits (up to `wait`)
/// while a live prune runs.
///
/// # Errors
///
/// [`Error::Locked`] when a prune still runs after `wait`; the store's errors.
pub fn lease_for_create(
    backend: &Arc<dyn Backend>,
    chain_id: &str,
    backup_id: &str,
    now: u64,
    wait: Duration,
) -> Result<Lease> {
    let key = format!("{LOCKS}create-{backup_id}.json");
    let lease = Lease::start(
        backend,
        key,
        record("create", Some(chain_id), Some(backup_id)),
        now,
        false,
    )?
    .expect("an overwriting write always takes the lease");
    wait_for_prune(backend, now, wait)?;
    Ok(lease)
}

/// Waits (up to `wait`) while a live prune holds its lease.
///
/// # Errors
///
/// [`Error::Locked`] when a prune still runs after `wait`; the store's errors.
pub fn wait_for_prune(backend: &Arc<dyn Backend>, now: u64, wait: Duration) -> Result<()> {
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(50);
    while let Some(p) = live_prune(backend.as_ref(), now)? {
        if Instant::now() >= deadline {
            return Err(Error::Locked(format!(
                "repository {} is locked: a prune by process {} on {} is still deleting after {}s",
                backend.location(),
                p.pid,
                p.host,
                wait.as_secs()
            )));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(2));
    }
    Ok(())
}

/// Takes the prune lease: one prune at a time. A stale one (its holder gone) is replaced.
///
/// # Errors
///
/// [`Error::Locked`] while another prune runs; the store's errors.
pub fn lease_for_prune(backend: &Arc<dyn Backend>, now: u64) -> Result<Lease> {
    exclusive_lease(backend, PRUNE_KEY, "prune", now, |p| {
        format!("a prune by process {} on {} is running", p.pid, p.host)
    })
}

const ARCHIVE_KEY: &str = "locks/archive.json";

/// Who holds the archive lease: its host and pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveHolder {
    /// Its host.
    pub host: String,
    /// Its process id.
    pub pid: u32,
}

/// The archive lease, if one exists and its holder may be running.
///
/// # Errors
///
/// When the store fails.
pub fn archive_holder(backend: &dyn Backend, now: u64) -> Result<Option<ArchiveHolder>> {
    Ok(
        live_holder(backend, ARCHIVE_KEY, now)?.map(|r| ArchiveHolder {
            host: r.host,
            pid: r.pid,
        }),
    )
}

/// Takes the archive lease: one archiver per repository. A stale one (its holder gone) is
/// replaced.
///
/// # Errors
///
/// [`Error::Locked`] while another archiver runs; the store's errors.
pub fn lease_for_archive(backend: &Arc<dyn Backend>, now: u64) -> Result<Lease> {
    exclusive_lease(backend, ARCHIVE_KEY, "archive", now, |h| {
        format!(
            "an archiver (process {} on {}) already follows it",
            h.pid, h.host
        )
    })
}

/// What the create leases say, as a prune holding its own lease sees them: the chains live
/// creates write to, and the lease objects of runs that are gone or finished.
pub(crate) struct CreateLeases {
    pub busy_chains: std::collections::BTreeSet<String>,
    /// A lease could not be read: which chain it protects is unknown, so every chain is busy.
    pub all_busy: bool,
    pub stale: Vec<String>,
}

impl CreateLeases {
    /// Whether a live create may be writing to `chain`.
    pub fn is_busy(&self, chain: &str) -> bool {
        self.all_busy || self.busy_chains.contains(chain)
    }
}

pub(crate) fn create_leases(
    backend: &dyn Backend,
    now: u64,
    committed: &dyn Fn(&str, &str) -> bool,
) -> Result<CreateLeases> {
    let (host, space) = (host_name(), pid_space());
    let mut out = CreateLeases {
        busy_chains: std::collections::BTreeSet::new(),
        all_busy: false,
        stale: Vec::new(),
    };
    for (key, rec) in read_leases(backend)? {
        if key == PRUNE_KEY {
            continue;
        }
        match rec {
            Some(r) if r.kind == "create" => {
                let chain = r.chain_id.clone().unwrap_or_default();
                let done = r
                    .backup_id
                    .as_deref()
                    .is_some_and(|id| committed(&chain, id));
                if !done && r.is_live(&host, &space, now) {
                    out.busy_chains.insert(chain);
                } else {
                    out.stale.push(key);
                }
            }
            // The archiver's lease protects no chain (its bases take create leases).
            Some(r) if r.kind == "archive" => {}
            // Unreadable or unknown: a lease being written, or from a newer tool. Leave it, and
            // collect nothing that could be its.
            _ => {
                out.all_busy = true;
            }
        }
    }
    Ok(out)
}
