//! Following a live data directory's WAL (`kyrodb_backup_datadir::follow`) while the engine
//! appends, rotates, snapshots, compacts and restarts: every frame is returned once, in order,
//! byte for byte; what compaction took first is a gap with the snapshot that covers it; a
//! swapped-in directory or another history diverges.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use kyrodb_backup_datadir::follow::{Batch, Follower, Poll, Resume, Start};
use kyrodb_backup_format::engine::{
    decode_entry, encode_entry, DataDirManifest, SnapshotReader, WalEntry, WalLayout, WalReader,
};

use crate::support::copy_fixture_data;
use crate::support::engine::Engine;

/// A byte limit no test reaches.
const ALL: usize = 1 << 30;

/// A frame as the engine writes it.
fn frame_bytes(e: &WalEntry) -> Vec<u8> {
    let body = encode_entry(e, WalLayout::W3);
    let mut v = (body.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(&body);
    v.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    v
}

/// The CRC-32 stored in an entry's frame.
fn crc_of(e: &WalEntry) -> u32 {
    crc32fast::hash(&encode_entry(e, WalLayout::W3))
}

/// The frames of `bytes` (raw frames back to back), each checked and decoded.
fn frames(mut bytes: &[u8]) -> Vec<(WalEntry, u32)> {
    let mut v = Vec::new();
    while !bytes.is_empty() {
        let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        let body = &bytes[4..4 + len];
        let crc = u32::from_le_bytes(bytes[4 + len..8 + len].try_into().unwrap());
        assert_eq!(crc, crc32fast::hash(body));
        v.push((decode_entry(body).unwrap().0, crc));
        bytes = &bytes[8 + len..];
    }
    v
}

fn manifest(dir: &Path) -> DataDirManifest {
    DataDirManifest::parse(&fs::read(dir.join("MANIFEST")).unwrap()).unwrap()
}

/// The listed segments, in order.
fn segments(dir: &Path) -> Vec<PathBuf> {
    manifest(dir)
        .wal_segments(&[])
        .into_iter()
        .map(|n| dir.join(n))
        .collect()
}

fn log(e: &Engine) -> Vec<WalEntry> {
    e.log.lock().unwrap().clone()
}

/// The entries of `log` with sequence numbers `first..=last`.
fn entries(log: &[WalEntry], first: u64, last: u64) -> Vec<WalEntry> {
    log.iter()
        .filter(|e| (first..=last).contains(&e.seq_no))
        .cloned()
        .collect()
}

/// Checks that `out` holds exactly the frames of `expected`, and that `batch` describes them.
fn check(out: &[u8], batch: Option<Batch>, expected: &[WalEntry]) {
    let want: Vec<u8> = expected.iter().flat_map(frame_bytes).collect();
    assert_eq!(out, want.as_slice(), "the frames' bytes");
    let got = frames(out);
    assert_eq!(
        got.iter().map(|(e, _)| e).collect::<Vec<_>>(),
        expected.iter().collect::<Vec<_>>()
    );
    for (e, crc) in &got {
        assert_eq!(*crc, crc_of(e));
    }
    let (first, last) = (&expected[0], expected.last().unwrap());
    assert_eq!(
        batch,
        Some(Batch {
            frames: expected.len() as u64,
            first_seq: first.seq_no,
            last_seq: last.seq_no,
            first_ts: first.timestamp,
            last_ts: last.timestamp,
            last_crc: crc_of(last),
        })
    );
}

/// One poll with no byte limit: the frames and what it reported.
fn poll(f: &mut Follower) -> (Vec<u8>, Poll) {
    let mut out = Vec::new();
    let p = f.poll(&mut out, ALL).unwrap();
    (out, p)
}

/// A poll that finds nothing new.
fn assert_idle(f: &mut Follower) {
    let mut out = b"kept".to_vec();
    let p = f.poll(&mut out, ALL).unwrap();
    assert_eq!(out, b"kept");
    assert!(p.batch.is_none(), "{p:?}");
    assert!(!p.more && !p.diverged && p.snapshot.is_none() && p.gap.is_none());
}

fn fresh(dir: &Path) -> Follower {
    let (f, start) = Follower::start(dir, None).unwrap();
    assert!(matches!(start, Start::Fresh { .. }), "{start:?}");
    f
}

/// The resume point after the frame with `seq` of `log`.
fn resume_at(log: &[WalEntry], seq: u64) -> Resume {
    let e = log.iter().find(|e| e.seq_no == seq).unwrap();
    Resume {
        seq,
        crc: crc_of(e),
    }
}

/// The header timestamp of a snapshot file.
fn snapshot_timestamp(file: &fs::File) -> u64 {
    SnapshotReader::new(file).unwrap().header().timestamp
}

fn writes(e: &mut Engine, from: u64, n: u64) {
    for i in from..from + n {
        e.insert(i, i);
        if i % 3 == 0 {
            e.update(i - 1, &format!("t{i}"));
        }
        if i % 4 == 0 {
            e.delete(i - 2);
        }
    }
}

#[test]
fn appends_are_returned_in_order_with_the_segments_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut e = Engine::open(&data, 4);
    let (mut f, start) = Follower::start(&data, None).unwrap();
    assert!(matches!(start, Start::Fresh { snapshot: None }));
    assert_eq!(f.next_seq(), 1);
    assert_idle(&mut f);

    writes(&mut e, 1, 6);
    let n = log(&e).len() as u64;
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &log(&e));
    assert!(!p.more && !p.diverged && p.snapshot.is_none() && p.gap.is_none());
    let seg = fs::read(&segments(&data)[0]).unwrap();
    assert_eq!(out, seg[4..], "exactly the segment's bytes after its magic");
    assert_eq!(f.next_seq(), n + 1);
    assert_eq!(f.pending_bytes(), 0);

    writes(&mut e, 100, 3);
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &entries(&log(&e), n + 1, u64::MAX));
    assert_idle(&mut f);
}

#[test]
fn an_idle_poll_returns_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut e = Engine::open(&data, 4);
    writes(&mut e, 1, 4);
    let mut f = fresh(&data);
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &log(&e));
    let next = f.next_seq();
    for _ in 0..3 {
        assert_idle(&mut f);
        assert_eq!(f.next_seq(), next);
        assert_eq!(f.pending_bytes(), 0);
    }
}

#[test]
fn a_torn_tail_is_waited_for_then_completed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut e = Engine::open(&data, 4);
    writes(&mut e, 1, 3);
    let mut f = fresh(&data);
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &log(&e));
    let next = f.next_seq();

    // The engine's next frame, half written.
    let mut entry = log(&e).last().unwrap().clone();
    entry.seq_no = next;
    entry.doc_id = 77;
    let frame = frame_bytes(&entry);
    let newest = segments(&data).pop().unwrap();
    let mut w = OpenOptions::new().append(true).open(&newest).unwrap();
    let half = frame.len() / 2;
    w.write_all(&frame[..half]).unwrap();
    for _ in 0..2 {
        assert_idle(&mut f);
        assert_eq!(f.next_seq(), next, "waits before the torn frame");
        assert_eq!(f.pending_bytes(), half as u64);
    }
    w.write_all(&frame[half..]).unwrap();
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &[entry]);
    assert_eq!(f.next_seq(), next + 1);
    assert_idle(&mut f);
}

#[test]
fn a_torn_tail_is_skipped_once_the_engine_restarted() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut e = Engine::open(&data, 4);
    writes(&mut e, 1, 3);
    let mut before = log(&e);
    let mut f = fresh(&data);
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &before);

    // A crash mid-append: half a frame stays at the end of the segment.
    let mut entry = before.last().unwrap().clone();
    entry.seq_no += 1;
    let frame = frame_bytes(&entry);
    let newest = segments(&data).pop().unwrap();
    OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap()
        .write_all(&frame[..frame.len() - 3])
        .unwrap();
    assert_idle(&mut f);
    drop(e);

    // The engine starts again (a new, empty segment) and writes the same sequence numbers.
    let mut e = Engine::open(&data, 4);
    assert_eq!(segments(&data).len(), 2);
    writes(&mut e, 50, 2);
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &log(&e));
    before.extend(log(&e));
    assert_eq!(f.next_seq(), before.last().unwrap().seq_no + 1);
    assert_eq!(f.pending_bytes(), 0, "the torn segment is let go");
    assert_idle(&mut f);
}

#[test]
fn rotation_is_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut e = Engine::open(&data, 4);
    writes(&mut e, 1, 3);
    let mut f = fresh(&data);
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &log(&e));
    let seen = log(&e).len() as u64;

    e.rotate();
    writes(&mut e, 10, 2);
    e.rotate();
    e.rotate();
    writes(&mut e, 20, 2);
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &entries(&log(&e), seen + 1, u64::MAX));
    let segs = segments(&data);
    assert_eq!(segs.len(), 4);
    let mut want = Vec::new();
    for s in &segs[1..] {
        want.extend_from_slice(&fs::read(s).unwrap()[4..]);
    }
    assert_eq!(out, want);
    assert_idle(&mut f);

    // Polls between the rotations see the same frames.
    let before = log(&e).len() as u64;
    e.rotate();
    writes(&mut e, 30, 1);
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &entries(&log(&e), before + 1, u64::MAX));
    e.rotate();
    assert_idle(&mut f);
    let before = log(&e).len() as u64;
    writes(&mut e, 40, 1);
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &entries(&log(&e), before + 1, u64::MAX));
    assert_eq!(f.pending_bytes(), 0);
}

#[test]
fn a_snapshot_is_reported_once_with_its_timestamp_and_last_wal_seq() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut e = Engine::open(&data, 4);
    writes(&mut e, 1, 4);
    let mut f = fresh(&data);
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &log(&e));
    let last = f.next_seq() - 1;

    e.snapshot();
    let name = manifest(&data).snapshot_file().unwrap();
    let (out, p) = poll(&mut f);
    assert!(out.is_empty() && p.batch.is_none() && p.gap.is_none() && !p.diverged);
    let seen = p.snapshot.expect("the new snapshot is reported");
    assert_eq!(seen.name, name);
    assert_eq!(seen.last_wal_seq, last);
    assert_eq!(seen.timestamp, snapshot_timestamp(&seen.file));
    assert_eq!(
        seen.timestamp,
        snapshot_timestamp(&fs::File::open(data.join(&name)).unwrap())
    );
    assert_idle(&mut f);

    writes(&mut e, 10, 2);
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &entries(&log(&e), last + 1, u64::MAX));
    assert!(p.snapshot.is_none(), "reported once");

    // A follower started now gets it in its start, and not again.
    let (mut second, start) = Follower::start(&data, None).unwrap();
    let Start::Fresh {
        snapshot: Some(seen),
        ..
    } = start
    else {
        panic!("{start:?}")
    };
    assert_eq!(
        (seen.name.as_str(), seen.last_wal_seq),
        (name.as_str(), last)
    );
    let (out, p) = poll(&mut second);
    check(&out, p.batch, &entries(&log(&e), last + 1, u64::MAX));
    assert!(p.snapshot.is_none());
}

#[test]
fn compaction_after_the_follower_opened_the_segment_still_yields_every_frame() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut e = Engine::open(&data, 4);
    writes(&mut e, 1, 2);
    let mut f = fresh(&data);
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &log(&e));
    let seen = f.next_seq() - 1;
    let first = segments(&data)[0].clone();

    writes(&mut e, 10, 5);
    e.rotate();
    writes(&mut e, 20, 2);
    let covered = log(&e).last().unwrap().seq_no;
    e.snapshot(); // deletes the first segment, whose last frames were never returned
    assert!(!first.exists());

    let (out, p) = poll(&mut f);
    check(&out, p.batch, &entries(&log(&e), seen + 1, u64::MAX));
    assert!(p.gap.is_none() && !p.diverged);
    assert_eq!(p.snapshot.unwrap().last_wal_seq, covered);
    assert_eq!(f.next_seq(), covered + 1);
    assert_idle(&mut f);
}

#[test]
fn compaction_of_segments_the_follower_never_opened_is_a_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut e = Engine::open(&data, 4);
    writes(&mut e, 1, 2);
    let mut f = fresh(&data);
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &log(&e));
    let seen = f.next_seq() - 1;

    e.rotate();
    writes(&mut e, 10, 3); // only in a segment the follower never sees
    e.rotate();
    writes(&mut e, 20, 2); // in the segment that stays
    let covered = log(&e).last().unwrap().seq_no;
    e.snapshot();
    let name = manifest(&data).snapshot_file().unwrap();

    let (out, p) = poll(&mut f);
    assert!(out.is_empty() && p.batch.is_none() && !p.diverged);
    let gap = p.gap.expect("a gap");
    assert_eq!(
        (gap.name.as_str(), gap.last_wal_seq),
        (name.as_str(), covered)
    );
    assert_eq!(gap.timestamp, snapshot_timestamp(&gap.file));
    assert_eq!(p.snapshot.unwrap().name, name);
    assert!(covered > seen + 1);
    assert_eq!(f.next_seq(), covered + 1);
    assert_idle(&mut f);

    writes(&mut e, 30, 2);
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &entries(&log(&e), covered + 1, u64::MAX));
    assert!(p.gap.is_none());
}

#[test]
fn segments_compacted_before_the_manifest_is_rewritten_are_a_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut e = Engine::open(&data, 4);
    writes(&mut e, 1, 2);
    let mut f = fresh(&data);
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &log(&e));
    e.rotate();
    writes(&mut e, 10, 3); // only in a segment the follower never opens
    e.rotate();
    writes(&mut e, 20, 2);
    let listed = manifest(&data).wal_segments(&[]);
    let covered = log(&e).last().unwrap().seq_no;
    e.snapshot();
    let name = manifest(&data).snapshot_file().unwrap();
    let rewritten = fs::read(data.join("MANIFEST")).unwrap();

    // What the engine leaves while it rewrites the MANIFEST without the segments it deleted
    // (two fsyncs, which can take seconds under load): the MANIFEST names the snapshot and
    // still lists them. They are covered by that snapshot, not a reason to fail.
    let before = DataDirManifest::modern(Some(name.clone()), Some(covered), listed.clone(), 0);
    fs::write(data.join("MANIFEST"), before.to_bytes()).unwrap();
    let (out, p) = poll(&mut f);
    assert!(out.is_empty() && p.batch.is_none() && !p.diverged, "{p:?}");
    assert_eq!(p.gap.unwrap().last_wal_seq, covered);
    assert_eq!(p.snapshot.unwrap().name, name);
    assert_eq!(f.next_seq(), covered + 1);
    assert_idle(&mut f);
    fs::write(data.join("MANIFEST"), &rewritten).unwrap();
    assert_idle(&mut f);
    writes(&mut e, 30, 2);
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &entries(&log(&e), covered + 1, u64::MAX));

    // The engine never deletes its newest segment, nor one no snapshot covers: still errors.
    let newest = listed.last().unwrap().clone();
    for (snapshot, segs) in [
        (
            Some(name.clone()),
            vec![newest.clone(), "wal_1.wal".to_string()],
        ),
        (None, vec!["wal_1.wal".to_string(), newest.clone()]),
    ] {
        let m = DataDirManifest::modern(snapshot, Some(covered), segs, 0);
        fs::write(data.join("MANIFEST"), m.to_bytes()).unwrap();
        let err = f.poll(&mut Vec::new(), ALL).unwrap_err().to_string();
        assert!(err.contains("vanished"), "{err}");
    }
}

#[test]
fn a_snapshot_renamed_over_the_named_one_is_another_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut e = Engine::open(&data, 4);
    writes(&mut e, 1, 2);
    let mut f = fresh(&data);
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &log(&e));
    e.snapshot();
    let first = manifest(&data).snapshot_file().unwrap();
    assert_eq!(poll(&mut f).1.snapshot.unwrap().name, first);
    e.rotate();
    writes(&mut e, 10, 3); // only in a segment the follower never opens
    e.rotate();
    writes(&mut e, 20, 2);
    let covered = log(&e).last().unwrap().seq_no;
    e.snapshot();

    // An engine that reuses a file name (ids from the clock, restarted within one second)
    // renames its new snapshot over the one the MANIFEST named.
    let m = manifest(&data);
    fs::rename(data.join(m.snapshot_file().unwrap()), data.join(&first)).unwrap();
    let renamed =
        DataDirManifest::modern(Some(first.clone()), Some(covered), m.wal_segments(&[]), 0);
    fs::write(data.join("MANIFEST"), renamed.to_bytes()).unwrap();
    let (out, p) = poll(&mut f);
    assert!(out.is_empty() && p.batch.is_none() && !p.diverged, "{p:?}");
    let seen = p.snapshot.expect("reported as a new snapshot");
    assert_eq!(
        (seen.name.as_str(), seen.last_wal_seq),
        (first.as_str(), covered)
    );
    assert_eq!(p.gap.unwrap().last_wal_seq, covered);
    assert_eq!(f.next_seq(), covered + 1);
    assert_idle(&mut f);
}

#[test]
fn compaction_leaving_only_an_empty_segment_is_a_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut e = Engine::open(&data, 4);
    let mut f = fresh(&data);
    writes(&mut e, 1, 2);
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &log(&e));
    e.rotate();
    writes(&mut e, 10, 3);
    e.rotate();
    let covered = log(&e).last().unwrap().seq_no;
    e.snapshot();

    let (out, p) = poll(&mut f);
    assert!(out.is_empty() && p.batch.is_none());
    assert_eq!(p.gap.unwrap().last_wal_seq, covered);
    assert_eq!(f.next_seq(), covered + 1);
    writes(&mut e, 20, 1);
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &entries(&log(&e), covered + 1, u64::MAX));
}

#[test]
fn an_engine_restart_is_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut e = Engine::open(&data, 4);
    writes(&mut e, 1, 3);
    let mut f = fresh(&data);
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &log(&e));
    let seen = f.next_seq() - 1;
    drop(e);

    let mut e = Engine::open(&data, 4);
    assert_eq!(e.base_seq, seen);
    assert_idle(&mut f);
    writes(&mut e, 10, 2);
    drop(e);
    let e2 = Engine::open(&data, 4); // restarted again: another empty segment
    drop(e2);
    let mut e = Engine::open(&data, 4);
    writes(&mut e, 20, 2);
    assert_eq!(segments(&data).len(), 4);

    let (out, p) = poll(&mut f);
    let got = frames(&out);
    let seqs: Vec<u64> = got.iter().map(|(e, _)| e.seq_no).collect();
    assert_eq!(
        seqs,
        (seen + 1..=e.log.lock().unwrap().last().unwrap().seq_no).collect::<Vec<_>>()
    );
    let b = p.batch.unwrap();
    assert_eq!((b.first_seq, b.last_seq), (seen + 1, *seqs.last().unwrap()));
    // The last frames are this engine's.
    assert_eq!(
        &got[got.len() - log(&e).len()..]
            .iter()
            .map(|(x, _)| x.clone())
            .collect::<Vec<_>>(),
        &log(&e)
    );
    assert_idle(&mut f);
}

#[test]
fn resume_continues_after_the_last_archived_frame() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut e = Engine::open(&data, 4);
    writes(&mut e, 1, 3);
    e.rotate();
    writes(&mut e, 10, 3);
    let all = log(&e);
    let last = all.last().unwrap().seq_no;

    for at in [1, 4, 5, last - 1, last] {
        let (mut f, start) = Follower::start(&data, Some(resume_at(&all, at))).unwrap();
        assert!(matches!(start, Start::Continues), "{at}: {start:?}");
        assert_eq!(f.next_seq(), at + 1);
        if at == last {
            assert_idle(&mut f);
        } else {
            let (out, p) = poll(&mut f);
            check(&out, p.batch, &entries(&all, at + 1, last));
        }
    }

    // And follows what comes next.
    let (mut f, _) = Follower::start(&data, Some(resume_at(&all, last))).unwrap();
    writes(&mut e, 20, 2);
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &entries(&log(&e), last + 1, u64::MAX));
}

#[test]
fn resume_at_the_snapshot_boundary_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut e = Engine::open(&data, 4);
    writes(&mut e, 1, 3);
    e.rotate();
    let all = log(&e);
    let last = all.last().unwrap().seq_no;
    e.snapshot(); // every frame so far is only in the snapshot now
    let (mut f, start) = Follower::start(&data, Some(resume_at(&all, last))).unwrap();
    assert!(matches!(start, Start::Continues), "{start:?}");
    assert_idle(&mut f);
    writes(&mut e, 10, 2);
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &entries(&log(&e), last + 1, u64::MAX));
}

#[test]
fn resume_in_another_history_diverged() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    let mut first = Engine::open(&one, 4);
    let mut second = Engine::open(&two, 4);
    for i in 1..=5 {
        first.insert(i, i);
        second.insert(i, i + 100);
    }
    let r = resume_at(&log(&first), 3);
    let (mut f, start) = Follower::start(&two, Some(r)).unwrap();
    assert!(matches!(start, Start::Diverged), "{start:?}");
    let mut out = Vec::new();
    let p = f.poll(&mut out, ALL).unwrap();
    assert!(p.diverged && p.batch.is_none() && out.is_empty());
    // The same resume point continues in its own directory.
    let (_, start) = Follower::start(&one, Some(r)).unwrap();
    assert!(matches!(start, Start::Continues), "{start:?}");
}

#[test]
fn resume_behind_a_compaction_is_a_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut e = Engine::open(&data, 4);
    writes(&mut e, 1, 4);
    let r = resume_at(&log(&e), 2);
    e.rotate();
    writes(&mut e, 10, 2);
    let covered = log(&e).last().unwrap().seq_no;
    e.snapshot(); // frames 3.. of the first segment are gone
    writes(&mut e, 20, 2);

    let (mut f, start) = Follower::start(&data, Some(r)).unwrap();
    let Start::Gap { snapshot } = start else {
        panic!("{start:?}")
    };
    assert_eq!(snapshot.last_wal_seq, covered);
    assert_eq!(snapshot.name, manifest(&data).snapshot_file().unwrap());
    assert_eq!(snapshot.timestamp, snapshot_timestamp(&snapshot.file));
    assert_eq!(f.next_seq(), covered + 1);
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &entries(&log(&e), covered + 1, u64::MAX));
    assert!(p.snapshot.is_none() && p.gap.is_none());
}

#[test]
fn resume_ahead_of_the_directory_diverged() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut e = Engine::open(&data, 4);
    writes(&mut e, 1, 3);
    let last = log(&e).last().unwrap().seq_no;
    let r = Resume {
        seq: last + 4,
        crc: 7,
    };
    let (mut f, start) = Follower::start(&data, Some(r)).unwrap();
    assert!(matches!(start, Start::Diverged), "{start:?}");
    assert!(poll(&mut f).1.diverged);

    // Behind a snapshot's last_wal_seq too.
    e.rotate();
    e.snapshot();
    let (_, start) = Follower::start(&data, Some(r)).unwrap();
    assert!(matches!(start, Start::Diverged), "{start:?}");
}

#[test]
fn a_directory_swapped_in_diverged() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let other = tmp.path().join("other");
    let mut e = Engine::open(&data, 4);
    writes(&mut e, 1, 3);
    let mut f = fresh(&data);
    let (out, p) = poll(&mut f);
    check(&out, p.batch, &log(&e));

    let mut swapped = Engine::open(&other, 4);
    writes(&mut swapped, 1, 5);
    fs::rename(&data, tmp.path().join("data.old")).unwrap();
    fs::rename(&other, &data).unwrap();
    for _ in 0..2 {
        let mut out = Vec::new();
        let p = f.poll(&mut out, ALL).unwrap();
        assert!(p.diverged, "{p:?}");
        assert!(out.is_empty() && p.batch.is_none() && p.snapshot.is_none() && p.gap.is_none());
    }
    // Starting again follows the new directory.
    let mut again = fresh(&data);
    let (out, p) = poll(&mut again);
    check(&out, p.batch, &log(&swapped));
}

#[test]
fn max_bytes_splits_batches_and_sets_more() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut e = Engine::open(&data, 4);
    for i in 1..=6 {
        e.insert(i, 5); // frames of one size
    }
    let all = log(&e);
    let size = frame_bytes(&all[0]).len();
    let mut f = fresh(&data);

    let mut out = Vec::new();
    let p = f.poll(&mut out, 2 * size + size / 2).unwrap();
    assert!(p.more);
    check(&out, p.batch, &all[..2]);

    // The limit counts what `out` already holds.
    let mut out = vec![0; size];
    let p = f.poll(&mut out, 3 * size).unwrap();
    assert!(p.more);
    check(&out[size..], p.batch, &all[2..4]);

    // At least one frame, however small the limit.
    let mut out = Vec::new();
    let p = f.poll(&mut out, 0).unwrap();
    assert!(p.more);
    check(&out, p.batch, &all[4..5]);

    // Exactly the rest fits.
    let mut out = Vec::new();
    let p = f.poll(&mut out, size).unwrap();
    assert!(!p.more);
    check(&out, p.batch, &all[5..]);
    assert_idle(&mut f);
}

#[test]
fn a_frame_with_a_bad_crc_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut e = Engine::open(&data, 4);
    writes(&mut e, 1, 3);
    let all = log(&e);
    let seg = segments(&data)[0].clone();
    let second = 4 + frame_bytes(&all[0]).len() as u64;
    let file = OpenOptions::new().write(true).open(&seg).unwrap();
    let mut b = [0u8];
    fs::File::open(&seg)
        .unwrap()
        .read_exact_at(&mut b, second + 12)
        .unwrap();
    file.write_all_at(&[b[0] ^ 0x40], second + 12).unwrap();

    let mut f = fresh(&data);
    let mut out = Vec::new();
    let p = f.poll(&mut out, ALL).unwrap();
    assert!(p.more, "the frames before it come first");
    check(&out, p.batch, &all[..1]);
    for _ in 0..2 {
        let err = f.poll(&mut out, ALL).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        assert!(err.contains(&format!("offset {second}")), "{err}");
        assert!(
            err.contains(&seg.file_name().unwrap().to_string_lossy().into_owned()),
            "{err}"
        );
        assert_eq!(f.next_seq(), 2, "never skipped");
    }
}

#[test]
fn a_legacy_wal_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    fs::create_dir(&data).unwrap();
    fs::copy(
        crate::support::fixtures().join("kyrodb/legacy/wal_v2.wal"),
        data.join("wal_1.wal"),
    )
    .unwrap();
    fs::write(
        data.join("MANIFEST"),
        DataDirManifest::modern(None, None, vec!["wal_1.wal".into()], 0).to_bytes(),
    )
    .unwrap();
    let err = Follower::start(&data, None).unwrap_err().to_string();
    assert!(err.contains("no sequence number"), "{err}");
    assert!(err.contains("wal_1.wal"), "{err}");
}

#[test]
fn a_fixture_directory_is_followed_from_its_snapshot() {
    for fixture in ["v4-basic", "v4-rotated", "v4-wal-only"] {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        copy_fixture_data(fixture, &data);
        let m = manifest(&data);
        let (mut f, start) = Follower::start(&data, None).unwrap();
        let Start::Fresh { snapshot } = start else {
            panic!("{start:?}")
        };
        let covered = snapshot.as_ref().map_or(0, |s| s.last_wal_seq);
        assert_eq!(snapshot.as_ref().map(|s| s.name.clone()), m.snapshot_file());
        if let Some(s) = &snapshot {
            assert_eq!(Some(s.last_wal_seq), m.latest_snapshot_wal_seq());
            assert_eq!(s.timestamp, snapshot_timestamp(&s.file));
        }
        // What the format crate's reader finds after the snapshot, byte for byte.
        let mut want = Vec::new();
        for seg in segments(&data) {
            let bytes = fs::read(&seg).unwrap();
            let mut rd = WalReader::new(bytes.as_slice()).unwrap();
            while let Some(fr) = rd.next_frame().unwrap() {
                if fr.entry.seq_no > covered {
                    want.extend_from_slice(&bytes[fr.offset as usize..fr.end() as usize]);
                }
            }
        }
        let (out, p) = poll(&mut f);
        assert_eq!(out, want, "{fixture}");
        assert!(
            !p.diverged && p.gap.is_none() && p.snapshot.is_none(),
            "{fixture}"
        );
        if let Some(b) = p.batch {
            assert_eq!(b.first_seq, covered + 1, "{fixture}");
        }
        assert_idle(&mut f);
    }
}

#[test]
fn a_manifest_without_the_snapshot_seq_is_completed_from_the_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_fixture_data("v4-basic", &data);
    let current = manifest(&data);
    let recorded = current.latest_snapshot_wal_seq().unwrap();
    let older =
        DataDirManifest::modern(current.snapshot_file(), None, current.wal_segments(&[]), 0);
    fs::write(data.join("MANIFEST"), older.to_bytes()).unwrap();
    let (mut f, start) = Follower::start(&data, None).unwrap();
    let Start::Fresh {
        snapshot: Some(s), ..
    } = start
    else {
        panic!("{start:?}")
    };
    assert_eq!(s.last_wal_seq, recorded);
    assert_eq!(f.next_seq(), recorded + 1);
    let (out, polled) = poll(&mut f);
    let batch = polled.batch.unwrap();
    assert_eq!(batch.first_seq, recorded + 1);
    assert_eq!(frames(&out).len() as u64, batch.frames);
}

/// What [`follow_a_busy_engine`] returns: the frames, the next sequence number, and how many
/// were skipped in gaps.
type Followed = (Vec<WalEntry>, u64, u64);

/// Polls until a poll that started after `done` was set finds nothing, checking every batch
/// and gap; `seen` tells what the follower last saw, for a watchdog.
fn follow_a_busy_engine(
    mut f: Follower,
    done: &std::sync::atomic::AtomicBool,
    seen: &std::sync::Mutex<String>,
    data: &Path,
) -> Followed {
    let mut got: Vec<WalEntry> = Vec::new();
    let mut next = 1;
    let mut skipped = 0;
    let mut polls = 0u64;
    let mut last = String::from("none");
    loop {
        let finished = done.load(std::sync::atomic::Ordering::SeqCst);
        *seen.lock().unwrap() = format!(
            "next_seq {}, {polls} polls (writer done: {finished}), the last poll {last}",
            f.next_seq()
        );
        let mut out = Vec::new();
        let p = f.poll(&mut out, 700).unwrap_or_else(|e| {
            panic!(
                "poll {polls} failed: {e}; next_seq {}, the last poll {last}; {}",
                f.next_seq(),
                dir_state(data)
            )
        });
        polls += 1;
        last = format!("{p:?}");
        if polls.is_multiple_of(3) {
            // A slower reader now and then, so compaction sometimes wins the race.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert!(!p.diverged, "{last}; {}", dir_state(data));
        let fr = frames(&out);
        if let Some(b) = p.batch {
            assert_eq!(b.first_seq, next, "{last}");
            assert_eq!(b.frames as usize, fr.len(), "{last}");
            next = b.last_seq + 1;
        }
        for (i, (x, _)) in fr.iter().enumerate() {
            assert_eq!(x.seq_no, next - fr.len() as u64 + i as u64);
        }
        got.extend(fr.into_iter().map(|(x, _)| x));
        if let Some(g) = &p.gap {
            assert!(g.last_wal_seq >= next, "{last}");
            skipped += g.last_wal_seq + 1 - next;
            next = g.last_wal_seq + 1;
        }
        assert_eq!(f.next_seq(), next, "{last}");
        if finished && !p.more && p.batch.is_none() && p.gap.is_none() {
            return (got, next, skipped);
        }
    }
}

/// The data directory as the follower sees it: the segments the MANIFEST lists (with the
/// snapshot it names) and every file with its size, for a failure message.
fn dir_state(dir: &Path) -> String {
    let listed = fs::read(dir.join("MANIFEST"))
        .map_err(|e| e.to_string())
        .and_then(|b| DataDirManifest::parse(&b).map_err(|e| e.to_string()))
        .map(|m| format!("{:?} after {:?}", m.wal_segments(&[]), m.snapshot_file()));
    let mut files: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let len = e.metadata().map_or(0, |m| m.len());
                    format!("{} ({len} B)", e.file_name().to_string_lossy())
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    format!("the MANIFEST lists {listed:?}; files {files:?}")
}

#[test]
fn a_busy_engine_is_followed_without_losing_or_repeating_frames() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    // However loaded the machine, the follower catches up soon after the writer stops. It runs
    // on its own thread, watched from this one: a poll that spins or blocks fails the test with
    // what the follower last saw instead of holding up the run.
    const CATCH_UP: Duration = Duration::from_secs(60);
    const IN_ALL: Duration = Duration::from_secs(600);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let e = Engine::open(&data, 4);
    let the_log = e.log.clone();
    let f = fresh(&data);
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut e = e;
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            for round in 0..40u64 {
                writes(&mut e, round * 100 + 10, 5);
                match round % 5 {
                    1 | 2 => e.rotate(),
                    3 => e.snapshot(),
                    _ => {}
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let seen = Arc::new(Mutex::new(String::from("no poll yet")));
    let follower = {
        let (done, seen, data) = (Arc::clone(&done), Arc::clone(&seen), data.clone());
        std::thread::spawn(move || follow_a_busy_engine(f, &done, &seen, &data))
    };
    let started = Instant::now();
    let mut stopped: Option<Instant> = None;
    let mut writer = Some(writer);
    while !follower.is_finished() {
        if writer
            .as_ref()
            .is_some_and(std::thread::JoinHandle::is_finished)
        {
            if let Err(p) = writer.take().unwrap().join() {
                std::panic::resume_unwind(p);
            }
            stopped = Some(Instant::now());
        }
        let late = stopped.is_some_and(|t| t.elapsed() > CATCH_UP) || started.elapsed() > IN_ALL;
        assert!(
            !late,
            "the follower did not catch up ({:?} since the start, writer done: {}): {}; {}",
            started.elapsed(),
            stopped.is_some(),
            seen.lock().unwrap(),
            dir_state(&data)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (got, next, skipped) = follower
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    if let Some(w) = writer {
        w.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
    }
    let all = the_log.lock().unwrap().clone();
    assert_eq!(next, all.last().unwrap().seq_no + 1, "{}", dir_state(&data));
    for x in &got {
        assert_eq!(x, &all[(x.seq_no - 1) as usize]);
    }
    // Every frame not returned is inside a gap.
    assert_eq!(got.len() as u64 + skipped, all.len() as u64);
}
