//! Parser for the Prometheus classic text exposition format (version 0.0.4),
//! i.e. what Go's `client_golang` serves on `/metrics`.
//!
//! The output groups samples into families. A sample is attached to its
//! family through the `# TYPE` declarations seen so far, never by guessing
//! from suffixes alone: `foo_bucket` only belongs to `foo` if `foo` was
//! declared a histogram. Guessing goes wrong on real expositions, where e.g.
//! `zai_proxy_token_rate` and `zai_proxy_token_rate_seconds` are both
//! histograms and a greedy suffix strip would merge or split them wrongly.
//! Samples that match no declared family become their own untyped family,
//! named exactly like the sample (so an undeclared `foo_total` stays
//! `foo_total`, and an undeclared `foo_bucket` is not a histogram bucket).
//!
//! Errors are strict: the first malformed line fails the whole parse. A
//! lenient parser that skipped bad lines would make series vanish from one
//! scrape and reappear in the next, and a rate computed across those scrapes
//! would turn the gap into a spike. Failing the scrape is visible and honest.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

pub use super::labels::Labels;
use super::labels::{parse_label_set_after, unescape};
use super::lex::{BLANKS_BYTES, ident_len, quoted, trim_blanks};

/// The metric type declared by a `# TYPE` line (or `Untyped` without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// `counter`.
    Counter,
    /// `gauge`.
    Gauge,
    /// `histogram`: `_bucket`, `_sum`, `_count` samples.
    Histogram,
    /// `summary`: quantile, `_sum`, `_count` samples.
    Summary,
    /// `untyped`, or no TYPE line at all.
    Untyped,
}

/// What a sample is within its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleKind {
    /// Plain counter, gauge or untyped sample.
    Value,
    /// A histogram `_bucket` sample (`le` label).
    Bucket,
    /// A histogram or summary `_sum` sample.
    Sum,
    /// A histogram or summary `_count` sample.
    Count,
    /// A summary quantile sample (`quantile` label).
    Quantile,
}

/// One sample line, borrowing its labels from the exposition's text.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    /// Role of the sample in its family.
    pub kind: SampleKind,
    /// Labels in exposition order, unescaped on reading. For buckets/quantiles this still
    /// contains `le` / `quantile`.
    pub labels: Labels<'a>,
    /// The sample value.
    pub value: f64,
    /// `le` for buckets, `quantile` for quantile samples, parsed; None otherwise.
    pub bound: Option<f64>,
    /// Optional timestamp in Unix ms.
    pub timestamp_ms: Option<i64>,
}

impl Sample<'_> {
    /// Value of the label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name)
    }
}

/// A metric family: every sample that shares one declared (or implied) name.
#[derive(Debug, Clone, PartialEq)]
pub struct Family<'a> {
    /// Family name (for counters in 0.0.4 this includes `_total`).
    pub name: &'a str,
    /// Declared type.
    pub kind: MetricType,
    /// Unescaped HELP text.
    pub help: Option<Cow<'a, str>>,
    /// Samples in exposition order.
    pub samples: Vec<Sample<'a>>,
}

/// A parsed exposition, borrowing from the text it was parsed from; families are in order of
/// first appearance (TYPE, HELP or sample line).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Exposition<'a> {
    /// Families in order of first appearance.
    pub families: Vec<Family<'a>>,
}

impl<'a> Exposition<'a> {
    /// The family called exactly `name`. A linear scan: expositions hold a
    /// few dozen families and building an index would cost more than it saves.
    pub fn family(&self, name: &str) -> Option<&Family<'a>> {
        self.families.iter().find(|f| f.name == name)
    }

    /// Total number of samples over all families (what a scrape reports as "samples").
    pub fn sample_count(&self) -> usize {
        self.families.iter().map(|f| f.samples.len()).sum()
    }
}

/// The first malformed line of an exposition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for ParseError {}

impl ParseError {
    /// The reason without the text it quotes from the line (`invalid value "<script>..."` is
    /// `invalid value`): what may be shown where the body must not be.
    pub fn reason_without_text(&self) -> &str {
        let cut = self.reason.find(" \"").unwrap_or(self.reason.len());
        self.reason[..cut].trim_end_matches([':', ' '])
    }
}

/// Parses a whole exposition, failing on the first malformed line.
pub fn parse(text: &str) -> Result<Exposition<'_>, ParseError> {
    let mut parser = Parser {
        // A guess that fits zai-proxy's expositions (about 150 bytes per line), bounded so
        // that a body of blank lines cannot make it allocate much.
        samples: Vec::with_capacity((text.len() / 128).min(4096)),
        // About one family per 700 bytes there (HELP and TYPE lines, a few samples): sized so
        // the index is not rehashed while it fills, bounded for the same reason.
        index: HashMap::with_capacity((text.len() / 512).clamp(8, 1024)),
        ..Parser::default()
    };
    // Lines as `str::split('\n')` gives them (the last one after the last newline too), found
    // with memchr's vector search: a line is about 100 bytes, and the byte-at-a-time search of
    // `split` was an eighth of the parse.
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', text.as_bytes()).chain(std::iter::once(text.len()));
    for (number, end) in ends.enumerate() {
        // `\n` is ASCII, so both ends are char boundaries.
        let raw = &text[start..end];
        start = end + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        parser.line(line).map_err(|reason| ParseError { line: number + 1, reason })?;
    }
    Ok(Exposition { families: parser.finish() })
}

/// Parsing state carried from line to line.
///
/// Allocations were what a scrape's parse cost, so the parser makes none per sample: names and
/// labels are slices of the input, samples go to one flat list and move into their families,
/// each sized once, at the end; family names are looked up by slices of the input.
#[derive(Default)]
struct Parser<'a> {
    families: Vec<Family<'a>>,
    /// Parallel to `families`: whether a `# TYPE` line declared it.
    declared: Vec<bool>,
    /// Parallel to `families`: samples seen so far.
    counts: Vec<usize>,
    /// Every sample so far with its family's index, in exposition order.
    samples: Vec<(usize, Sample<'a>)>,
    index: HashMap<&'a str, usize>,
    /// Reused to build `name_suffix` lookups.
    scratch: String,
    /// Resolution of the previous sample name. Consecutive samples almost
    /// always share a name, so this skips the hash lookups on most lines.
    /// Cleared on every comment line, since TYPE lines change resolution.
    last: Option<(&'a str, usize, SampleKind)>,
}

impl<'a> Parser<'a> {
    fn line(&mut self, line: &'a str) -> Result<(), String> {
        let line = trim_blanks(line);
        if line.is_empty() {
            return Ok(());
        }
        match line.strip_prefix('#') {
            Some(comment) => {
                self.last = None;
                self.comment(comment)
            }
            None => self.sample(line),
        }
    }

    /// Handles `# HELP` and `# TYPE`; any other comment is ignored. Like
    /// Prometheus, a blank is required after `#` for a HELP/TYPE keyword.
    fn comment(&mut self, rest: &'a str) -> Result<(), String> {
        let after = trim_blanks(rest);
        if after.len() == rest.len() {
            return Ok(());
        }
        match split_token(after) {
            ("HELP", tail) => self.help_line(tail),
            ("TYPE", tail) => self.type_line(tail),
            _ => Ok(()),
        }
    }

    fn help_line(&mut self, tail: &'a str) -> Result<(), String> {
        let (name, text) = split_token(tail);
        check_metric_name(name, "HELP")?;
        let i = self.family_index(name);
        let family = &mut self.families[i];
        if family.help.is_some() {
            return Err(format!("second HELP line for {}", quoted(name)));
        }
        family.help = Some(if text.contains('\\') { Cow::Owned(unescape(text, false)) } else { Cow::Borrowed(text) });
        Ok(())
    }

    fn type_line(&mut self, tail: &'a str) -> Result<(), String> {
        let (name, rest) = split_token(tail);
        check_metric_name(name, "TYPE")?;
        let (word, extra) = split_token(rest);
        let kind = parse_metric_type(word)?;
        if !extra.is_empty() {
            return Err(format!("unexpected text after TYPE: {}", quoted(extra)));
        }
        let i = self.family_index(name);
        if self.declared[i] {
            return Err(format!("second TYPE line for {}", quoted(name)));
        }
        if self.has_samples_for(name, kind) {
            return Err(format!("TYPE line for {} after its samples", quoted(name)));
        }
        self.families[i].kind = kind;
        self.declared[i] = true;
        Ok(())
    }

    /// Whether samples that this TYPE would claim were already seen: a late
    /// TYPE would reassign them, which Prometheus rejects.
    fn has_samples_for(&mut self, name: &str, kind: MetricType) -> bool {
        let suffixes: &[&str] = match kind {
            MetricType::Histogram => &["", "_bucket", "_sum", "_count"],
            MetricType::Summary => &["", "_sum", "_count"],
            _ => &[""],
        };
        let mut key = std::mem::take(&mut self.scratch);
        let seen = suffixes.iter().any(|suffix| {
            key.clear();
            key.push_str(name);
            key.push_str(suffix);
            self.index.get(key.as_str()).is_some_and(|&i| self.counts[i] > 0)
        });
        self.scratch = key;
        seen
    }

    fn sample(&mut self, line: &'a str) -> Result<(), String> {
        let (name, rest) = match self.last {
            // Consecutive samples mostly share their name: one that starts the line, followed by
            // a delimiter, was checked already.
            Some((last, ..))
                if line.starts_with(last)
                    && matches!(line.as_bytes().get(last.len()), None | Some(b' ' | b'\t' | b'{')) =>
            {
                line.split_at(last.len())
            }
            _ => split_metric_name(line)?,
        };
        let rest = trim_blanks(rest);
        // Resolved first so the label set knows its bound label (`le`, `quantile`); an error of
        // the resolution still comes after those of the labels and the value.
        let resolved = self.resolve(name);
        let bound_name = match resolved {
            Ok((_, SampleKind::Bucket)) => Some("le"),
            Ok((_, SampleKind::Quantile)) => Some("quantile"),
            _ => None,
        };
        let (labels, rest) = match rest.strip_prefix('{') {
            Some(inner) => {
                // The previous sample line, when it had the same bound label (a bucket after a
                // bucket): its checked label text spares checking this line's series labels.
                let previous = match (self.samples.last(), &resolved) {
                    (Some((_, prev)), Ok((_, kind))) if bound_name.is_some() && prev.kind == *kind => {
                        Some(&prev.labels)
                    }
                    _ => None,
                };
                parse_label_set_after(inner, bound_name, previous)?
            }
            None => (Labels::default(), rest),
        };
        let (value, timestamp_ms) = parse_value_and_timestamp(rest)?;
        let (family, kind) = resolved?;
        let bound = parse_bound(bound_name, &labels)?;
        self.counts[family] += 1;
        self.samples.push((family, Sample { kind, labels, value, bound, timestamp_ms }));
        Ok(())
    }

    /// The families with their samples, each list allocated once at its final size.
    fn finish(mut self) -> Vec<Family<'a>> {
        for (family, count) in self.families.iter_mut().zip(&self.counts) {
            family.samples = Vec::with_capacity(*count);
        }
        for (family, sample) in self.samples {
            self.families[family].samples.push(sample);
        }
        self.families
    }

    /// Family index and sample kind for a sample name, using the cache.
    fn resolve(&mut self, name: &'a str) -> Result<(usize, SampleKind), String> {
        if let Some((last, i, kind)) = self.last
            && last == name
        {
            return Ok((i, kind));
        }
        let (i, kind) = self.resolve_by_type(name)?;
        self.last = Some((name, i, kind));
        Ok((i, kind))
    }

    /// Exact declared name first, then a histogram/summary suffix on a
    /// declared family, else the sample's own untyped family.
    fn resolve_by_type(&mut self, name: &'a str) -> Result<(usize, SampleKind), String> {
        if let Some(i) = self.declared_family(name) {
            return match self.families[i].kind {
                MetricType::Histogram => {
                    Err(format!("histogram sample {} needs a _bucket, _sum or _count suffix", quoted(name)))
                }
                MetricType::Summary => Ok((i, SampleKind::Quantile)),
                _ => Ok((i, SampleKind::Value)),
            };
        }
        let suffixes = [("_bucket", SampleKind::Bucket), ("_sum", SampleKind::Sum), ("_count", SampleKind::Count)];
        for (suffix, kind) in suffixes {
            if let Some(base) = name.strip_suffix(suffix)
                && let Some(i) = self.declared_family(base)
            {
                match (self.families[i].kind, kind) {
                    (MetricType::Histogram, _) | (MetricType::Summary, SampleKind::Sum | SampleKind::Count) => {
                        return Ok((i, kind));
                    }
                    _ => {}
                }
            }
        }
        Ok((self.family_index(name), SampleKind::Value))
    }

    fn declared_family(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied().filter(|&i| self.declared[i])
    }

    /// Index of the family `name`, creating an untyped one on first sight.
    fn family_index(&mut self, name: &'a str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.families.len();
        self.families.push(Family { name, kind: MetricType::Untyped, help: None, samples: Vec::new() });
        self.declared.push(false);
        self.counts.push(0);
        self.index.insert(name, i);
        i
    }
}

/// Splits off the first blank-separated token and skips the blanks after it.
fn split_token(s: &str) -> (&str, &str) {
    let b = s.as_bytes();
    let end = b.iter().position(|c| BLANKS_BYTES.contains(c)).unwrap_or(b.len());
    (&s[..end], trim_blanks(&s[end..]))
}

fn check_metric_name(name: &str, keyword: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("missing metric name after {keyword}"));
    }
    if ident_len(name.as_bytes(), true) != name.len() {
        return Err(format!("invalid metric name {}", quoted(name)));
    }
    Ok(())
}

fn parse_metric_type(word: &str) -> Result<MetricType, String> {
    Ok(match word {
        "counter" => MetricType::Counter,
        "gauge" => MetricType::Gauge,
        "histogram" => MetricType::Histogram,
        "summary" => MetricType::Summary,
        "untyped" => MetricType::Untyped,
        "" => return Err("missing metric type".to_owned()),
        _ => return Err(format!("unknown metric type {}", quoted(word))),
    })
}

/// Splits a sample line into its metric name and the rest.
fn split_metric_name(line: &str) -> Result<(&str, &str), String> {
    let len = ident_len(line.as_bytes(), true);
    let next = line.as_bytes().get(len);
    if len == 0 || !matches!(next, None | Some(b' ' | b'\t' | b'{')) {
        let end = line.find([' ', '\t', '{']).unwrap_or(line.len());
        return Err(format!("invalid metric name {}", quoted(&line[..end])));
    }
    Ok(line.split_at(len))
}

/// Parses `value [timestamp] [# exemplar]`.
fn parse_value_and_timestamp(rest: &str) -> Result<(f64, Option<i64>), String> {
    let (token, rest) = split_token(trim_blanks(rest));
    if token.is_empty() {
        return Err("missing value".to_owned());
    }
    let value = parse_float(token).ok_or_else(|| format!("invalid value {}", quoted(token)))?;
    if rest.is_empty() || rest.starts_with('#') {
        return Ok((value, None));
    }
    let (token, rest) = split_token(rest);
    let timestamp = token.parse::<i64>().map_err(|_| format!("invalid timestamp {}", quoted(token)))?;
    if rest.is_empty() || rest.starts_with('#') {
        Ok((value, Some(timestamp)))
    } else {
        Err(format!("unexpected text after timestamp: {}", quoted(rest)))
    }
}

/// Go's `strconv.ParseFloat` syntax as `client_golang` prints it: `%g`
/// numbers and case-insensitive `Inf`/`+Inf`/`-Inf`/`NaN`, all of which
/// Rust's parser accepts too. Short plain decimals, most values of an exposition (counts,
/// `le` bounds, ratios), take [`short_decimal`] first.
fn parse_float(token: &str) -> Option<f64> {
    short_decimal(token.as_bytes()).or_else(|| token.parse().ok())
}

/// Most digits [`short_decimal`] takes: below 2^53, so the digits as an integer are exact.
const SHORT_DECIMAL_DIGITS: usize = 15;

/// Powers of ten exact in an `f64`, up to [`SHORT_DECIMAL_DIGITS`].
const POW10: [f64; SHORT_DECIMAL_DIGITS + 1] =
    [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];

/// `-?digits(.digits)?` with at most [`SHORT_DECIMAL_DIGITS`] digits, else `None` (the
/// general parser's case). Exact: the digits are an integer below 2^53 and the power of ten
/// is exact, so their quotient is the correctly rounded value, as the general parser gives it.
fn short_decimal(b: &[u8]) -> Option<f64> {
    let (negative, digits) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    let mut mantissa = 0u64;
    let mut count = 0;
    let mut point = None;
    for (i, &c) in digits.iter().enumerate() {
        match c {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(c - b'0');
                count += 1;
                if count > SHORT_DECIMAL_DIGITS {
                    return None;
                }
            }
            b'.' if point.is_none() && i > 0 && i + 1 < digits.len() => point = Some(digits.len() - i - 1),
            _ => return None,
        }
    }
    if count == 0 {
        return None;
    }
    let value = mantissa as f64 / POW10[point.unwrap_or(0)];
    Some(if negative { -value } else { value })
}

/// The parsed `le` of a bucket or `quantile` of a quantile sample.
fn parse_bound(label: Option<&str>, labels: &Labels<'_>) -> Result<Option<f64>, String> {
    let Some(label) = label else { return Ok(None) };
    let raw = labels.bound_value().ok_or_else(|| format!("missing \"{label}\" label"))?;
    let bound = parse_float(raw).ok_or_else(|| format!("invalid \"{label}\" value {}", quoted(raw)))?;
    Ok(Some(bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../tests/fixtures/zai-proxy-sample.prom");

    fn ok(text: &str) -> Exposition<'_> {
        match parse(text) {
            Ok(exposition) => exposition,
            Err(e) => panic!("unexpected error: {e}\ninput:\n{text}"),
        }
    }

    fn err(text: &str) -> ParseError {
        match parse(text) {
            Ok(exposition) => panic!("expected an error, got {exposition:?}"),
            Err(e) => e,
        }
    }

    fn only_sample(text: &str) -> Sample<'_> {
        let exposition = ok(text);
        assert_eq!(exposition.sample_count(), 1, "{exposition:?}");
        exposition.families[0].samples[0].clone()
    }

    fn labels<'s>(sample: &'s Sample<'_>) -> Vec<(&'s str, &'s str)> {
        sample.labels.iter().collect()
    }

    #[test]
    fn fixture_parses_into_typed_families() {
        let exposition = ok(FIXTURE);
        assert_eq!(exposition.families.len(), 26);
        assert!(exposition.families.iter().all(|f| f.kind != MetricType::Untyped));
        assert!(exposition.families.iter().all(|f| f.help.is_some()));

        let requests = exposition.family("zai_proxy_requests_total").unwrap();
        assert_eq!(requests.kind, MetricType::Counter);
        assert_eq!(requests.samples.len(), 6);

        let duration = exposition.family("zai_proxy_request_duration_seconds").unwrap();
        assert_eq!(duration.kind, MetricType::Histogram);
        let count = duration
            .samples
            .iter()
            .find(|s| {
                s.kind == SampleKind::Count
                    && s.label("status_code") == Some("200")
                    && s.label("path") == Some("/api/anthropic/v1/messages")
            })
            .unwrap();
        assert_eq!(count.value, 1486.0);
        let kinds = |k| duration.samples.iter().filter(|s| s.kind == k).count();
        assert_eq!(kinds(SampleKind::Bucket), 5 * 16);
        assert_eq!(kinds(SampleKind::Sum), 5);
        assert_eq!(kinds(SampleKind::Count), 5);

        let rate = exposition.family("zai_proxy_token_rate").unwrap();
        let rate_seconds = exposition.family("zai_proxy_token_rate_seconds").unwrap();
        assert_eq!(rate.samples.len(), 15);
        assert_eq!(rate_seconds.samples.len(), 12);
        assert_eq!(rate.samples[0].bound, Some(10.0));
        assert_eq!(rate_seconds.samples[0].bound, Some(1e-5));

        let reset = exposition.family("zai_proxy_quota_reset_time_seconds").unwrap();
        assert_eq!(reset.samples[0].value, 1.7889264e9);

        let sample_lines = FIXTURE.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).count();
        assert_eq!(exposition.sample_count(), sample_lines);
    }

    #[test]
    fn help_text_unescapes_backslash_and_newline_only() {
        let exposition = ok("# HELP foo A \\\\ B\\nC \\\" \\t end  \n# HELP bar\n");
        assert_eq!(exposition.families[0].help.as_deref(), Some("A \\ B\nC \\\" \\t end  "));
        assert_eq!(exposition.families[1].help.as_deref(), Some(""));
    }

    #[test]
    fn type_line_accepts_every_type() {
        let text = "# TYPE a counter\n# TYPE b gauge\n# TYPE c histogram\n\
                    # TYPE d summary\n# TYPE e untyped\n";
        let kinds: Vec<_> = ok(text).families.iter().map(|f| f.kind).collect();
        use MetricType::*;
        assert_eq!(kinds, [Counter, Gauge, Histogram, Summary, Untyped]);
        assert_eq!(err("# TYPE a timer").reason, "unknown metric type \"timer\"");
        assert_eq!(err("# TYPE a").reason, "missing metric type");
        assert_eq!(err("# TYPE a gauge x").reason, "unexpected text after TYPE: \"x\"");
    }

    #[test]
    fn other_comments_and_blank_lines_are_ignored() {
        let text = "\n# just a comment\n#HELP x not a help line\n# HELPER no\n   \n\t\nfoo 1\n\n";
        let exposition = ok(text);
        assert_eq!(exposition.families.len(), 1);
        assert_eq!(exposition.families[0].name, "foo");
    }

    #[test]
    fn crlf_and_missing_trailing_newline() {
        let exposition = ok("# HELP foo Help.\r\n# TYPE foo gauge\r\nfoo{a=\"b\"} 3\r\nfoo 4");
        let foo = exposition.family("foo").unwrap();
        assert_eq!(foo.help.as_deref(), Some("Help."));
        assert_eq!(foo.kind, MetricType::Gauge);
        assert_eq!(foo.samples[0].label("a"), Some("b"));
        assert_eq!(foo.samples[1].value, 4.0);
        assert_eq!(err("foo 1\r\nfoo x\r\n").line, 2);
    }

    #[test]
    fn metric_names_allow_colons() {
        let exposition = ok("# TYPE job:rate:5m gauge\njob:rate:5m 1\n_x 2\n:y 3\n");
        assert_eq!(exposition.family("job:rate:5m").unwrap().samples.len(), 1);
        assert!(exposition.family("_x").is_some());
        assert!(exposition.family(":y").is_some());
        assert_eq!(err("9foo 1").reason, "invalid metric name \"9foo\"");
        assert_eq!(err("foo-bar 1").reason, "invalid metric name \"foo-bar\"");
        assert_eq!(err("# TYPE fö gauge").reason, "invalid metric name \"fö\"");
        assert_eq!(err("# HELP").reason, "missing metric name after HELP");
    }

    #[test]
    fn label_names_follow_the_label_grammar() {
        let sample = only_sample("foo{_a=\"1\",b9=\"2\"} 1");
        assert_eq!(labels(&sample), [("_a", "1"), ("b9", "2")]);
        assert_eq!(err("foo{9a=\"1\"} 1").reason, "invalid label name \"9a\"");
        assert_eq!(err("foo{é=\"1\"} 1").reason, "invalid label name \"é\"");
        assert_eq!(err("foo{a:b=\"1\"} 1").reason, "expected '=' after label name \"a\"");
    }

    #[test]
    fn empty_label_braces() {
        let sample = only_sample("foo{} 7");
        assert!(sample.labels.is_empty());
        assert_eq!(sample.value, 7.0);
        assert!(only_sample("foo { } 7").labels.is_empty());
    }

    #[test]
    fn spaces_around_label_names_equals_and_commas() {
        let sample = only_sample("foo { a = \"1\" ,\tb=\"2\" } 1");
        assert_eq!(labels(&sample), [("a", "1"), ("b", "2")]);
    }

    #[test]
    fn trailing_comma_in_labels() {
        let sample = only_sample("foo{a=\"b\",} 1");
        assert_eq!(labels(&sample), [("a", "b")]);
        assert_eq!(err("foo{,} 1").reason, "invalid label name \",\"");
        assert_eq!(err("foo{a=\"b\",,} 1").reason, "invalid label name \",\"");
    }

    #[test]
    fn label_values_with_separators_and_utf8() {
        let sample = only_sample("foo{a=\"x,y=z}{\",b=\"日本 ü 🚀\"} 1");
        assert_eq!(labels(&sample), [("a", "x,y=z}{"), ("b", "日本 ü 🚀")]);
    }

    #[test]
    fn label_value_escapes() {
        let sample = only_sample(r#"foo{a="q\"b\\n\nx",b="\t\d\ü",c="\\"} 1"#);
        assert_eq!(sample.label("a"), Some("q\"b\\n\nx"));
        assert_eq!(sample.label("b"), Some("\\t\\d\\ü"));
        assert_eq!(sample.label("c"), Some("\\"));
    }

    #[test]
    fn the_shown_reason_quotes_nothing_from_the_body() {
        assert_eq!(err("foo <script>alert(1)</script>").reason_without_text(), "invalid value");
        assert_eq!(err("# TYPE a gauge x").reason_without_text(), "unexpected text after TYPE");
        assert_eq!(err("foo").reason_without_text(), "missing value");
        assert_eq!(err("foo{a=1} 1").reason_without_text(), "expected '\"' to open value of label");
    }

    #[test]
    fn duplicate_label_is_an_error() {
        assert_eq!(err("foo{a=\"1\",a=\"2\"} 1").reason, "duplicate label \"a\"");
    }

    #[test]
    fn go_float_formats_and_special_values() {
        let cases = [
            ("1e+06", 1e6),
            ("1.788738692e+09", 1.788738692e9),
            ("1e-05", 1e-5),
            ("-3.5", -3.5),
            ("+Inf", f64::INFINITY),
            ("Inf", f64::INFINITY),
            ("inf", f64::INFINITY),
            ("-Inf", f64::NEG_INFINITY),
            ("-inf", f64::NEG_INFINITY),
        ];
        for (text, want) in cases {
            assert_eq!(only_sample(&format!("foo {text}")).value, want, "{text}");
        }
        let zero = only_sample("foo -0").value;
        assert!(zero == 0.0 && zero.is_sign_negative());
        for nan in ["NaN", "nan", "NAN"] {
            assert!(only_sample(&format!("foo {nan}")).value.is_nan());
        }
        assert_eq!(err("foo abc").reason, "invalid value \"abc\"");
        assert_eq!(err("foo").reason, "missing value");
        assert_eq!(err("foo{a=\"b\"}").reason, "missing value");
    }

    #[test]
    fn short_decimals_parse_as_the_general_parser_does() {
        let mut rng = XorShift(0x5851_f42d_4c95_7f2d);
        let mut texts: Vec<String> = [
            "0",
            "-0",
            "0.0",
            "5.",
            ".5",
            "-",
            "-.",
            ".",
            "1.2.3",
            "00012",
            "0.1",
            "0.3",
            "2.675",
            "1e3",
            "999999999999999",
            "9999999999999999",
            "0.000000000000001",
            "0.0000000000000001",
            "-123456789012.345",
            "123456789012345.",
            "9007199254740993",
            "+1",
            "1_0",
            "١",
        ]
        .map(str::to_owned)
        .to_vec();
        for _ in 0..20_000 {
            let digits: String = (0..1 + rng.below(17)).map(|_| char::from(b'0' + rng.below(10) as u8)).collect();
            let at = rng.below(digits.len() + 1);
            let sign = if rng.below(3) == 0 { "-" } else { "" };
            texts.push(format!("{sign}{}.{}", &digits[..at], &digits[at..]));
            texts.push(format!("{sign}{digits}"));
        }
        for text in &texts {
            let general = text.parse::<f64>().ok();
            let fast = short_decimal(text.as_bytes());
            if let Some(fast) = fast {
                let general = general.unwrap_or_else(|| panic!("{text:?} is no float, but read as {fast}"));
                assert_eq!(fast.to_bits(), general.to_bits(), "{text:?}");
            }
            assert_eq!(parse_float(text).map(f64::to_bits), general.map(f64::to_bits), "{text:?}");
        }
        assert_eq!(short_decimal(b"0.005"), Some(0.005));
        assert_eq!(short_decimal(b"12345"), Some(12345.0));
        assert_eq!(short_decimal(b"1e3"), None, "exponents are the general parser's");
    }

    #[test]
    fn lines_end_at_every_newline_and_carriage_returns_are_dropped() {
        let exposition = ok("a 1\r\n\nb 2\n\r\nc 3");
        let values: Vec<_> = exposition.families.iter().map(|f| (f.name, f.samples[0].value)).collect();
        assert_eq!(values, [("a", 1.0), ("b", 2.0), ("c", 3.0)]);
        assert_eq!(err("a 1\n\nb\n").line, 3);
        assert_eq!(err("a 1\r\nb x\r\n").line, 2);
        assert_eq!(err("a 1\n\n\n\nb{").line, 5);
    }

    #[test]
    fn optional_timestamp() {
        assert_eq!(only_sample("foo 1").timestamp_ms, None);
        assert_eq!(only_sample("foo 1 1712345678901").timestamp_ms, Some(1712345678901));
        assert_eq!(only_sample("foo{a=\"b\"} 1 -5 ").timestamp_ms, Some(-5));
        assert_eq!(err("foo 1 12.5").reason, "invalid timestamp \"12.5\"");
    }

    #[test]
    fn exemplars_are_ignored_and_other_trailing_text_rejected() {
        let sample = only_sample("foo_bucket{le=\"1\"} 3 # {trace_id=\"x\"} 1 2");
        assert_eq!((sample.value, sample.timestamp_ms), (3.0, None));
        let sample = only_sample("foo 3 1000 # {trace_id=\"x\"} 1 2");
        assert_eq!(sample.timestamp_ms, Some(1000));
        assert_eq!(err("foo 3 1000 junk").reason, "unexpected text after timestamp: \"junk\"");
    }

    #[test]
    fn resolution_prefers_declared_families_over_suffix_guessing() {
        let text = "# TYPE zai_proxy_token_rate histogram\n\
                    # TYPE zai_proxy_token_rate_seconds histogram\n\
                    zai_proxy_token_rate_seconds_bucket{le=\"0.1\"} 1\n\
                    zai_proxy_token_rate_bucket{le=\"10\"} 2\n\
                    zai_proxy_token_rate_seconds_sum 0.5\n\
                    zai_proxy_token_rate_count 2\n";
        let exposition = ok(text);
        assert_eq!(exposition.families.len(), 2);
        let rate = exposition.family("zai_proxy_token_rate").unwrap();
        let seconds = exposition.family("zai_proxy_token_rate_seconds").unwrap();
        let kinds = |f: &Family| f.samples.iter().map(|s| s.kind).collect::<Vec<_>>();
        assert_eq!(kinds(rate), [SampleKind::Bucket, SampleKind::Count]);
        assert_eq!(kinds(seconds), [SampleKind::Bucket, SampleKind::Sum]);
    }

    #[test]
    fn undeclared_samples_become_their_own_untyped_families() {
        let text = "# TYPE c counter\nfoo_total 1\nfoo_bucket{le=\"1\"} 2\nc_sum 3\nfoo_total 4\n";
        let exposition = ok(text);
        let names: Vec<_> = exposition.families.iter().map(|f| f.name).collect();
        assert_eq!(names, ["c", "foo_total", "foo_bucket", "c_sum"]);
        let foo = exposition.family("foo_total").unwrap();
        assert_eq!(foo.kind, MetricType::Untyped);
        assert_eq!(foo.samples.len(), 2);
        let bucket = &exposition.family("foo_bucket").unwrap().samples[0];
        assert_eq!((bucket.kind, bucket.bound), (SampleKind::Value, None));
    }

    #[test]
    fn histogram_buckets_need_a_numeric_le() {
        let text = "# TYPE h histogram\nh_bucket{a=\"x\",le=\"0.5\"} 1\nh_bucket{a=\"x\",le=\"+Inf\"} 2\n";
        let h = ok(text).families.remove(0);
        assert_eq!(labels(&h.samples[0]), [("a", "x"), ("le", "0.5")]);
        assert_eq!(h.samples[0].bound, Some(0.5));
        assert_eq!(h.samples[1].label("le"), Some("+Inf"));
        assert_eq!(h.samples[1].bound, Some(f64::INFINITY));
        let missing = err("# TYPE h histogram\nh_bucket{a=\"x\"} 1");
        assert_eq!((missing.line, missing.reason.as_str()), (2, "missing \"le\" label"));
        let bad = err("# TYPE h histogram\nh_bucket{le=\"big\"} 1");
        assert_eq!(bad.reason, "invalid \"le\" value \"big\"");
        let bare = err("# TYPE h histogram\nh 1");
        assert_eq!(bare.reason, "histogram sample \"h\" needs a _bucket, _sum or _count suffix");
    }

    #[test]
    fn summary_quantiles_need_a_numeric_quantile() {
        let text = "# TYPE s summary\ns{quantile=\"0.99\"} 5\ns_sum 9\ns_count 3\ns_bucket{le=\"1\"} 1\n";
        let exposition = ok(text);
        let s = exposition.family("s").unwrap();
        let kinds: Vec<_> = s.samples.iter().map(|x| x.kind).collect();
        assert_eq!(kinds, [SampleKind::Quantile, SampleKind::Sum, SampleKind::Count]);
        assert_eq!(s.samples[0].bound, Some(0.99));
        assert_eq!(s.samples[0].label("quantile"), Some("0.99"));
        assert_eq!(exposition.family("s_bucket").unwrap().kind, MetricType::Untyped);
        let missing = err("# TYPE s summary\ns 5");
        assert_eq!(missing.reason, "missing \"quantile\" label");
        let bad = err("# TYPE s summary\ns{quantile=\"p99\"} 5");
        assert_eq!(bad.reason, "invalid \"quantile\" value \"p99\"");
    }

    #[test]
    fn late_or_repeated_type_lines_are_errors() {
        let late = err("foo 1\n# TYPE foo gauge\n");
        assert_eq!((late.line, late.reason.as_str()), (2, "TYPE line for \"foo\" after its samples"));
        let late_suffix = err("h_count 1\n# TYPE h histogram\n");
        assert_eq!(late_suffix.reason, "TYPE line for \"h\" after its samples");
        let twice = err("# TYPE foo gauge\n# TYPE foo gauge\n");
        assert_eq!((twice.line, twice.reason.as_str()), (2, "second TYPE line for \"foo\""));
        let help_twice = err("# HELP foo a\n# HELP foo b\n");
        assert_eq!(help_twice.reason, "second HELP line for \"foo\"");
        // HELP before TYPE is the normal Go order, and HELP may follow samples.
        ok("# HELP foo a\n# TYPE foo gauge\nfoo 1\n# HELP bar b\nbar 1\n# HELP bar_total c\n");
    }

    #[test]
    fn families_without_samples_still_appear_in_order() {
        let text = "# HELP a only help\n# TYPE b counter\nc 1\n# TYPE d gauge\n";
        let exposition = ok(text);
        let names: Vec<_> = exposition.families.iter().map(|f| f.name).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        assert_eq!(exposition.family("a").unwrap().kind, MetricType::Untyped);
        assert!(exposition.family("b").unwrap().samples.is_empty());
        assert_eq!(exposition.sample_count(), 1);
        assert!(exposition.family("zzz").is_none());
        assert_eq!(parse("").unwrap(), Exposition::default());
    }

    #[test]
    fn errors_report_line_number_and_reason() {
        let mut text = String::from("# TYPE foo counter\n");
        for i in 0..15 {
            text.push_str(&format!("foo{{i=\"{i}\"}} 1\n"));
        }
        text.push_str("foo{method \"GET\"} 1\n");
        let error = err(&text);
        assert_eq!(error.line, 17);
        assert_eq!(error.to_string(), "line 17: expected '=' after label name \"method\"");
        let cases = [
            ("foo{a=\"b} 1", "unterminated label value"),
            ("foo{a=\"b\\\"} 1", "unterminated label value"),
            ("foo{a=\"b\" 1", "expected ',' or '}' after label \"a\""),
            ("foo{a=b} 1", "expected '\"' to open value of label \"a\""),
            ("foo{a=\"b\"", "missing '}' after labels"),
            ("foo{", "missing '}' after labels"),
        ];
        for (line, reason) in cases {
            assert_eq!(err(line), ParseError { line: 1, reason: reason.to_owned() }, "{line}");
        }
        let long = err(&format!("foo {}", "x".repeat(500)));
        assert_eq!(long.reason, format!("invalid value \"{}\"...", "x".repeat(40)));
    }

    /// Small deterministic PRNG so the fuzz tests need no extra crates.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Parses without panicking and checks the result is self-consistent.
    fn check_no_panic(text: &str) {
        let lines = text.split('\n').count();
        match parse(text) {
            Ok(exposition) => assert!(exposition.sample_count() <= lines),
            Err(e) => assert!(e.line >= 1 && e.line <= lines && !e.reason.is_empty()),
        }
    }

    const SPICY: &[char] = &[
        '{', '}', '"', '\\', '=', ',', ' ', '\t', '\n', '\r', '#', 'e', '+', '-', '.', '_', ':', '0', '1', '9', 'a',
        'l', 'n', 'I', 'N', 'é', '日', '🚀', '\0',
    ];

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let len = rng.below(120);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            check_no_panic(&String::from_utf8_lossy(&bytes));
            let chars: String = (0..len).map(|_| SPICY[rng.below(SPICY.len())]).collect();
            check_no_panic(&chars);
        }
    }

    #[test]
    fn random_mutations_of_valid_exposition_never_panic() {
        let base = "# HELP h Latency \\n of \\\\ things.\n# TYPE h histogram\n\
                    h_bucket{a=\"x,y\",le=\"0.5\"} 1 1700000000000\n\
                    h_bucket{ a = \"\\\"q\\\"\" , le=\"+Inf\",} 2 # {trace_id=\"t\"} 1\n\
                    h_sum{a=\"日本\"} 1e+06\nh_count 2\n# TYPE s summary\n\
                    s{quantile=\"0.9\"} NaN\ns_sum -Inf\ns_count 3\nu:x_total{} 1.5e-05\n";
        let fixture_head: String = FIXTURE.lines().take(60).collect::<Vec<_>>().join("\n");
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        for round in 0..4000 {
            let source = if round % 4 == 0 { fixture_head.as_str() } else { base };
            let mut chars: Vec<char> = source.chars().collect();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(chars.len().max(1));
                match rng.below(4) {
                    0 if !chars.is_empty() => {
                        chars.remove(at);
                    }
                    1 => chars.insert(at, SPICY[rng.below(SPICY.len())]),
                    2 if !chars.is_empty() => chars[at] = SPICY[rng.below(SPICY.len())],
                    _ => {
                        let end = (at + rng.below(30)).min(chars.len());
                        chars.drain(at..end);
                    }
                }
            }
            check_no_panic(&chars.into_iter().collect::<String>());
        }
        assert_eq!(ok(base).sample_count(), 8);
    }

    #[test]
    fn bucket_and_quantile_lines_after_their_series_previous_line_are_checked_where_they_differ() {
        let text = "# TYPE h histogram\nh_bucket{a=\"x\",le=\"1\"} 1\nh_bucket{a=\"x\",le=\"+Inf\"} 2\n\
                    h_sum{a=\"x\"} 1\nh_count{a=\"x\"} 2\n# TYPE s summary\ns{a=\"x\",quantile=\"0.5\"} 1\n\
                    s{a=\"x\",quantile=\"0.9\"} 4\n";
        let expo = ok(text);
        let h = &expo.families[0].samples;
        assert_eq!(labels(&h[1]), [("a", "x"), ("le", "+Inf")]);
        assert_eq!(h[1].bound, Some(f64::INFINITY));
        let s = &expo.families[1].samples;
        assert_eq!((labels(&s[1]), s[1].bound, s[1].value), (vec![("a", "x"), ("quantile", "0.9")], Some(0.9), 4.0));
        let cases = [
            ("h_bucket{a=\"x\",le=\"2\",a=\"y\"} 2", "duplicate label \"a\""),
            ("h_bucket{a=\"x\",le=\"2\",le=\"3\"} 2", "duplicate label \"le\""),
            ("h_bucket{a=\"x\",le=\"x\"} 2", "invalid \"le\" value \"x\""),
            ("h_bucket{a=\"x\",le=\"2\" 2", "expected ',' or '}' after label \"le\""),
        ];
        for (line, reason) in cases {
            let text = format!("# TYPE h histogram\nh_bucket{{a=\"x\",le=\"1\"}} 1\n{line}\n");
            assert_eq!(err(&text), ParseError { line: 3, reason: reason.to_owned() }, "{line}");
        }
    }
}
