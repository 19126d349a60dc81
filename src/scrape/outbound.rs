//! A scrape's `zai_proxy_*` series as remote write ships them: every sample as scraped, named
//! as in the exposition, with the target's resolved `variant` and its `instance`.
//!
//! Labels follow what a Prometheus scraping the pod would store, so dashboards and rules work
//! on either: `instance` is the target's `host:port` (an exposition's own `instance` label
//! becomes `exported_instance`, as Prometheus renames it), labels with an empty value are
//! absent. `variant` is the one zai-dash resolved (explicit name, label or URL rule), so a
//! pod without the label still lands in its variant.
//!
//! Label values are cut to 128 bytes as the collector stores them, so the samples waiting in the
//! queue stay small and a receiver sees the model names the dashboard shows. Series that become
//! equal once cut are sent as one, their values added up: two samples of one series at one time
//! would make a receiver refuse the whole request.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use url::Url;

use super::parse::{Exposition, Labels, SampleKind};
use super::reading::MAX_SERIES;
use crate::expo::cut_label_value;
use crate::ports::samples::{ScrapeSamples, Series};

/// The samples of every `zai_proxy_*` family, at most [`MAX_SERIES`] (the rest are counted in
/// `left_out`), stamped `ts_ms`. Takes the exposition, which the scrape is done with, so each
/// sample's labels move over instead of being copied, and leaves the rest (adding `__name__`
/// and the target's labels, sorting) to the remote writer: this runs on the scrape path.
pub fn collect(expo: Exposition<'_>, ts_ms: i64, variant: &str, instance: &str) -> ScrapeSamples {
    let mut out = ScrapeSamples {
        ts_ms,
        target_labels: vec![("instance".to_owned(), instance.to_owned()), ("variant".to_owned(), variant.to_owned())],
        ..ScrapeSamples::default()
    };
    let mut cut = false;
    for fam in expo.families.into_iter().filter(|f| f.name.starts_with("zai_proxy_")) {
        let mut names = [None; 4];
        for s in fam.samples {
            if out.series.len() >= MAX_SERIES {
                out.left_out += 1;
                continue;
            }
            let (slot, suffix) = suffix(s.kind);
            let name = *names[slot].get_or_insert_with(|| {
                out.names.push(format!("{}{suffix}", fam.name));
                out.names.len() - 1
            });
            let (labels, cut_here) = own_labels(&s.labels);
            cut |= cut_here;
            out.series.push(Series { name, labels, value: s.value });
        }
    }
    if cut {
        merge_equal_series(&mut out.series);
    }
    out
}

/// The sample's labels as a Prometheus scrape keeps them: empty ones are absent, `instance`
/// becomes `exported_instance` (the target's `instance` is added later), `variant` and
/// `__name__` give way to the resolved variant and the sample's name. Values are cut to 128
/// bytes; the flag says whether one was. The only copy of the labels on the scrape path, made
/// because the remote writer keeps them after the body is gone.
fn own_labels(labels: &Labels<'_>) -> (Vec<(String, String)>, bool) {
    let mut cut = false;
    let kept = labels
        .iter()
        .filter(|(n, v)| !v.is_empty() && *n != "variant" && *n != "__name__")
        .map(|(n, v)| {
            let name = if n == "instance" { "exported_instance" } else { n };
            let value = cut_label_value(v).inspect(|_| cut = true).unwrap_or(v);
            (name.to_owned(), value.to_owned())
        })
        .collect();
    (kept, cut)
}

/// Series with the same name and labels (only cut values make them so) become the first of
/// them, holding the sum of their values.
fn merge_equal_series(series: &mut Vec<Series>) {
    let mut first: HashMap<(usize, Vec<(String, String)>), usize> = HashMap::new();
    let mut kept: Vec<Series> = Vec::with_capacity(series.len());
    for s in series.drain(..) {
        let mut labels = s.labels.clone();
        labels.sort();
        match first.entry((s.name, labels)) {
            Entry::Occupied(e) => kept[*e.get()].value += s.value,
            Entry::Vacant(e) => {
                e.insert(kept.len());
                kept.push(s);
            }
        }
    }
    *series = kept;
}

/// Which of a family's sample names a sample has, and its suffix.
fn suffix(kind: SampleKind) -> (usize, &'static str) {
    match kind {
        SampleKind::Value | SampleKind::Quantile => (0, ""),
        SampleKind::Bucket => (1, "_bucket"),
        SampleKind::Sum => (2, "_sum"),
        SampleKind::Count => (3, "_count"),
    }
}

/// `host:port` of a target URL, the port explicit even when it is the scheme's default (as
/// Prometheus' `instance` label is).
pub fn instance(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::parse::parse;

    const SAMPLE: &str = include_str!("../../tests/fixtures/zai-proxy-sample.prom");

    #[test]
    fn the_instance_label_never_holds_the_urls_credentials() {
        let url = Url::parse("http://user:pw@pod.example:9090/metrics?token=t").unwrap();
        assert_eq!(instance(&url), "pod.example:9090");
        assert_eq!(instance(&Url::parse("https://u:p@pod/metrics").unwrap()), "pod:443");
    }

    #[test]
    fn every_zai_proxy_sample_with_its_name_and_the_target_labels() {
        let expo = parse(SAMPLE).unwrap();
        let expected: usize =
            expo.families.iter().filter(|f| f.name.starts_with("zai_proxy_")).map(|f| f.samples.len()).sum();
        let out = collect(expo, 42, "canary", "10.0.0.7:8080");
        assert_eq!(out.series.len(), expected);
        assert_eq!(
            out.target_labels,
            [("instance".to_owned(), "10.0.0.7:8080".to_owned()), ("variant".to_owned(), "canary".to_owned())]
        );
        let bucket = out.names.iter().position(|n| n == "zai_proxy_request_duration_seconds_bucket").unwrap();
        let first = out.series.iter().find(|s| s.name == bucket).unwrap();
        assert!(first.labels.contains(&("le".to_owned(), "0.005".to_owned())));
        assert!(out.names.iter().all(|n| n.starts_with("zai_proxy_")));
        assert_eq!(
            out.names.len(),
            out.names.iter().collect::<std::collections::BTreeSet<_>>().len(),
            "each name once"
        );
    }

    #[test]
    fn instance_and_empty_labels_as_prometheus_stores_them() {
        let text = "# TYPE zai_proxy_requests_total counter\n\
                    zai_proxy_requests_total{instance=\"self\",path=\"\",variant=\"Blue\",Zone=\"a\"} 3\n";
        let out = collect(parse(text).unwrap(), 7, "blue", "h:80");
        assert_eq!(out.names, ["zai_proxy_requests_total"]);
        assert_eq!(
            out.series[0].labels,
            [("exported_instance".to_owned(), "self".to_owned()), ("Zone".to_owned(), "a".to_owned())]
        );
        assert_eq!(out.series[0].value, 3.0);
    }

    #[test]
    fn long_values_are_cut_and_series_equal_once_cut_are_sent_as_one() {
        let shared = "s".repeat(128);
        let text = format!(
            "# TYPE zai_proxy_tokens_total counter\n\
             zai_proxy_tokens_total{{model=\"{shared}{a}\",direction=\"input\"}} 3\n\
             zai_proxy_tokens_total{{direction=\"input\",model=\"{shared}{b}\"}} 5\n\
             zai_proxy_tokens_total{{direction=\"input\",model=\"short\"}} 1\n",
            a = "A".repeat(50_000),
            b = "B".repeat(50_000)
        );
        let out = collect(parse(&text).unwrap(), 7, "p", "h:80");
        assert_eq!(out.series.len(), 2);
        assert_eq!(out.series[0].labels, [("model".to_owned(), shared), ("direction".to_owned(), "input".to_owned())]);
        assert_eq!(out.series[0].value, 8.0);
        assert_eq!(out.series[1].value, 1.0);
    }

    #[test]
    fn instances_name_the_port() {
        let url = |u: &str| Url::parse(u).unwrap();
        assert_eq!(instance(&url("http://10.0.0.1:9090/metrics")), "10.0.0.1:9090");
        assert_eq!(instance(&url("https://proxy.example/metrics")), "proxy.example:443");
        assert_eq!(instance(&url("http://[::1]:8080/metrics")), "[::1]:8080");
    }
}
