//! Server-side line charts: series of `(time, value)` in, geometry out, ready for the
//! `chart.html` template to draw as inline SVG (first paint needs no JavaScript).
//!
//! The builder only produces numbers and short label strings; the template writes the markup,
//! so every label (variant names come from targets) goes through Askama's HTML escaping. Gaps
//! (`None`, a bucket without requests) break a line instead of drawing a fake zero. Time labels
//! are UTC; each carries its Unix ms in `data-t` so the live script can relabel it in the
//! viewer's zone. Hover values need no script either: the plot is cut into slots, each a
//! transparent `<rect>` whose `<title>` lists every series' value at that time.

use std::fmt::Write as _;

/// SVG user units of every chart (the SVG scales to its container).
pub(crate) const WIDTH: f64 = 640.0;
/// Height in SVG user units.
pub(crate) const HEIGHT: f64 = 180.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 24.0;
/// Hover slots per chart: enough to read values, few enough to keep the page small.
const MAX_SLOTS: usize = 60;

/// What a value measures; decides axis labels and hover text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Requests (or events) per second.
    PerSecond,
    /// Milliseconds.
    Ms,
    /// Percent (0..100).
    Percent,
    /// Tokens per second.
    TokensPerSecond,
    /// US dollars per hour.
    UsdPerHour,
    /// A plain count (in-flight requests, workers).
    Count,
}

impl Unit {
    /// Short unit text for axes and legends.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Unit::PerSecond => "/s",
            Unit::Ms => "ms",
            Unit::Percent => "%",
            Unit::TokensPerSecond => "tok/s",
            Unit::UsdPerHour => "USD/h",
            Unit::Count => "",
        }
    }
}

/// Formats a value with its unit for people: `1.23k/s`, `850 ms`, `6.84 s`, `2.50%`, `$0.0042/h`.
pub(crate) fn fmt_value(unit: Unit, v: f64) -> String {
    if !v.is_finite() {
        return "–".to_owned();
    }
    match unit {
        Unit::Ms if v.abs() >= 1000.0 => format!("{:.2} s", v / 1000.0),
        Unit::Ms => format!("{v:.0} ms"),
        Unit::Percent => format!("{v:.2}%"),
        Unit::UsdPerHour => format!("{}/h", fmt_usd(v)),
        Unit::Count => compact(v),
        Unit::PerSecond => format!("{}/s", compact(v)),
        Unit::TokensPerSecond => format!("{} tok/s", compact(v)),
    }
}

/// Dollars: four decimals below one cent so small costs do not read as zero.
pub(crate) fn fmt_usd(v: f64) -> String {
    let sign = if v < 0.0 { "-" } else { "" };
    let a = v.abs();
    if a != 0.0 && a < 0.01 { format!("{sign}${a:.4}") } else { format!("{sign}${a:.2}") }
}

/// Compact number: `0.42`, `12.3`, `850`, `1.23k`, `4.5M`; whole numbers below 10k without
/// decimals (`3`, `10`, `1500`).
pub(crate) fn compact(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        "–".to_owned()
    } else if a >= 1e15 {
        format!("{v:.2e}") // a hostile or broken target's value: short, still honest
    } else if a < 1e4 && v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.2}k", v / 1e3)
    } else if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// One line of a chart.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    /// Legend text (for example `canary p95`); escaped by the template.
    pub label: String,
    /// Colour slot 0..8 (one per variant), a CSS class `c{n}`.
    pub color: usize,
    /// Line style 0..3 (solid, dashed, dotted, dash-dot), a CSS class `l{n}`.
    pub style: usize,
    /// Values in time order; `None` is a gap.
    pub values: Vec<(i64, Option<f64>)>,
}

/// Something to mark on a chart's time axis: a moment (a version change: `from_ms == to_ms`)
/// or a period (an alert firing).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mark {
    /// Start, Unix ms.
    pub from_ms: i64,
    /// End, Unix ms (equal to `from_ms` for a moment).
    pub to_ms: i64,
    /// What happened (escaped by the template).
    pub label: String,
    /// CSS class (`version`, `alert`).
    pub class: &'static str,
    /// Panels it belongs on (`errors`, `latency`, ...); empty: every chart.
    pub panels: &'static [&'static str],
}

/// A mark, placed.
#[derive(Debug, Clone)]
pub struct MarkView {
    /// Left edge (or the line's position).
    pub x: String,
    /// Width; `None` draws a line.
    pub w: Option<String>,
    /// Tooltip.
    pub label: String,
    /// CSS class.
    pub class: &'static str,
}

/// Everything needed to draw one chart.
#[derive(Debug, Clone)]
pub(crate) struct ChartSpec {
    /// Window start, Unix ms.
    pub start_ms: i64,
    /// Window end, Unix ms.
    pub end_ms: i64,
    /// Unit of every series.
    pub unit: Unit,
    /// Lines.
    pub series: Vec<Series>,
    /// Moments and periods marked on the time axis.
    pub marks: Vec<Mark>,
}

/// An axis tick: position and label.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    /// Position in SVG units (y for value ticks, x for time ticks), one decimal.
    pub pos: String,
    /// Label text.
    pub label: String,
    /// Unix ms for time ticks (0 for value ticks), for relabelling in the viewer's zone.
    pub ms: i64,
}

/// A drawn line.
#[derive(Debug, Clone)]
pub struct LineView {
    /// SVG path data (numbers and `M`/`L` only).
    pub d: String,
    /// CSS classes: colour and style.
    pub class: String,
    /// Legend text.
    pub label: String,
    /// Latest value, formatted, for the legend.
    pub last: String,
}

/// A hover slot.
#[derive(Debug, Clone)]
pub struct Slot {
    /// Left edge.
    pub x: String,
    /// Width.
    pub w: String,
    /// Tooltip: time and every series' value.
    pub title: String,
}

/// Geometry of a chart, for `chart.html`.
#[derive(Debug, Clone)]
pub struct ChartView {
    /// `viewBox` width.
    pub width: f64,
    /// `viewBox` height.
    pub height: f64,
    /// Plot area edges.
    pub left: f64,
    /// Right edge of the plot area.
    pub right: f64,
    /// Top edge of the plot area.
    pub top: f64,
    /// Bottom edge of the plot area.
    pub bottom: f64,
    /// Value grid lines.
    pub y_ticks: Vec<Tick>,
    /// Time labels.
    pub x_ticks: Vec<Tick>,
    /// Lines.
    pub lines: Vec<LineView>,
    /// Hover slots.
    pub slots: Vec<Slot>,
    /// Marks inside the window.
    pub marks: Vec<MarkView>,
    /// True when no series has a value: the template says "no data" instead.
    pub empty: bool,
    /// Unit text.
    pub unit: &'static str,
}

/// Rounds to one decimal for compact, stable SVG numbers.
fn n1(v: f64) -> String {
    let r = (v * 10.0).round() / 10.0;
    if r == r.trunc() { format!("{r:.0}") } else { format!("{r:.1}") }
}

/// A "nice" tick step (1, 2 or 5 x 10^k) giving at most about `target` intervals over `span`.
pub(crate) fn nice_step(span: f64, target: f64) -> f64 {
    if span.is_nan() || span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / target;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Time tick steps to choose from, in ms.
const TIME_STEPS: [i64; 13] = [
    60_000,
    120_000,
    300_000,
    600_000,
    900_000,
    1_800_000,
    3_600_000,
    7_200_000,
    10_800_000,
    21_600_000,
    43_200_000,
    86_400_000,
    172_800_000,
];

fn time_label(ms: i64, step: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    if step >= 86_400_000 { t.format("%m-%d").to_string() } else { t.format("%H:%M").to_string() }
}

/// Largest magnitude drawn: targets are not trusted, and a value of `1.7e308` must neither
/// overflow the axis arithmetic nor flatten every other line to zero; beyond it a line is drawn
/// at the edge (the hover text and legend still say the value).
pub(crate) const MAX_DRAWN: f64 = 1e12;
/// Most value grid lines a chart gets, whatever the values.
const MAX_Y_TICKS: usize = 12;

/// A value as drawn: finite and within [`MAX_DRAWN`], or a gap.
fn drawn(v: &Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite()).map(|x| x.clamp(-MAX_DRAWN, MAX_DRAWN))
}

/// The value axis: its bounds and grid lines.
struct YAxis {
    lo: f64,
    hi: f64,
    ticks: Vec<(f64, String)>,
}

/// A value axis covering every drawn value and zero, on a "nice" step. The number of grid lines
/// is counted from the step, never found by stepping a float until it passes the top, so no
/// value can make the loop run away.
fn y_axis(spec: &ChartSpec) -> (YAxis, bool) {
    let values = || spec.series.iter().flat_map(|s| s.values.iter().filter_map(|(_, v)| drawn(v)));
    let max = values().fold(f64::NAN, f64::max);
    let min = values().fold(f64::NAN, f64::min);
    let empty = max.is_nan();
    let lo = if min.is_finite() { min.min(0.0) } else { 0.0 };
    let mut hi = if max.is_finite() { max.max(0.0) } else { 0.0 };
    if hi - lo <= 0.0 {
        hi = lo + 1.0;
    }
    let step = nice_step(hi - lo, 4.0);
    let y_lo = (lo / step).floor() * step;
    let y_hi = ((hi / step).ceil() * step).max(y_lo + step);
    let count = (((y_hi - y_lo) / step).round() as usize).clamp(1, MAX_Y_TICKS);
    let ticks = (0..=count).map(|i| y_lo + step * i as f64).map(|v| (v, axis_label(spec.unit, v, step))).collect();
    (YAxis { lo: y_lo, hi: y_lo + step * count as f64, ticks }, empty)
}

/// Time labels on a round step giving at most six, inside the plot's horizontal margins.
fn time_ticks(spec: &ChartSpec, x: impl Fn(i64) -> f64, (l, r): (f64, f64)) -> Vec<Tick> {
    let span_ms = (spec.end_ms - spec.start_ms).max(1);
    let tstep = TIME_STEPS.iter().copied().find(|s| span_ms / s <= 6).unwrap_or(TIME_STEPS[TIME_STEPS.len() - 1]);
    let first = crate::clock::bucket_end(spec.start_ms, tstep);
    (0..=span_ms / tstep + 1)
        .map(|i| first + i * tstep)
        .take_while(|tm| *tm <= spec.end_ms)
        .filter(|tm| x(*tm) >= l + 12.0 && x(*tm) <= r - 12.0)
        .map(|tm| Tick { pos: n1(x(tm)), label: time_label(tm, tstep), ms: tm })
        .collect()
}

/// One series as SVG path data: gaps lift the pen.
fn line(s: &Series, unit: Unit, x: impl Fn(i64) -> f64, y: impl Fn(f64) -> f64) -> LineView {
    let mut d = String::new();
    let mut pen_down = false;
    for (ts, v) in &s.values {
        match drawn(v) {
            Some(v) => {
                let _ = write!(d, "{}{} {}", if pen_down { "L" } else { "M" }, n1(x(*ts)), n1(y(v)));
                pen_down = true;
            }
            None => pen_down = false,
        }
    }
    let last = s.values.iter().rev().find_map(|(_, v)| v.filter(|x| x.is_finite()));
    LineView {
        d,
        class: format!("c{} l{}", s.color % 8, s.style % 4),
        label: s.label.clone(),
        last: last.map_or_else(|| "–".to_owned(), |v| fmt_value(unit, v)),
    }
}

/// Builds the geometry of `spec`. Never yields NaN or infinite coordinates: non-finite values
/// are treated as gaps, huge ones are drawn at [`MAX_DRAWN`], and an all-zero or empty chart
/// gets a unit-high axis.
pub(crate) fn build(spec: &ChartSpec) -> ChartView {
    let (l, r, t, b) = (LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM);
    let span_ms = (spec.end_ms - spec.start_ms).max(1);
    let (axis, empty) = y_axis(spec);
    let x = |ms: i64| l + (r - l) * ((ms - spec.start_ms) as f64 / span_ms as f64).clamp(0.0, 1.0);
    let y = |v: f64| b - (b - t) * ((v - axis.lo) / (axis.hi - axis.lo));
    let y_ticks = axis.ticks.iter().map(|(v, label)| Tick { pos: n1(y(*v)), label: label.clone(), ms: 0 }).collect();
    ChartView {
        width: WIDTH,
        height: HEIGHT,
        left: l,
        right: r,
        top: t,
        bottom: b,
        y_ticks,
        x_ticks: time_ticks(spec, x, (l, r)),
        lines: spec.series.iter().map(|s| line(s, spec.unit, x, y)).collect(),
        slots: if empty { Vec::new() } else { slots(spec, l, r) },
        marks: marks(spec, x),
        empty,
        unit: spec.unit.label(),
    }
}

/// The marks that overlap the window, clipped to it.
fn marks(spec: &ChartSpec, x: impl Fn(i64) -> f64) -> Vec<MarkView> {
    spec.marks
        .iter()
        .filter(|m| m.to_ms >= spec.start_ms && m.from_ms <= spec.end_ms)
        .map(|m| {
            let (x0, x1) = (x(m.from_ms), x(m.to_ms));
            let w = (m.to_ms > m.from_ms).then(|| n1((x1 - x0).max(1.0)));
            MarkView { x: n1(x0), w, label: m.label.clone(), class: m.class }
        })
        .collect()
}

fn axis_label(unit: Unit, v: f64, step: f64) -> String {
    let num = if step < 0.1 {
        format!("{v:.2}")
    } else if step < 1.0 {
        format!("{v:.1}")
    } else if v.abs() < 1e4 {
        format!("{v:.0}")
    } else {
        compact(v)
    };
    let num = trim_point_zero(num);
    match unit {
        Unit::Ms if step >= 1000.0 => format!("{} s", trim_point_zero(compact(v / 1000.0))),
        Unit::UsdPerHour => format!("${num}"),
        Unit::Percent => format!("{num}%"),
        _ => num,
    }
}

/// `300.0k` -> `300k`, `50.0` -> `50`: axis labels sit on round values.
fn trim_point_zero(s: String) -> String {
    match s.find(".0") {
        Some(i) if !s[i + 2..].starts_with(|c: char| c.is_ascii_digit()) => format!("{}{}", &s[..i], &s[i + 2..]),
        _ => s,
    }
}

/// Hover slots: the window cut into at most [`MAX_SLOTS`] columns; each lists the time of its
/// newest point and every series' newest value inside the column.
fn slots(spec: &ChartSpec, l: f64, r: f64) -> Vec<Slot> {
    let times: Vec<i64> = {
        let mut t: Vec<i64> = spec.series.iter().flat_map(|s| s.values.iter().map(|(ts, _)| *ts)).collect();
        t.sort_unstable();
        t.dedup();
        t
    };
    if times.is_empty() {
        return Vec::new();
    }
    let n = times.len().min(MAX_SLOTS);
    let span = (spec.end_ms - spec.start_ms).max(1) as f64;
    let width = (r - l) / n as f64;
    (0..n)
        .filter_map(|i| {
            let from = spec.start_ms + (span * i as f64 / n as f64) as i64;
            let to = spec.start_ms + (span * (i + 1) as f64 / n as f64) as i64;
            let in_slot = |ts: i64| ts > from && ts <= to;
            let newest = times.iter().rev().copied().find(|&ts| in_slot(ts))?;
            let mut title = format!(
                "{} UTC",
                chrono::DateTime::from_timestamp_millis(newest).unwrap_or_default().format("%Y-%m-%d %H:%M:%S")
            );
            for s in &spec.series {
                let v =
                    s.values.iter().rev().find(|(ts, _)| in_slot(*ts)).and_then(|(_, v)| v.filter(|x| x.is_finite()));
                let _ =
                    write!(title, "\n{}: {}", s.label, v.map_or_else(|| "–".to_owned(), |v| fmt_value(spec.unit, v)));
            }
            Some(Slot { x: n1(l + width * i as f64), w: n1(width), title })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(values: Vec<(i64, Option<f64>)>) -> ChartSpec {
        ChartSpec {
            start_ms: 0,
            end_ms: 3_600_000,
            unit: Unit::PerSecond,
            series: vec![Series { label: "production".into(), color: 0, style: 0, values }],
            marks: vec![],
        }
    }

    fn all_numbers(view: &ChartView) -> String {
        let mut s = String::new();
        for l in &view.lines {
            s += &l.d;
        }
        for t in view.y_ticks.iter().chain(&view.x_ticks) {
            s += &t.pos;
        }
        for sl in &view.slots {
            s += &sl.x;
            s += &sl.w;
        }
        s
    }

    #[test]
    fn values_scale_into_the_plot_area() {
        let v = build(&spec(vec![(0, Some(0.0)), (1_800_000, Some(5.0)), (3_600_000, Some(10.0))]));
        assert_eq!(v.lines[0].d, "M56 156L343 83L630 10");
        assert_eq!(v.y_ticks.first().unwrap().label, "0");
        assert_eq!(v.y_ticks.last().unwrap().label, "10");
        assert_eq!(v.lines[0].last, "10/s");
        assert!(!v.empty);
    }

    #[test]
    fn gaps_break_the_line_and_nan_never_reaches_the_svg() {
        let v = build(&spec(vec![
            (0, Some(1.0)),
            (600_000, None),
            (1_200_000, Some(f64::NAN)),
            (1_800_000, Some(f64::INFINITY)),
            (2_400_000, Some(2.0)),
            (3_000_000, Some(3.0)),
        ]));
        assert_eq!(v.lines[0].d.matches('M').count(), 2, "{}", v.lines[0].d);
        let text = all_numbers(&v);
        assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
    }

    #[test]
    fn an_empty_or_flat_series_gets_a_sane_axis() {
        for values in [vec![], vec![(60_000, None)], vec![(60_000, Some(0.0)), (120_000, Some(0.0))]] {
            let v = build(&spec(values.clone()));
            let text = all_numbers(&v);
            assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
            assert!(v.y_ticks.len() >= 2);
            assert_eq!(v.empty, values.iter().all(|(_, v)| v.is_none()));
        }
        let none = build(&ChartSpec { series: vec![], ..spec(vec![]) });
        assert!(none.empty && none.lines.is_empty() && none.slots.is_empty());
    }

    #[test]
    fn extreme_values_neither_hang_nor_overflow_the_axis() {
        // A hostile target's gauges: the span overflows f64 if computed naively, and stepping a
        // float by 1 from -1.7e308 never reaches the top.
        let v = build(&spec(vec![(0, Some(-1.7e308)), (1_800_000, Some(1.7e308)), (3_600_000, Some(3.0))]));
        assert!(v.y_ticks.len() >= 2 && v.y_ticks.len() <= MAX_Y_TICKS + 1, "{}", v.y_ticks.len());
        let text = all_numbers(&v);
        assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
        assert_eq!(v.lines[0].d.matches(['M', 'L']).count(), 3);
    }

    #[test]
    fn nice_steps_and_time_ticks() {
        assert_eq!(nice_step(10.0, 4.0), 5.0);
        assert_eq!(nice_step(0.3, 4.0), 0.1);
        assert_eq!(nice_step(1234.0, 4.0), 500.0);
        assert_eq!(nice_step(0.0, 4.0), 1.0);
        let v = build(&spec(vec![(1, Some(1.0))]));
        // 1 h window: ticks every 10 minutes, UTC labels, inside the plot.
        let labels: Vec<&str> = v.x_ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["00:10", "00:20", "00:30", "00:40", "00:50"]);
        assert_eq!(v.x_ticks[0].ms, 600_000);
    }

    #[test]
    fn marks_inside_the_window_are_placed_and_clipped() {
        let mut s = spec(vec![(1_800_000, Some(1.0))]);
        s.marks = vec![
            Mark {
                from_ms: 1_800_000,
                to_ms: 1_800_000,
                label: "version 1 -> 2".into(),
                class: "version",
                panels: &[],
            },
            Mark { from_ms: -600_000, to_ms: 600_000, label: "alert".into(), class: "alert", panels: &[] },
            Mark { from_ms: 7_200_000, to_ms: 7_200_000, label: "later".into(), class: "version", panels: &[] },
        ];
        let v = build(&s);
        assert_eq!(v.marks.len(), 2, "the mark after the window is left out");
        assert_eq!((v.marks[0].x.as_str(), v.marks[0].w.as_deref()), ("343", None));
        assert_eq!((v.marks[1].x.as_str(), v.marks[1].w.as_deref()), ("56", Some("95.7")));
    }

    #[test]
    fn hover_slots_list_every_series() {
        let mut s = spec((1..=120).map(|i| (i * 30_000, Some(i as f64))).collect());
        s.series.push(Series { label: "canary".into(), color: 1, style: 0, values: vec![(3_600_000, Some(7.0))] });
        let v = build(&s);
        assert_eq!(v.slots.len(), 60);
        let last = &v.slots.last().unwrap().title;
        assert!(last.starts_with("1970-01-01 01:00:00 UTC"), "{last}");
        assert!(last.contains("production: 120/s") && last.contains("canary: 7/s"), "{last}");
    }

    #[test]
    fn values_format_with_units() {
        assert_eq!(fmt_value(Unit::Ms, 850.4), "850 ms");
        assert_eq!(fmt_value(Unit::Ms, 6840.0), "6.84 s");
        assert_eq!(fmt_value(Unit::Percent, 1.234), "1.23%");
        assert_eq!(fmt_value(Unit::UsdPerHour, 0.0042), "$0.0042/h");
        assert_eq!(fmt_value(Unit::TokensPerSecond, 12_345.0), "12.3k tok/s");
        assert_eq!(fmt_value(Unit::PerSecond, f64::NAN), "–");
        assert_eq!(compact(-0.5), "-0.50");
        assert_eq!(compact(10.0), "10");
        assert_eq!(compact(12.5), "12.5");
        assert_eq!(compact(1.7e308), "1.70e308");
        assert_eq!(fmt_usd(-6.48), "-$6.48");
        assert_eq!(trim_point_zero("300.0k".into()), "300k");
        assert_eq!(trim_point_zero("0.05".into()), "0.05");
    }
}
