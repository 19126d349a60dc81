//! The overview's view model: what the request asked for ([`View`]), the cards from the latest
//! live points, and the panels from a window of points. Pure functions over already-read data,
//! so the handler stays thin and the page is testable without a server.

use std::collections::{BTreeMap, HashMap};

use super::charts::{self, ChartSpec, ChartView, Mark, Series, Unit, compact, fmt_usd, fmt_value};
use super::models::ModelUsage;
use crate::point::{Counts, Point, error_share_pct};

/// Ranges offered by the selector.
pub(crate) const RANGES: [&str; 6] = ["5m", "15m", "1h", "6h", "24h", "7d"];
/// Points per series asked from the source: enough for a 640-unit-wide chart, and well under
/// the ~600-point limit that keeps the page small (docs/decisions.md, Dashboard pages).
pub(crate) const CHART_POINTS: i64 = 240;

/// The overview's selection, from the query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// Range text (`1h`).
    pub range: String,
    /// `all` or one variant.
    pub variant: String,
    /// One target URL (per-pod view), or none; always in the form shown, credentials hidden,
    /// since the page repeats it in every link.
    pub target: Option<String>,
}

impl View {
    /// Reads `range`, `variant` and `target`; validation happens in the metrics query parser.
    pub(crate) fn from_params(params: &HashMap<String, String>) -> Self {
        let get = |k: &str| params.get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        Self {
            range: get("range").unwrap_or_else(|| "1h".to_owned()),
            variant: get("variant").unwrap_or_else(|| "all".to_owned()),
            target: get("target").map(|t| crate::redact::redact(&t).into_owned()),
        }
    }

    /// The parameters of the range query behind the charts.
    pub(crate) fn metrics_params(&self) -> HashMap<String, String> {
        let mut p = HashMap::from([
            ("range".to_owned(), self.range.clone()),
            ("variant".to_owned(), self.variant.clone()),
            ("max_points".to_owned(), CHART_POINTS.to_string()),
        ]);
        if let Some(t) = &self.target {
            p.insert("target".to_owned(), t.clone());
        }
        p
    }

    /// `/api/export?panel=..&range=..&variant=..[&target=..]&format=..`: a download of what the
    /// selection shows (`panel` `None`: every field).
    pub(crate) fn export_href(&self, panel: Option<&str>, format: &str) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        if let Some(p) = panel {
            s.append_pair("panel", p);
        }
        s.append_pair("range", &self.range).append_pair("variant", &self.variant);
        if let Some(t) = &self.target {
            s.append_pair("target", t);
        }
        s.append_pair("format", format);
        format!("/api/export?{}", s.finish())
    }

    /// `/?range=..&variant=..[&target=..]` with one field changed.
    pub(crate) fn href(&self, range: &str, variant: &str) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        s.append_pair("range", range).append_pair("variant", variant);
        if let Some(t) = &self.target {
            s.append_pair("target", t);
        }
        format!("/?{}", s.finish())
    }
}

/// A selector link.
#[derive(Debug, Clone)]
pub struct Link {
    /// Text.
    pub label: String,
    /// Target URL (escaped by the template).
    pub href: String,
    /// Marks the current choice (`aria-current`).
    pub current: bool,
}

/// Range links of the selector.
pub fn range_links(view: &View) -> Vec<Link> {
    RANGES
        .iter()
        .map(|r| Link { label: (*r).to_owned(), href: view.href(r, &view.variant), current: *r == view.range })
        .collect()
}

/// Variant links: `all`, then each known variant.
pub fn variant_links(view: &View, variants: &[String]) -> Vec<Link> {
    std::iter::once("all")
        .chain(variants.iter().map(String::as_str))
        .map(|v| Link { label: v.to_owned(), href: view.href(&view.range, v), current: v == view.variant })
        .collect()
}

/// A labelled value on a card; `field` names the live point field the script updates.
#[derive(Debug, Clone)]
pub struct Stat {
    /// Label.
    pub label: &'static str,
    /// Formatted value.
    pub value: String,
    /// Point field for live updates (empty: not live).
    pub field: &'static str,
}

/// A variant's card.
#[derive(Debug, Clone)]
pub struct Card {
    /// Variant.
    pub name: String,
    /// Colour slot.
    pub color: usize,
    /// Healthy?
    pub healthy: bool,
    /// Version(s) reported.
    pub version: String,
    /// Latest point's time (Unix ms; 0 when none), for the stale timer.
    pub ts: i64,
    /// Values.
    pub stats: Vec<Stat>,
    /// Quota windows, preformatted (`5h: 42% used, resets 13:00 UTC`).
    pub quota: Vec<String>,
}

fn opt(unit: Unit, v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| fmt_value(unit, v))
}

/// The card of one variant from its latest live point (if any).
pub fn card(name: &str, color: usize, healthy: bool, version: String, p: Option<&Point>) -> Card {
    let f = |get: fn(&Point) -> f64, unit| p.map_or_else(|| "–".to_owned(), |p| fmt_value(unit, get(p)));
    let o = |get: fn(&Point) -> Option<f64>, unit| opt(unit, p.and_then(get));
    let mut stats = vec![
        Stat { label: "Requests", value: f(|p| p.req_rate, Unit::PerSecond), field: "req_rate" },
        Stat { label: "Errors (5xx)", value: o(|p| p.error_rate_pct, Unit::Percent), field: "error_rate_pct" },
        Stat { label: "p50", value: o(|p| p.latency_p50, Unit::Ms), field: "latency_p50" },
        Stat { label: "p95", value: o(|p| p.latency_p95, Unit::Ms), field: "latency_p95" },
        Stat { label: "p99", value: o(|p| p.latency_p99, Unit::Ms), field: "latency_p99" },
        Stat {
            label: "In flight",
            value: p.map_or_else(
                || "–".to_owned(),
                |p| format!("{} of {} workers", compact(p.concurrent_requests), compact(p.max_workers)),
            ),
            field: "",
        },
        Stat { label: "Worker use", value: f(|p| p.worker_utilization * 100.0, Unit::Percent), field: "" },
        Stat { label: "Tokens in", value: f(|p| p.token_rate_in, Unit::TokensPerSecond), field: "token_rate_in" },
        Stat { label: "Tokens out", value: f(|p| p.token_rate_out, Unit::TokensPerSecond), field: "token_rate_out" },
        Stat {
            label: "Cache tokens",
            value: f(|p| p.token_rate_cache_read + p.token_rate_cache_write, Unit::TokensPerSecond),
            field: "",
        },
        Stat { label: "Cost", value: f(|p| p.cost_rate_usd * 3600.0, Unit::UsdPerHour), field: "" },
    ];
    if p.is_some_and(|p| p.ttft_p50.is_some()) {
        stats.push(Stat { label: "TTFT p50", value: o(|p| p.ttft_p50, Unit::Ms), field: "ttft_p50" });
        stats.push(Stat { label: "TTFT p95", value: o(|p| p.ttft_p95, Unit::Ms), field: "ttft_p95" });
    }
    Card {
        name: name.to_owned(),
        color,
        healthy,
        version,
        ts: p.map_or(0, |p| p.timestamp),
        stats,
        quota: p.and_then(|p| p.quota.as_ref()).map(quota_lines).unwrap_or_default(),
    }
}

fn quota_lines(q: &crate::point::Quota) -> Vec<String> {
    let mut out = Vec::new();
    for (name, w) in [("5h", &q.five_hour), ("Week", &q.weekly)] {
        let Some(w) = w else { continue };
        let used = w.usage_ratio.map_or_else(|| "–".to_owned(), |r| format!("{:.0}% used", r * 100.0));
        let reset = w.reset_time_unix.and_then(|s| chrono::DateTime::from_timestamp(s as i64, 0));
        let reset = reset.map_or_else(String::new, |t| format!(", resets {} UTC", t.format("%a %H:%M")));
        out.push(format!("{name}: {used}{reset}"));
    }
    if let Some(age) = q.sample_age_seconds {
        out.push(format!("sample {age:.0} s old"));
    }
    out
}

/// A legend entry under a chart.
#[derive(Debug, Clone)]
pub struct LegendItem {
    /// CSS classes (colour, style).
    pub class: String,
    /// Text.
    pub label: String,
    /// Latest value.
    pub last: String,
}

/// A key figure above a chart.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Label.
    pub label: String,
    /// Value.
    pub value: String,
}

/// One panel: a title, key figures, a chart with its legend.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Stable id (`requests`, `latency`, ...), also the element id.
    pub id: &'static str,
    /// Title.
    pub title: &'static str,
    /// Figures over the range.
    pub figures: Vec<Figure>,
    /// The chart.
    pub chart: ChartView,
    /// Legend.
    pub legend: Vec<LegendItem>,
}

/// One line of a panel per variant: its name within the panel (empty when the panel has one
/// metric) and how it is read from a point. Series styles within a panel: the variant gives the
/// colour, the metric the line style.
pub(crate) type Metric = (&'static str, fn(&Point) -> Option<f64>);

/// What a chart panel shows: the overview draws it and `/api/export?panel=` downloads it, from
/// this one definition.
#[derive(Debug)]
pub(crate) struct PanelSpec {
    /// Stable id (`requests`, `latency`, ...), also the element id and the export's name.
    pub id: &'static str,
    /// Title.
    pub title: &'static str,
    /// Unit of every metric.
    pub unit: Unit,
    /// The metrics drawn.
    pub metrics: &'static [Metric],
    /// Drawn only when some point has a value (TTFT exists only when targets export it).
    pub optional: bool,
}

/// The overview's chart panels, in page order.
pub(crate) const PANEL_SPECS: &[PanelSpec] = &[
    PanelSpec {
        id: "requests",
        title: "Request rate by status class",
        unit: Unit::PerSecond,
        metrics: &[
            ("2xx", |p| Some(class_rate(p, '2'))),
            ("4xx", |p| Some(class_rate(p, '4'))),
            ("5xx", |p| Some(class_rate(p, '5'))),
        ],
        optional: false,
    },
    PanelSpec {
        id: "latency",
        title: "Latency p50 / p95 / p99",
        unit: Unit::Ms,
        metrics: &[("p50", |p| p.latency_p50), ("p95", |p| p.latency_p95), ("p99", |p| p.latency_p99)],
        optional: false,
    },
    PanelSpec {
        id: "errors",
        title: "Error rate (5xx share)",
        unit: Unit::Percent,
        metrics: &[("", |p| p.error_rate_pct)],
        optional: false,
    },
    PanelSpec {
        id: "tokens",
        title: "Token rates",
        unit: Unit::TokensPerSecond,
        metrics: &[
            ("in", |p| Some(p.token_rate_in)),
            ("out", |p| Some(p.token_rate_out)),
            ("cache read", |p| Some(p.token_rate_cache_read)),
            ("cache write", |p| Some(p.token_rate_cache_write)),
        ],
        optional: false,
    },
    PanelSpec {
        id: "concurrency",
        title: "Concurrency and workers",
        unit: Unit::Count,
        metrics: &[("in flight", |p| Some(p.concurrent_requests)), ("max workers", |p| Some(p.max_workers))],
        optional: false,
    },
    PanelSpec {
        id: "utilization",
        title: "Worker utilization",
        unit: Unit::Percent,
        metrics: &[("", |p| Some(p.worker_utilization * 100.0))],
        optional: false,
    },
    PanelSpec {
        id: "ratelimit",
        title: "Rate limit, rejections and retries",
        unit: Unit::PerSecond,
        metrics: &[
            ("limit", |p| Some(p.rate_limit_rps)),
            ("rejected", |p| Some(p.rejection_rate)),
            ("retries", |p| Some(p.retry_rate)),
        ],
        optional: false,
    },
    PanelSpec {
        id: "cost",
        title: "Estimated cost",
        unit: Unit::UsdPerHour,
        metrics: &[("", |p| Some(p.cost_rate_usd * 3600.0))],
        optional: false,
    },
    PanelSpec {
        id: "ttft",
        title: "Time to first token",
        unit: Unit::Ms,
        metrics: &[("p50", |p| p.ttft_p50), ("p95", |p| p.ttft_p95), ("p99", |p| p.ttft_p99)],
        optional: true,
    },
];

/// The panel definition with this id.
pub(crate) fn panel_spec(id: &str) -> Option<&'static PanelSpec> {
    PANEL_SPECS.iter().find(|s| s.id == id)
}

fn panel(
    spec: &'static PanelSpec,
    window: (i64, i64),
    by_variant: &[(String, usize, Vec<&Point>)],
    marks: &[Mark],
) -> Panel {
    let mut series = Vec::new();
    for (variant, color, points) in by_variant {
        for (style, (name, get)) in spec.metrics.iter().enumerate() {
            let label = if name.is_empty() { variant.clone() } else { format!("{variant} {name}") };
            series.push(Series {
                label,
                color: *color,
                style,
                values: points.iter().map(|p| (p.timestamp, get(p))).collect(),
            });
        }
    }
    let chart = charts::build(&ChartSpec {
        start_ms: window.0,
        end_ms: window.1,
        unit: spec.unit,
        series,
        marks: marks.iter().filter(|m| m.panels.is_empty() || m.panels.contains(&spec.id)).cloned().collect(),
    });
    let legend = chart
        .lines
        .iter()
        .map(|l| LegendItem { class: l.class.clone(), label: l.label.clone(), last: l.last.clone() })
        .collect();
    Panel { id: spec.id, title: spec.title, figures: Vec::new(), chart, legend }
}

fn class_rate(p: &Point, class: char) -> f64 {
    p.status_code_rates.iter().filter(|(k, _)| k.starts_with(class)).fold(0.0, |a, (_, v)| a + v)
}

/// Everything below the cards, for a window of points and the window's summed increases.
pub struct Panels {
    /// The charts.
    pub panels: Vec<Panel>,
    /// Tokens and cost by model.
    pub models: Vec<ModelRow>,
    /// Most frequent status codes per variant over the range.
    pub status_codes: Vec<StatusRow>,
    /// What the range's sums cover, when less than the range (`the last 2m 10s`); empty when
    /// the data fills the range.
    pub covered: String,
    /// Who is waiting: the caller buckets over the range (empty: no proxy exports them).
    pub waiting: Vec<super::waiting::WaitRow>,
}

/// A line of the per-model table, formatted.
#[derive(Debug, Clone)]
pub struct ModelRow {
    /// Variant.
    pub variant: String,
    /// Model (untrusted: escaped by the template).
    pub model: String,
    /// Input tokens.
    pub input: String,
    /// Output tokens.
    pub output: String,
    /// Cache read + write tokens.
    pub cache: String,
    /// Cost over the range.
    pub cost: String,
}

/// A line of the status code table.
#[derive(Debug, Clone)]
pub struct StatusRow {
    /// Variant.
    pub variant: String,
    /// Status code.
    pub code: String,
    /// Requests over the range.
    pub count: String,
    /// Share of the variant's requests.
    pub share: String,
}

/// Colour slot of each variant: its position among all known variants, so a variant keeps its
/// colour whichever subset is shown.
pub fn colors(variants: &[String]) -> HashMap<String, usize> {
    variants.iter().enumerate().map(|(i, v)| (v.clone(), i)).collect()
}

/// Points of each shown variant, with the variant's colour slot.
type ByVariant<'a> = Vec<(String, usize, Vec<&'a Point>)>;

fn group_by_variant<'a>(points: &'a [Point], colors: &HashMap<String, usize>) -> ByVariant<'a> {
    let mut grouped: BTreeMap<&str, Vec<&Point>> = BTreeMap::new();
    for p in points {
        grouped.entry(p.variant.as_str()).or_default().push(p);
    }
    grouped.into_iter().map(|(v, ps)| (v.to_owned(), colors.get(v).copied().unwrap_or(colors.len()), ps)).collect()
}

/// One panel per chart of the overview, in page order; optional ones only when they have data.
fn chart_panels(points: &[Point], window: (i64, i64), by_variant: &ByVariant<'_>, marks: &[Mark]) -> Vec<Panel> {
    PANEL_SPECS
        .iter()
        .filter(|spec| !spec.optional || points.iter().any(|p| spec.metrics.iter().any(|(_, get)| get(p).is_some())))
        .map(|spec| panel(spec, window, by_variant, marks))
        .collect()
}

/// The range's totals above the request, error and cost charts, per variant.
fn add_window_figures(panels: &mut [Panel], counts: &BTreeMap<String, Counts>) {
    for panel in panels.iter_mut() {
        for (variant, c) in counts {
            let n = c.total_requests();
            let figure = match panel.id {
                "requests" => Figure { label: format!("{variant} requests"), value: compact(n) },
                "errors" => {
                    let share = error_share_pct(c.requests_in_class('5'), n);
                    Figure { label: format!("{variant} 5xx"), value: opt(Unit::Percent, share) }
                }
                "cost" => {
                    let usd = c.cost_by_direction().iter().fold(0.0, |a, b| a + b);
                    Figure { label: format!("{variant} total"), value: fmt_usd(usd) }
                }
                _ => continue,
            };
            panel.figures.push(figure);
        }
    }
}

/// Builds the panels.
pub fn panels(
    points: &[Point],
    window: (i64, i64),
    colors: &HashMap<String, usize>,
    counts: &BTreeMap<String, Counts>,
    models: &[ModelUsage],
) -> Panels {
    panels_marked(points, window, colors, (counts, models), &[])
}

/// [`panels`] with moments and periods marked on every chart (version changes, alerts).
pub(crate) fn panels_marked(
    points: &[Point],
    window: (i64, i64),
    colors: &HashMap<String, usize>,
    (counts, models): (&BTreeMap<String, Counts>, &[ModelUsage]),
    marks: &[Mark],
) -> Panels {
    let by_variant = group_by_variant(points, colors);
    let mut panels = chart_panels(points, window, &by_variant, marks);
    add_window_figures(&mut panels, counts);
    Panels {
        panels,
        models: model_rows(models),
        status_codes: status_rows(counts),
        covered: String::new(),
        waiting: super::waiting::rows(counts),
    }
}

fn model_rows(models: &[ModelUsage]) -> Vec<ModelRow> {
    models
        .iter()
        .map(|m| ModelRow {
            variant: m.variant.clone(),
            model: m.model.clone(),
            input: compact(m.tokens_input),
            output: compact(m.tokens_output),
            cache: compact(m.tokens_cache_read + m.tokens_cache_write),
            cost: fmt_usd(m.cost_usd),
        })
        .collect()
}

/// Top five status codes of each variant over the range.
fn status_rows(counts: &BTreeMap<String, Counts>) -> Vec<StatusRow> {
    let mut out = Vec::new();
    for (variant, c) in counts {
        let total = c.total_requests();
        let mut codes: Vec<(&crate::point::Label, &f64)> = c.requests.iter().filter(|(_, n)| **n > 0.0).collect();
        codes.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
        for (code, n) in codes.into_iter().take(5) {
            out.push(StatusRow {
                variant: variant.clone(),
                code: code.to_string(),
                count: compact(*n),
                share: fmt_value(Unit::Percent, 100.0 * n / total.max(1.0)),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_keep_the_other_selections_and_encode_values() {
        let view =
            View { range: "6h".into(), variant: "canary".into(), target: Some("http://a:1/metrics?x=1&y".into()) };
        let r = range_links(&view);
        assert_eq!(r.len(), 6);
        assert!(r.iter().find(|l| l.label == "6h").unwrap().current);
        assert_eq!(r[0].href, "/?range=5m&variant=canary&target=http%3A%2F%2Fa%3A1%2Fmetrics%3Fx%3D1%26y");
        let v = variant_links(&view, &["canary".into(), "production".into()]);
        assert_eq!(v.iter().map(|l| l.label.as_str()).collect::<Vec<_>>(), ["all", "canary", "production"]);
        assert!(v[1].current && !v[0].current);
    }

    #[test]
    fn defaults_are_one_hour_all_variants() {
        let v = View::from_params(&HashMap::new());
        assert_eq!((v.range.as_str(), v.variant.as_str(), v.target.as_deref()), ("1h", "all", None));
        assert_eq!(v.metrics_params()["max_points"], "240");
    }
}
