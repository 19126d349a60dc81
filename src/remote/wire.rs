//! Prometheus remote write 1.0 on the wire: the protobuf messages (`prometheus.WriteRequest`,
//! the fields receivers read) and snappy block compression.
//!
//! Each scrape is encoded once, when it is queued, as a `WriteRequest` of its own and stored
//! snappy-compressed. A request to the receiver is the concatenation of queued chunks: a
//! protobuf message whose only field is repeated is the concatenation of its parts, so chunks
//! are never decoded on the way out, only decompressed, joined and compressed again.

use bytes::Bytes;

use crate::samples::{Chunk, ScrapeSamples, Series};

/// `prometheus.WriteRequest` (field 3, metadata, is not sent).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`: labels sorted by name, `__name__` among them, and samples.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Samples in time order.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`. Its strings are held as [`Bytes`] (the same length-delimited field on
/// the wire): a scrape's name and target labels are shared by all its series without a copy,
/// and a sample's own labels are taken over from the exposition without one.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Name (UTF-8).
    #[prost(bytes = "bytes", tag = "1")]
    pub name: Bytes,
    /// Value (UTF-8).
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

impl Label {
    /// The name as text (empty if a receiver sent something that is not UTF-8).
    pub fn name(&self) -> &str {
        std::str::from_utf8(&self.name).unwrap_or("")
    }

    /// The value as text (empty if it is not UTF-8).
    pub fn value(&self) -> &str {
        std::str::from_utf8(&self.value).unwrap_or("")
    }
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Unix ms.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// A stored chunk that cannot be turned back into a request.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The stored bytes are not snappy (a damaged database page).
    #[error("a queued chunk is not valid snappy data: {0}")]
    Snappy(#[from] snap::Error),
}

/// One scrape as a compressed `WriteRequest` ready to queue.
pub fn encode_chunk(scrape: ScrapeSamples) -> Chunk {
    let samples = scrape.series.len() as u64;
    let ts = scrape.ts_ms;
    let shared = Shared::of(&scrape);
    let timeseries = scrape
        .series
        .into_iter()
        .map(|s| TimeSeries { samples: vec![Sample { value: s.value, timestamp: ts }], labels: shared.labels(s) })
        .collect();
    let raw = prost::Message::encode_to_vec(&WriteRequest { timeseries });
    Chunk { ts_ms: ts, samples, payload: compress(&raw) }
}

/// What every series of a scrape shares, each string allocated once.
struct Shared {
    name: Bytes,
    names: Vec<Bytes>,
    targets: Vec<Label>,
}

impl Shared {
    fn of(scrape: &ScrapeSamples) -> Self {
        let text = |s: &String| Bytes::copy_from_slice(s.as_bytes());
        Self {
            name: Bytes::from_static(b"__name__"),
            names: scrape.names.iter().map(text).collect(),
            targets: scrape.target_labels.iter().map(|(n, v)| Label { name: text(n), value: text(v) }).collect(),
        }
    }

    /// A series' labels as remote write sends them: `__name__`, its own and the target's,
    /// sorted by name; a target label wins over one of the series' own of the same name.
    fn labels(&self, s: Series) -> Vec<Label> {
        let mut labels = Vec::with_capacity(s.labels.len() + 1 + self.targets.len());
        for (n, v) in s.labels {
            if !self.targets.iter().any(|t| t.name == n.as_bytes()) {
                labels.push(Label { name: Bytes::from(n), value: Bytes::from(v) });
            }
        }
        let name = self.names.get(s.name).cloned().unwrap_or_default();
        labels.push(Label { name: self.name.clone(), value: name });
        labels.extend(self.targets.iter().cloned());
        labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        labels.dedup_by(|later, first| later.name == first.name);
        labels
    }
}

/// The body of one request: the chunks' payloads joined, snappy-compressed.
pub fn request_body<P: AsRef<[u8]>>(payloads: &[P]) -> Result<Vec<u8>, WireError> {
    let mut decoder = snap::raw::Decoder::new();
    let mut joined = Vec::new();
    for p in payloads {
        joined.extend_from_slice(&decoder.decompress_vec(p.as_ref())?);
    }
    Ok(compress(&joined))
}

/// Snappy block format (not the framed one), as remote write requires.
fn compress(raw: &[u8]) -> Vec<u8> {
    // Only inputs over about 4 GiB fail; a scrape is capped at 16 MiB and a request at a few
    // thousand samples.
    snap::raw::Encoder::new().compress_vec(raw).unwrap_or_default()
}

/// Decodes a request body (tests and receivers written in Rust).
pub fn decode_body(body: &[u8]) -> Result<WriteRequest, Box<dyn std::error::Error + Send + Sync>> {
    let raw = snap::raw::Decoder::new().decompress_vec(body)?;
    Ok(prost::Message::decode(raw.as_slice())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(ts_ms: i64, value: f64) -> ScrapeSamples {
        ScrapeSamples {
            ts_ms,
            target_labels: vec![("instance".into(), "10.0.0.1:8080".into()), ("variant".into(), "canary".into())],
            names: vec!["zai_proxy_requests_total".into(), "zai_proxy_max_workers".into()],
            series: vec![
                Series { name: 0, labels: vec![("status_code".into(), "200".into())], value },
                Series { name: 1, labels: vec![], value: 10.0 },
            ],
            left_out: 0,
        }
    }

    #[test]
    fn joined_chunks_decode_as_one_request() {
        let chunks: Vec<Chunk> =
            [(1_000, 5.0), (2_000, f64::NAN)].into_iter().map(|(ts, v)| encode_chunk(scrape(ts, v))).collect();
        assert_eq!(chunks[0].samples, 2);
        let payloads: Vec<&[u8]> = chunks.iter().map(|c| c.payload.as_slice()).collect();
        let req = decode_body(&request_body(&payloads).unwrap()).unwrap();
        assert_eq!(req.timeseries.len(), 4);
        let first = &req.timeseries[0];
        let labels: Vec<(&str, &str)> = first.labels.iter().map(|l| (l.name(), l.value())).collect();
        assert_eq!(
            labels,
            [
                ("__name__", "zai_proxy_requests_total"),
                ("instance", "10.0.0.1:8080"),
                ("status_code", "200"),
                ("variant", "canary")
            ]
        );
        assert_eq!(first.samples, vec![Sample { value: 5.0, timestamp: 1_000 }]);
        let later = &req.timeseries[2].samples[0];
        assert!(later.value.is_nan() && later.timestamp == 2_000);
    }

    #[test]
    fn a_damaged_chunk_is_an_error() {
        assert!(request_body(&[vec![0xff, 0xff, 0xff]]).is_err());
    }
}
