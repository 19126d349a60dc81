//! Writing the Prometheus text format 0.0.4 the way Go's client_golang does, so that what
//! zai-dash exports (the built-in proxy's `zai_proxy_*` families, the `zai_dash_*` self-metrics)
//! reads the same as a Go exporter's: `# HELP` then `# TYPE` per family, label values escaped,
//! and numbers, `le` bounds included, in Go's shortest `%g` form (`1e+06`, `2.5`, `+Inf`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// The `Content-Type` of the classic text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Longest label value zai-dash keeps, in bytes. The built-in proxy cuts the label values its
/// clients control (model, path) to it, and the collector every label value it scrapes: a
/// 50 KB model name would otherwise be stored in every row and shown on every page.
pub const LABEL_MAX_BYTES: usize = 128;

/// `value` cut to at most [`LABEL_MAX_BYTES`] at a char boundary, or `None` when it fits.
pub fn cut_label_value(value: &str) -> Option<&str> {
    if value.len() <= LABEL_MAX_BYTES {
        return None;
    }
    let end = (0..=LABEL_MAX_BYTES).rev().find(|i| value.is_char_boundary(*i)).unwrap_or(0);
    Some(&value[..end])
}

/// Builds one exposition. Callers emit families in name order and each family's series in
/// label order, as client_golang does; this type only formats.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty exposition.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Starts a family: `# HELP` and `# TYPE` lines. `kind` is `counter`, `gauge`, `histogram`...
    pub(crate) fn family(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample line. Labels are written in the order given (sort them by name).
    pub(crate) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label_value(v));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(&go_float(value));
        self.out.push('\n');
    }

    /// The finished text.
    pub(crate) fn finish(self) -> String {
        self.out
    }
}

/// Go's `strconv.FormatFloat(v, 'g', -1, 64)`: the shortest digits that round-trip, in
/// exponent form when the decimal exponent is below -4 or at least 6.
pub(crate) fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let sci = format!("{v:e}"); // shortest round-trip digits, e.g. "2.345678e6"
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        format!("{v}")
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// Escapes `\`, `"` and newlines in a label value.
pub(crate) fn escape_label_value(v: &str) -> String {
    if !v.contains(['\\', '"', '\n']) {
        return v.to_owned();
    }
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Escapes `\` and newlines in HELP text.
pub(crate) fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Bucket bounds of scrape durations, seconds (the scrape timeout defaults to 3 s).
const SCRAPE_BOUNDS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Bucket bounds of downsample runs, seconds.
const DOWNSAMPLE_BOUNDS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0];
/// A histogram updated with atomics only, so observing never blocks.
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [f64],
    /// Per-bucket (not cumulative) counts; the last one is above every bound.
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

impl AtomicHistogram {
    /// A histogram with these upper bounds (ascending).
    pub(crate) fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum_micros: AtomicU64::new(0) }
    }

    /// For scrape durations.
    pub(crate) fn scrape_seconds() -> Self {
        Self::new(SCRAPE_BOUNDS)
    }

    /// For downsample run durations.
    pub(crate) fn downsample_seconds() -> Self {
        Self::new(DOWNSAMPLE_BOUNDS)
    }

    /// Records one value in seconds (negative or NaN values count as zero).
    pub(crate) fn observe(&self, seconds: f64) {
        let v = if seconds.is_finite() && seconds > 0.0 { seconds } else { 0.0 };
        let idx = self.bounds.iter().position(|b| v <= *b).unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(idx) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros.fetch_add((v * 1e6).round() as u64, Ordering::Relaxed);
    }

    /// Writes the family: cumulative `_bucket` lines, `_sum` and `_count`.
    pub(crate) fn write(&self, e: &mut Exposition, name: &str, help: &str) {
        e.family(name, help, "histogram");
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            e.sample(&bucket, &[("le", &go_float(*bound))], cumulative as f64);
        }
        cumulative += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        e.sample(&bucket, &[("le", "+Inf")], cumulative as f64);
        e.sample(&format!("{name}_sum"), &[], self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        e.sample(&format!("{name}_count"), &[], cumulative as f64);
    }
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        Self::scrape_seconds()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_cut_at_a_char_boundary() {
        assert_eq!(cut_label_value(&"a".repeat(128)), None);
        assert_eq!(cut_label_value(&"a".repeat(129)), Some("a".repeat(128).as_str()));
        // 'é' is two bytes: 63 of them and a half would end inside a char.
        let accents = format!("x{}", "é".repeat(100));
        assert_eq!(cut_label_value(&accents).map(str::len), Some(127));
        let emoji = "🦀".repeat(40); // four bytes each
        assert_eq!(cut_label_value(&emoji), Some("🦀".repeat(32).as_str()));
    }

    #[test]
    fn numbers_match_go() {
        let cases = [
            (1e6, "1e+06"),
            (100000.0, "100000"),
            (2_345_678.0, "2.345678e+06"),
            (1_788_738_692.0, "1.788738692e+09"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (29.4, "29.4"),
            (0.005, "0.005"),
            (1.0, "1"),
            (-1.0, "-1"),
            (0.0, "0"),
            (1.57416213e8, "1.57416213e+08"),
            (1e21, "1e+21"),
            (123456.0, "123456"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (v, want) in cases {
            assert_eq!(go_float(v), want, "{v}");
        }
    }

    #[test]
    fn writes_families_and_escapes_labels() {
        let mut e = Exposition::new();
        e.family("zai_dash_x_total", "A help\\text\nline", "counter");
        e.sample("zai_dash_x_total", &[("a", "q\"\\\n"), ("b", "2")], 3.0);
        e.sample("zai_dash_x_total", &[], 1e6);
        let text = e.finish();
        assert_eq!(
            text,
            "# HELP zai_dash_x_total A help\\\\text\\nline\n# TYPE zai_dash_x_total counter\n\
             zai_dash_x_total{a=\"q\\\"\\\\\\n\",b=\"2\"} 3\nzai_dash_x_total 1e+06\n"
        );
        let parsed = crate::scrape::parse::parse(&text).unwrap();
        assert_eq!(parsed.families[0].samples[0].label("a"), Some("q\"\\\n"));
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_go_bounds() {
        let h = AtomicHistogram::scrape_seconds();
        h.observe(0.003);
        h.observe(0.2);
        h.observe(60.0);
        let mut e = Exposition::new();
        h.write(&mut e, "x_seconds", "X.");
        let text = e.finish();
        assert!(text.contains("x_seconds_bucket{le=\"0.005\"} 1\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"0.25\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"10\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("x_seconds_sum 60.203\n"), "{text}");
        assert!(text.contains("x_seconds_count 3\n"), "{text}");
    }
}
