//! Prometheus remote write 1.0 on the wire: the protobuf messages (`prometheus.WriteRequest`,
//! the fields receivers read; written by hand on the way out, decoded with prost) and snappy
//! block compression.
//!
//! Each scrape is encoded once, when it is queued, as a `WriteRequest` of its own and stored
//! snappy-compressed. A request to the receiver is the concatenation of queued chunks: a
//! protobuf message whose only field is repeated is the concatenation of its parts, so chunks
//! are never decoded on the way out, only decompressed, joined and compressed again.

use crate::ports::samples::{Chunk, ScrapeSamples, Series};

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

/// `prometheus.Label`. Only decoding uses these structs (tests, receivers written in Rust):
/// [`encode_chunk`] writes the same bytes without them.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

impl Label {
    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value.
    #[cfg(test)]
    pub(crate) fn value(&self) -> &str {
        &self.value
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
///
/// Written straight into one buffer rather than through the [`WriteRequest`] structs: those
/// need two vectors and a string conversion per label for every series, and encoding is the
/// largest cost of remote write (BENCHMARKS.md). The bytes are prost's own for the same message
/// (`the_hand_written_encoding_is_prost_s`), down to the default values proto3 leaves out.
pub fn encode_chunk(scrape: ScrapeSamples) -> Chunk {
    let ScrapeSamples { ts_ms, target_labels, names, series, .. } = scrape;
    let mut raw = Vec::with_capacity(series.len() * 160);
    let mut labels: Vec<(&str, &str)> = Vec::new();
    for s in &series {
        series_labels(&mut labels, s, &names, &target_labels);
        write_series(&mut raw, &labels, s.value, ts_ms);
    }
    Chunk { ts_ms, samples: series.len() as u64, payload: compress(&raw) }
}

/// A series' labels as remote write sends them: `__name__`, its own and the target's, sorted
/// by name; a target label wins over one of the series' own of the same name.
fn series_labels<'a>(
    out: &mut Vec<(&'a str, &'a str)>,
    s: &'a Series,
    names: &'a [String],
    targets: &'a [(String, String)],
) {
    out.clear();
    let own = s.labels.iter().filter(|(n, _)| !targets.iter().any(|(t, _)| t == n));
    out.extend(own.map(|(n, v)| (n.as_str(), v.as_str())));
    out.push(("__name__", names.get(s.name).map_or("", String::as_str)));
    out.extend(targets.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    out.sort_by(|a, b| a.0.cmp(b.0));
    out.dedup_by(|later, first| later.0 == first.0);
}

/// Tag bytes (field number << 3 | wire type) of the fields written here, all below 16.
const TIMESERIES: u8 = 1 << 3 | 2;
const LABELS: u8 = 1 << 3 | 2;
const SAMPLES: u8 = 2 << 3 | 2;
const NAME: u8 = 1 << 3 | 2;
const VALUE_TEXT: u8 = 2 << 3 | 2;
const VALUE: u8 = 1 << 3 | 1;
const TIMESTAMP: u8 = 2 << 3;

/// One `TimeSeries` (field 1 of `WriteRequest`) with one sample.
fn write_series(out: &mut Vec<u8>, labels: &[(&str, &str)], value: f64, ts_ms: i64) {
    let label_len = |(n, v): &(&str, &str)| text_len(n) + text_len(v);
    let sample_len = if value != 0.0 { 9 } else { 0 } + if ts_ms != 0 { 1 + varint_len(ts_ms as u64) } else { 0 };
    let series_len = labels.iter().map(|l| delimited_len(label_len(l))).sum::<usize>() + delimited_len(sample_len);
    delimit(out, TIMESERIES, series_len);
    for l in labels {
        delimit(out, LABELS, label_len(l));
        text(out, NAME, l.0);
        text(out, VALUE_TEXT, l.1);
    }
    delimit(out, SAMPLES, sample_len);
    if value != 0.0 {
        out.push(VALUE);
        out.extend_from_slice(&value.to_le_bytes());
    }
    if ts_ms != 0 {
        out.push(TIMESTAMP);
        prost::encoding::encode_varint(ts_ms as u64, out);
    }
}

fn varint_len(n: u64) -> usize {
    prost::encoding::encoded_len_varint(n)
}

/// Bytes of a length-delimited field holding `len` bytes: tag, length, content.
fn delimited_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Bytes of a string field (absent when empty, as proto3 writes it).
fn text_len(s: &str) -> usize {
    if s.is_empty() { 0 } else { delimited_len(s.len()) }
}

fn delimit(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    prost::encoding::encode_varint(len as u64, out);
}

fn text(out: &mut Vec<u8>, tag: u8, s: &str) {
    if !s.is_empty() {
        delimit(out, tag, s.len());
        out.extend_from_slice(s.as_bytes());
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

    /// What prost writes for the same scrape, through the structs.
    fn through_prost(scrape: &ScrapeSamples) -> Vec<u8> {
        let mut labels = Vec::new();
        let timeseries = scrape
            .series
            .iter()
            .map(|s| {
                series_labels(&mut labels, s, &scrape.names, &scrape.target_labels);
                TimeSeries {
                    labels: labels.iter().map(|(n, v)| Label { name: (*n).into(), value: (*v).into() }).collect(),
                    samples: vec![Sample { value: s.value, timestamp: scrape.ts_ms }],
                }
            })
            .collect();
        prost::Message::encode_to_vec(&WriteRequest { timeseries })
    }

    #[test]
    fn the_hand_written_encoding_is_prost_s() {
        let expo = crate::scrape::parse::parse(include_str!("../../tests/fixtures/zai-proxy-sample.prom")).unwrap();
        let mut fixture = crate::scrape::outbound::collect(expo, 1_764_500_000_123, "canary", "10.0.0.1:8080");
        fixture.series[0].value = 0.0; // defaults proto3 leaves out
        fixture.series[1].labels.push(("empty".into(), String::new()));
        fixture.series[1].labels.push(("variant".into(), "own".into())); // the target's wins
        let mut edge = scrape(0, -0.0);
        edge.series[1].value = f64::NAN;
        edge.series[1].name = 9; // no such name: an empty __name__ (never built so)
        for s in [fixture, edge, scrape(-5, f64::INFINITY)] {
            let want = through_prost(&s);
            let got = snap::raw::Decoder::new().decompress_vec(&encode_chunk(s).payload).unwrap();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn a_damaged_chunk_is_an_error() {
        assert!(request_body(&[vec![0xff, 0xff, 0xff]]).is_err());
    }
}
