//! A scrape's `zai_proxy_*` series as remote write ships them: every sample as scraped, named
//! as in the exposition, with the target's resolved `variant` and its `instance`.
//!
//! Labels follow what a Prometheus scraping the pod would store, so dashboards and rules work
//! on either: `instance` is the target's `host:port` (an exposition's own `instance` label
//! becomes `exported_instance`, as Prometheus renames it), labels with an empty value are
//! absent. `variant` is the one zai-dash resolved (explicit name, label or URL rule), so a
//! pod without the label still lands in its variant.

use url::Url;

use super::parse::{Exposition, Sample, SampleKind};
use super::reading::MAX_SERIES;
use crate::samples::{ScrapeSamples, Series};

/// The samples of every `zai_proxy_*` family, at most [`MAX_SERIES`] (the rest are counted in
/// `left_out`), stamped `ts_ms`. Takes the exposition, which the scrape is done with, so each
/// sample's labels move over instead of being copied: this runs on the scrape path.
pub fn collect(expo: Exposition, ts_ms: i64, variant: &str, instance: &str) -> ScrapeSamples {
    let mut out = ScrapeSamples { ts_ms, series: Vec::new(), left_out: 0 };
    for fam in expo.families.into_iter().filter(|f| f.name.starts_with("zai_proxy_")) {
        let names = SampleNames::of(&fam.name);
        for s in fam.samples {
            if out.series.len() >= MAX_SERIES {
                out.left_out += 1;
                continue;
            }
            let value = s.value;
            let name = names.of_kind(s.kind).to_owned();
            out.series.push(Series { labels: labels(s, name, variant, instance), value });
        }
    }
    out
}

/// `__name__`, the sample's labels (renamed or replaced as above) and the target's labels,
/// sorted by name.
fn labels(s: Sample, name: String, variant: &str, instance: &str) -> Vec<(String, String)> {
    let mut labels = s.labels;
    labels.retain(|(n, v)| !v.is_empty() && n != "variant" && n != "__name__");
    for (n, _) in labels.iter_mut().filter(|(n, _)| n == "instance") {
        "exported_instance".clone_into(n);
    }
    labels.reserve_exact(3);
    labels.push(("__name__".to_owned(), name));
    labels.push(("instance".to_owned(), instance.to_owned()));
    labels.push(("variant".to_owned(), variant.to_owned()));
    labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    labels.dedup_by(|later, first| later.0 == first.0);
    labels
}

/// A family's sample names, built once per family: the family's own, and with the histogram
/// or summary suffixes.
struct SampleNames {
    plain: String,
    bucket: String,
    sum: String,
    count: String,
}

impl SampleNames {
    fn of(family: &str) -> Self {
        Self {
            plain: family.to_owned(),
            bucket: format!("{family}_bucket"),
            sum: format!("{family}_sum"),
            count: format!("{family}_count"),
        }
    }

    fn of_kind(&self, kind: SampleKind) -> &str {
        match kind {
            SampleKind::Bucket => &self.bucket,
            SampleKind::Sum => &self.sum,
            SampleKind::Count => &self.count,
            SampleKind::Value | SampleKind::Quantile => &self.plain,
        }
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

    fn names(s: &Series) -> Vec<&str> {
        s.labels.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn every_zai_proxy_sample_with_variant_and_instance() {
        let expo = parse(SAMPLE).unwrap();
        let expected: usize =
            expo.families.iter().filter(|f| f.name.starts_with("zai_proxy_")).map(|f| f.samples.len()).sum();
        let out = collect(expo, 42, "canary", "10.0.0.7:8080");
        assert_eq!(out.series.len(), expected);
        assert!(out.series.iter().all(|s| names(s).windows(2).all(|w| w[0] < w[1])), "sorted, unique");
        let bucket = out.series.iter().find(|s| s.labels[0].1 == "zai_proxy_request_duration_seconds_bucket").unwrap();
        assert!(bucket.labels.contains(&("le".to_owned(), "0.005".to_owned())));
        assert!(bucket.labels.contains(&("variant".to_owned(), "canary".to_owned())));
        assert!(bucket.labels.contains(&("instance".to_owned(), "10.0.0.7:8080".to_owned())));
        assert!(out.series.iter().all(|s| !s.labels[0].1.starts_with("go_")));
    }

    #[test]
    fn instance_and_empty_labels_as_prometheus_stores_them() {
        let text = "# TYPE zai_proxy_requests_total counter\n\
                    zai_proxy_requests_total{instance=\"self\",path=\"\",variant=\"Blue\",Zone=\"a\"} 3\n";
        let out = collect(parse(text).unwrap(), 7, "blue", "h:80");
        let labels: Vec<(&str, &str)> = out.series[0].labels.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(
            labels,
            [
                ("Zone", "a"),
                ("__name__", "zai_proxy_requests_total"),
                ("exported_instance", "self"),
                ("instance", "h:80"),
                ("variant", "blue")
            ]
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
