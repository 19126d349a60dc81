//! A scrape's `zai_proxy_*` series as remote write ships them: every sample as scraped, named
//! as in the exposition, with the target's resolved `variant` and its `instance`.
//!
//! Labels follow what a Prometheus scraping the pod would store, so dashboards and rules work
//! on either: `instance` is the target's `host:port` (an exposition's own `instance` label
//! becomes `exported_instance`, as Prometheus renames it), labels with an empty value are
//! absent. `variant` is the one zai-dash resolved (explicit name, label or URL rule), so a
//! pod without the label still lands in its variant.

use url::Url;

use super::parse::{Exposition, SampleKind};
use super::reading::MAX_SERIES;
use crate::samples::{ScrapeSamples, Series};

/// The samples of every `zai_proxy_*` family, at most [`MAX_SERIES`] (the rest are counted in
/// `left_out`), stamped `ts_ms`. Takes the exposition, which the scrape is done with, so each
/// sample's labels move over instead of being copied, and leaves the rest (adding `__name__`
/// and the target's labels, sorting) to the remote writer: this runs on the scrape path.
pub fn collect(expo: Exposition, ts_ms: i64, variant: &str, instance: &str) -> ScrapeSamples {
    let mut out = ScrapeSamples {
        ts_ms,
        target_labels: vec![("instance".to_owned(), instance.to_owned()), ("variant".to_owned(), variant.to_owned())],
        ..ScrapeSamples::default()
    };
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
            out.series.push(Series { name, labels: own_labels(s.labels), value: s.value });
        }
    }
    out
}

/// The sample's labels as a Prometheus scrape keeps them: empty ones are absent, `instance`
/// becomes `exported_instance` (the target's `instance` is added later), `variant` and
/// `__name__` give way to the resolved variant and the sample's name.
fn own_labels(mut labels: Vec<(String, String)>) -> Vec<(String, String)> {
    labels.retain(|(n, v)| !v.is_empty() && n != "variant" && n != "__name__");
    for (n, _) in labels.iter_mut().filter(|(n, _)| n == "instance") {
        "exported_instance".clone_into(n);
    }
    labels
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
    fn instances_name_the_port() {
        let url = |u: &str| Url::parse(u).unwrap();
        assert_eq!(instance(&url("http://10.0.0.1:9090/metrics")), "10.0.0.1:9090");
        assert_eq!(instance(&url("https://proxy.example/metrics")), "proxy.example:443");
        assert_eq!(instance(&url("http://[::1]:8080/metrics")), "[::1]:8080");
    }
}
