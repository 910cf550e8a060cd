//! The format crate against the engine's own files: every fixture decodes, recovers to the
//! state the engine recovered, re-encodes to the same bytes, and every damaged copy is an error.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use kyrodb_backup_format::engine::{
    recover, DataDirManifest, DirSource, DistanceMetric, FullState, LiveIds, RecoveryOptions,
    Snapshot, SnapshotLayout, SnapshotReader, WalLayout, WalOp, WalReader, WalWriter,
};
use kyrodb_backup_format::Error;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/kyrodb")
}

const V4: [&str; 3] = ["v4-basic", "v4-rotated", "v4-wal-only"];

fn files_of(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

fn all_snapshots() -> Vec<PathBuf> {
    let mut v = files_of(&fixtures().join("legacy"), "snap");
    for f in V4 {
        v.extend(files_of(&fixtures().join(f).join("data"), "snap"));
    }
    v
}

fn all_wals() -> Vec<PathBuf> {
    let mut v = files_of(&fixtures().join("legacy"), "wal");
    for f in V4 {
        v.extend(files_of(&fixtures().join(f).join("data"), "wal"));
    }
    v
}

fn expected(fixture: &str) -> Value {
    let v: Value =
        serde_json::from_slice(&fs::read(fixtures().join(fixture).join("expected.json")).unwrap())
            .unwrap();
    FullState::from_expected_json(&v)
        .unwrap()
        .to_expected_json()
}

/// Decodes a WAL strictly: every frame, and a torn tail is an error.
fn read_wal_strict(bytes: &[u8]) -> Result<Vec<kyrodb_backup_format::engine::WalFrame>, Error> {
    let mut r = WalReader::new(bytes)?;
    let mut frames = Vec::new();
    while let Some(f) = r.next_frame()? {
        frames.push(f);
    }
    if r.torn() {
        return Err(Error::Truncated {
            what: "WAL frame",
            offset: r.valid_len(),
        });
    }
    Ok(frames)
}

#[test]
fn every_v4_fixture_recovers_to_the_state_the_engine_recovered() {
    for fixture in V4 {
        let mut state = FullState::default();
        let report = recover(
            &mut DirSource::new(fixtures().join(fixture).join("data")),
            &mut state,
            &RecoveryOptions {
                torn_tail_is_error: true,
            },
        )
        .unwrap();
        assert_eq!(state.to_expected_json(), expected(fixture), "{fixture}");
        assert_eq!(report.dimension, Some(8), "{fixture}");
        let mut ids = LiveIds::default();
        recover(
            &mut DirSource::new(fixtures().join(fixture).join("data")),
            &mut ids,
            &RecoveryOptions::default(),
        )
        .unwrap();
        assert_eq!(
            ids.len(),
            state.docs.len(),
            "{fixture}: LiveIds counts alike"
        );
    }
}

#[test]
fn v4_fixtures_carry_their_metric_and_wal_coverage() {
    let metric = |f: &str| {
        let mut s = LiveIds::default();
        recover(
            &mut DirSource::new(fixtures().join(f).join("data")),
            &mut s,
            &RecoveryOptions::default(),
        )
        .unwrap()
    };
    let basic = metric("v4-basic");
    assert_eq!(basic.distance, Some(DistanceMetric::Cosine));
    let (_, info) = basic.snapshot.unwrap();
    assert_eq!(info.layout, SnapshotLayout::V4);
    assert_eq!(info.last_wal_seq, 50);
    let seg = &basic.segments[0];
    assert_eq!(seg.first_seq, Some(1));
    assert!(
        seg.applied > 0 && seg.applied < seg.entries,
        "some entries skipped by seq"
    );
    assert_eq!(
        metric("v4-rotated").distance,
        Some(DistanceMetric::Euclidean)
    );
    let walonly = metric("v4-wal-only");
    assert!(walonly.snapshot.is_none());
    assert_eq!(walonly.distance, None, "no snapshot, no metric on disk");
}

#[test]
fn legacy_snapshots_decode_to_their_layouts_and_contents() {
    let dir = fixtures().join("legacy");
    let exp: Value = serde_json::from_slice(&fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let docs: Vec<(u64, Vec<f32>)> = exp["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let emb = d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            (d["id"].as_u64().unwrap(), emb)
        })
        .collect();
    let meta: BTreeMap<u64, BTreeMap<String, String>> = exp["metadata"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let map = m["metadata"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            (m["id"].as_u64().unwrap(), map)
        })
        .collect();
    let cases = [
        ("snapshot_v1.snap", SnapshotLayout::V1),
        ("snapshot_v2.snap", SnapshotLayout::LegacyV2),
        ("snapshot_v2_distance.snap", SnapshotLayout::V2WithMetric),
        ("snapshot_v3.snap", SnapshotLayout::V3),
        ("snapshot_v3_ann.snap", SnapshotLayout::V3WithAnn),
    ];
    for (file, layout) in cases {
        let s = Snapshot::read(fs::File::open(dir.join(file)).unwrap()).unwrap();
        assert_eq!(s.layout, layout, "{file}");
        assert_eq!(
            s.timestamp,
            exp["snapshot_timestamp"].as_u64().unwrap(),
            "{file}"
        );
        assert_eq!(s.dimension, exp["dimension"].as_u64().unwrap(), "{file}");
        assert_eq!(s.documents, docs, "{file}");
        if layout == SnapshotLayout::V1 {
            assert!(s.metadata.is_empty());
        } else {
            let got: BTreeMap<u64, BTreeMap<String, String>> = s
                .metadata
                .iter()
                .map(|(id, m)| (*id, m.iter().cloned().collect()))
                .collect();
            assert_eq!(got, meta, "{file}");
        }
        match layout {
            SnapshotLayout::V1 | SnapshotLayout::LegacyV2 => assert_eq!(s.distance, None),
            SnapshotLayout::V2WithMetric => assert!(s.distance.is_some()),
            _ => {}
        }
        if layout == SnapshotLayout::V3WithAnn {
            assert!(s.ann_search_mode.is_some() || s.quantized_rerank_multiplier.is_some());
        }
    }
}

#[test]
fn legacy_wal_segments_decode_to_their_entries() {
    let dir = fixtures().join("legacy");
    let exp: Value = serde_json::from_slice(&fs::read(dir.join("expected.json")).unwrap()).unwrap();
    for (file, key, layout) in [
        ("wal_v1.wal", "wal_v1", WalLayout::W1),
        ("wal_v2.wal", "wal_v2", WalLayout::W2),
    ] {
        let frames = read_wal_strict(&fs::read(dir.join(file)).unwrap()).unwrap();
        let want = exp[key].as_array().unwrap();
        assert_eq!(frames.len(), want.len(), "{file}");
        for (f, w) in frames.iter().zip(want) {
            assert_eq!(f.layout, layout, "{file}");
            let e = &f.entry;
            let op = match e.op {
                WalOp::Insert => "insert",
                WalOp::Delete => "delete",
                WalOp::UpdateMetadata => "update_metadata",
            };
            assert_eq!(op, w["op"], "{file}");
            assert_eq!(e.doc_id, w["doc_id"].as_u64().unwrap());
            assert_eq!(e.timestamp, w["timestamp"].as_u64().unwrap());
            assert_eq!(e.seq_no, 0, "legacy entries have no sequence number");
            let emb: Vec<f32> = w["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(e.embedding, emb);
            let meta: BTreeMap<String, String> = w["metadata"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(e.metadata.iter().cloned().collect::<BTreeMap<_, _>>(), meta);
        }
    }
}

#[test]
fn every_snapshot_and_wal_re_encodes_to_the_same_bytes() {
    for path in all_snapshots() {
        let bytes = fs::read(&path).unwrap();
        let s = Snapshot::read(bytes.as_slice()).unwrap();
        let mut out = Vec::new();
        s.write(&mut out).unwrap();
        assert_eq!(out, bytes, "{}", path.display());
    }
    for path in all_wals() {
        let bytes = fs::read(&path).unwrap();
        let frames = read_wal_strict(&bytes).unwrap();
        let mut w = WalWriter::new(Vec::new()).unwrap();
        for f in &frames {
            w.append(&f.entry, f.layout).unwrap();
        }
        assert_eq!(w.into_inner(), bytes, "{}", path.display());
    }
    for f in V4 {
        let bytes = fs::read(fixtures().join(f).join("data/MANIFEST")).unwrap();
        let m = DataDirManifest::parse(&bytes).unwrap();
        assert_eq!(m.to_bytes(), bytes, "{f}/MANIFEST");
    }
}

#[test]
fn every_flipped_byte_of_a_snapshot_or_wal_is_an_error() {
    for path in all_snapshots() {
        let bytes = fs::read(&path).unwrap();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0xFF;
            let r = Snapshot::read(bad.as_slice());
            assert!(
                r.is_err(),
                "{} byte {i}: damage not detected",
                path.display()
            );
        }
    }
    for path in all_wals() {
        let bytes = fs::read(&path).unwrap();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0xFF;
            assert!(
                read_wal_strict(&bad).is_err(),
                "{} byte {i}: damage not detected",
                path.display()
            );
        }
    }
}

#[test]
fn truncation_is_an_error_for_snapshots_and_a_whole_frame_prefix_for_the_engine() {
    for path in all_snapshots() {
        let bytes = fs::read(&path).unwrap();
        for n in 0..bytes.len() {
            assert!(
                Snapshot::read(&bytes[..n]).is_err(),
                "{} cut at {n}",
                path.display()
            );
        }
    }
    for path in all_wals() {
        let bytes = fs::read(&path).unwrap();
        let full = read_wal_strict(&bytes).unwrap();
        let ends: Vec<u64> = std::iter::once(4)
            .chain(full.iter().map(kyrodb_backup_format::engine::WalFrame::end))
            .collect();
        for n in 0..bytes.len() {
            let cut = &bytes[..n];
            if n < 4 {
                assert!(WalReader::new(cut).is_err());
                continue;
            }
            let mut r = WalReader::new(cut).unwrap();
            let mut frames = Vec::new();
            while let Some(f) = r.next_frame().unwrap() {
                frames.push(f);
            }
            assert!(
                ends.contains(&r.valid_len()),
                "valid_len on a frame boundary"
            );
            assert_eq!(frames[..], full[..frames.len()], "a prefix of the frames");
            assert_eq!(
                r.torn(),
                !ends.contains(&(n as u64)),
                "{} cut at {n}",
                path.display()
            );
            if r.torn() {
                assert!(read_wal_strict(cut).is_err());
            }
        }
    }
}

fn copy_data(fixture: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for e in fs::read_dir(fixtures().join(fixture).join("data")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
    }
    tmp
}

#[test]
fn a_damaged_file_in_a_data_dir_is_an_error_naming_the_file() {
    let tmp = copy_data("v4-rotated");
    let m: Value = serde_json::from_slice(&fs::read(tmp.path().join("MANIFEST")).unwrap()).unwrap();
    let mut names = vec![m["latest_snapshot"].as_str().unwrap().to_string()];
    names.extend(
        m["wal_segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().to_string()),
    );
    for name in names {
        let path = tmp.path().join(&name);
        let original = fs::read(&path).unwrap();
        let mut bad = original.clone();
        let at = bad.len() / 2;
        bad[at] ^= 0x10;
        fs::write(&path, &bad).unwrap();
        let err = recover(
            &mut DirSource::new(tmp.path()),
            &mut LiveIds::default(),
            &RecoveryOptions::default(),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with(&name), "{err}");
        fs::write(&path, &original).unwrap();
    }
    fs::write(tmp.path().join("MANIFEST"), b"{\"version\": 1,").unwrap();
    let err = recover(
        &mut DirSource::new(tmp.path()),
        &mut LiveIds::default(),
        &RecoveryOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("MANIFEST:"), "{err}");
}

#[test]
fn a_listed_segment_that_is_missing_stops_recovery() {
    let tmp = copy_data("v4-basic");
    let wal = files_of(tmp.path(), "wal").remove(0);
    fs::remove_file(&wal).unwrap();
    let err = recover(
        &mut DirSource::new(tmp.path()),
        &mut LiveIds::default(),
        &RecoveryOptions::default(),
    )
    .unwrap_err()
    .to_string();
    let name = wal.file_name().unwrap().to_string_lossy().into_owned();
    assert!(err.contains(&name) && err.contains("missing"), "{err}");
}

#[test]
fn the_plain_text_manifest_layout_replays_every_wal_in_id_order() {
    let tmp = tempfile::tempdir().unwrap();
    let legacy = fixtures().join("legacy");
    fs::copy(
        legacy.join("snapshot_v1.snap"),
        tmp.path().join("snapshot_7"),
    )
    .unwrap();
    // W1 segment first by id, W2 second; the text MANIFEST names no segments.
    fs::copy(legacy.join("wal_v1.wal"), tmp.path().join("wal_9.wal")).unwrap();
    fs::copy(legacy.join("wal_v2.wal"), tmp.path().join("wal_10.wal")).unwrap();
    fs::write(tmp.path().join("MANIFEST"), "snapshot_number: 7\n").unwrap();
    let mut state = FullState::default();
    let report = recover(
        &mut DirSource::new(tmp.path()),
        &mut state,
        &RecoveryOptions::default(),
    )
    .unwrap();
    let order: Vec<&str> = report.segments.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(order, ["wal_9.wal", "wal_10.wal"]);
    let exp: Value =
        serde_json::from_slice(&fs::read(legacy.join("expected.json")).unwrap()).unwrap();
    // Legacy entries are applied when newer than the snapshot: 60 inserted, 10 deleted (W1);
    // 20 gets metadata {"tag": "x"} (W2). Ids 30, 40, 50 stay.
    assert!(exp["wal_v1"][0]["timestamp"].as_u64() > exp["snapshot_timestamp"].as_u64());
    let ids: Vec<u64> = state.docs.keys().copied().collect();
    assert_eq!(ids, [20, 30, 40, 50, 60]);
    assert_eq!(
        state.docs[&20].metadata.get("tag").map(String::as_str),
        Some("x")
    );
    assert_eq!(
        DataDirManifest::parse(b"snapshot_number: 7\n")
            .unwrap()
            .to_bytes(),
        b"snapshot_number: 7\n"
    );
}

#[test]
fn snapshot_reader_streams_documents_with_the_header_first() {
    let path = fixtures().join("v4-basic/data/snapshot_1795529686028651.snap");
    let mut r = SnapshotReader::new(fs::File::open(path).unwrap()).unwrap();
    assert_eq!(r.header().version, 4);
    assert_eq!(r.header().dimension, 8);
    let mut n = 0;
    while let Some((_, emb)) = r.next_document().unwrap() {
        assert_eq!(emb.len(), 8);
        n += 1;
    }
    assert_eq!(n, r.header().documents);
    let info = r.finish().unwrap();
    assert_eq!(info.layout, SnapshotLayout::V4);
    assert_eq!(info.doc_count, n);
}

#[test]
fn lying_lengths_cost_no_memory_beyond_the_bytes_present() {
    // Found by `cargo xtask fuzz`: a payload length and an embedding length of 2^60 made the
    // reader allocate before reading. Now it reads what is there and reports the truncation.
    let mut b = Vec::new();
    b.extend_from_slice(&kyrodb_backup_format::engine::SNAPSHOT_MAGIC.to_le_bytes());
    b.extend_from_slice(&u64::MAX.to_le_bytes()); // payload length
    b.extend_from_slice(&4u32.to_le_bytes()); // version
    b.extend_from_slice(&[0; 24]); // timestamp, doc_count, dimension
    b.extend_from_slice(&1u64.to_le_bytes()); // one document
    b.extend_from_slice(&7u64.to_le_bytes()); // its id
    b.extend_from_slice(&(1u64 << 60).to_le_bytes()); // its embedding length
    b.extend_from_slice(&[0; 64]);
    let err = Snapshot::read(b.as_slice()).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn the_id_only_path_catches_every_flipped_byte_too() {
    for path in all_snapshots() {
        let bytes = fs::read(&path).unwrap();
        let read_ids = |b: &[u8]| -> Result<u64, Error> {
            let mut r = SnapshotReader::new(b)?;
            let mut n = 0;
            while r.next_document_id()?.is_some() {
                n += 1;
            }
            r.finish()?;
            Ok(n)
        };
        assert!(read_ids(&bytes).is_ok(), "{}", path.display());
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0xFF;
            assert!(read_ids(&bad).is_err(), "{} byte {i}", path.display());
        }
    }
}
