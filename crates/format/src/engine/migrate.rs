//! Migrating legacy snapshots and WAL entries to the current layouts.

use std::collections::HashSet;
use std::io::{Read, Write};

use crate::engine::bincode::Out;
use crate::{DistanceMetric, Error, Result, SnapshotInfo, SnapshotReader};

/// What a first pass over a snapshot learned, for choosing a metric and sizing the V4 file.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotSurvey {
    /// The snapshot's own description.
    pub info: SnapshotInfo,
    /// Documents whose embedding has an L2 norm within 1e-3 of 1.
    pub unit_norm: u64,
    /// Bytes the metadata section of the V4 payload will take.
    metadata_bytes: u64,
    /// Document ids that have a metadata entry.
    with_metadata: HashSet<u64>,
    /// Metadata entries for ids that are not documents (dropped by the migration).
    pub orphan_metadata: u64,
}

impl SnapshotSurvey {
    /// Share of vectors with unit norm (1.0 for an empty snapshot).
    pub fn unit_norm_share(&self) -> f64 {
        if self.info.documents == 0 {
            1.0
        } else {
            self.unit_norm as f64 / self.info.documents as f64
        }
    }
}

fn metadata_len(m: &crate::Metadata) -> u64 {
    8 + m
        .iter()
        .map(|(k, v)| 16 + k.len() as u64 + v.len() as u64)
        .sum::<u64>()
}

/// Reads a snapshot of any layout once, streaming: validates it and gathers what a migration
/// and the operator need (layout, stored metric, norms).
///
/// # Errors
///
/// When the snapshot does not decode.
pub fn survey_snapshot(r: impl Read) -> Result<SnapshotSurvey> {
    let mut rd = SnapshotReader::new(r)?;
    let mut ids = HashSet::new();
    let mut unit_norm = 0;
    while let Some((id, emb)) = rd.next_document()? {
        let norm = emb
            .iter()
            .map(|x| f64::from(*x) * f64::from(*x))
            .sum::<f64>()
            .sqrt();
        if (norm - 1.0).abs() <= 1e-3 {
            unit_norm += 1;
        }
        ids.insert(id);
    }
    let mut with_metadata = HashSet::new();
    let mut metadata_bytes = 0;
    let mut orphan_metadata = 0;
    while let Some((id, m)) = rd.next_metadata()? {
        if ids.contains(&id) && with_metadata.insert(id) {
            metadata_bytes += 8 + metadata_len(&m);
        } else {
            orphan_metadata += 1;
        }
    }
    let info = rd.finish()?;
    // Documents without metadata get an empty map (8-byte id, 8-byte length).
    metadata_bytes += (ids.len() - with_metadata.len()) as u64 * 16;
    Ok(SnapshotSurvey {
        info,
        unit_norm,
        metadata_bytes,
        with_metadata,
        orphan_metadata,
    })
}

/// Decides the metric of a migrated snapshot: the one the snapshot stores wins; a `requested`
/// one that contradicts it is refused; with neither, `None` (the caller assumes cosine and
/// warns).
///
/// # Errors
///
/// [`Error::MetricConflict`](crate::Error::MetricConflict) when `requested` contradicts `stored`.
pub fn choose_metric(
    stored: Option<DistanceMetric>,
    requested: Option<DistanceMetric>,
) -> Result<Option<DistanceMetric>> {
    match (stored, requested) {
        (Some(s), Some(r)) if s != r => Err(Error::MetricConflict {
            stored: s,
            requested: r,
        }),
        (Some(s), _) => Ok(Some(s)),
        (None, r) => Ok(r),
    }
}

/// Rewrites a snapshot of any layout as V4 with `distance`, streaming: `second_pass` must read
/// the same bytes that [`survey_snapshot`] surveyed. Ids, vectors, metadata (an empty map for
/// documents without one, as V1 has none), the timestamp and `last_wal_seq` (0 where the
/// layout had none) are preserved; `doc_count` becomes the number of documents.
///
/// # Errors
///
/// When the legacy snapshot does not decode as surveyed, or the writer fails.
pub fn write_migrated_snapshot(
    survey: &SnapshotSurvey,
    second_pass: impl Read,
    distance: DistanceMetric,
    mut out: impl Write,
) -> Result<()> {
    let info = &survey.info;
    let docs = info.documents;
    let dim = info.dimension;
    let mut rd = SnapshotReader::new(second_pass)?;
    // Sizes: header fields, documents, metadata, metric and last_wal_seq.
    let mut doc_bytes = 0u64;
    let payload_len_without_docs = 4 + 8 + 8 + 8 + 8 + 8 + survey.metadata_bytes + 4 + 8;
    // Document sizes vary only with embedding length, which V4 fixes to `dim`.
    if docs > 0 && dim == 0 {
        return Err(Error::Malformed {
            what: "snapshot",
            offset: 0,
            detail: "documents with dimension 0 cannot be migrated".into(),
        });
    }
    doc_bytes += docs * (16 + 4 * dim);
    let payload_len = payload_len_without_docs + doc_bytes;
    out.write_all(&crate::SNAPSHOT_MAGIC.to_le_bytes())?;
    out.write_all(&payload_len.to_le_bytes())?;
    let mut crc = crc32fast::Hasher::new();
    let mut put = |out: &mut dyn Write, b: &[u8]| -> Result<()> {
        crc.update(b);
        out.write_all(b)?;
        Ok(())
    };
    let mut p = Out::default();
    p.u32(4);
    p.u64(info.timestamp);
    p.u64(docs);
    p.u64(dim);
    p.u64(docs);
    put(&mut out, &p.0)?;
    let mut order = Vec::with_capacity(docs.min(1 << 20) as usize);
    while let Some((id, emb)) = rd.next_document()? {
        if emb.len() as u64 != dim {
            return Err(Error::Malformed {
                what: "snapshot",
                offset: 0,
                detail: format!("document {id} has {} values, not {dim}", emb.len()),
            });
        }
        let mut p = Out::default();
        p.u64(id);
        p.f32_vec(&emb);
        put(&mut out, &p.0)?;
        order.push(id);
    }
    put(&mut out, &docs.to_le_bytes())?;
    let mut written = HashSet::new();
    while let Some((id, m)) = rd.next_metadata()? {
        if survey.with_metadata.contains(&id) && written.insert(id) {
            let mut p = Out::default();
            p.u64(id);
            p.metadata(&m);
            put(&mut out, &p.0)?;
        }
    }
    let _ = rd.finish()?;
    for id in order.iter().filter(|id| !written.contains(id)) {
        let mut p = Out::default();
        p.u64(*id);
        p.u64(0);
        put(&mut out, &p.0)?;
    }
    let mut p = Out::default();
    p.u32(distance.index());
    p.u64(info.last_wal_seq);
    put(&mut out, &p.0)?;
    out.write_all(&crc.finalize().to_le_bytes())?;
    Ok(())
}
