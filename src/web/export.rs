//! `GET /api/export`: a window of points as a CSV or JSON download, either every field of
//! `/api/metrics` or the lines of one overview panel (`panel=latency`), with units in the header.
//!
//! It takes the parameters of `/api/metrics` (`range`, `start`, `end`, `variant`, `target`,
//! `step`, `max_points`) plus `format` (`csv`, the default, or `json`) and `panel`. The points
//! are those `/api/metrics` answers for the same parameters, and a panel's columns are the
//! panel's own definitions ([`super::dashboard::PANEL_SPECS`]), so a download matches what the
//! page drew. Rows are in time order, one per variant and bucket ("long" format, which every
//! spreadsheet pivots).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::api::metrics_query;
use super::dashboard::{PanelSpec, panel_spec};
use super::error::ApiError;
use crate::clock::rfc3339_ms;
use crate::point::Point;

/// A column of the full export: field name, unit, and how it is read.
type Column = (&'static str, &'static str, fn(&Point) -> Option<f64>);

/// Every scalar field of a point, in the Go dashboard's order, with its unit. Status code rates
/// follow as one column per code present; the quota block is left out (it is not a series).
const COLUMNS: &[Column] = &[
    ("requests_2xx", "cumulative requests", |p| p.requests_2xx),
    ("requests_4xx", "cumulative requests", |p| p.requests_4xx),
    ("requests_5xx", "cumulative requests", |p| p.requests_5xx),
    ("tokens_input", "cumulative tokens", |p| p.tokens_input),
    ("tokens_output", "cumulative tokens", |p| p.tokens_output),
    ("tokens_cache_read", "cumulative tokens", |p| p.tokens_cache_read),
    ("tokens_cache_write", "cumulative tokens", |p| p.tokens_cache_write),
    ("estimated_cost_usd_input", "cumulative USD", |p| p.estimated_cost_usd_input),
    ("estimated_cost_usd_output", "cumulative USD", |p| p.estimated_cost_usd_output),
    ("estimated_cost_usd_cache_read", "cumulative USD", |p| p.estimated_cost_usd_cache_read),
    ("estimated_cost_usd_cache_write", "cumulative USD", |p| p.estimated_cost_usd_cache_write),
    ("concurrent_requests", "requests", |p| Some(p.concurrent_requests)),
    ("max_workers", "workers", |p| Some(p.max_workers)),
    ("rate_limit_rps", "req/s", |p| Some(p.rate_limit_rps)),
    ("rate_limit_rejections", "cumulative requests", |p| p.rate_limit_rejections),
    ("rate_limit_adj_increase", "cumulative adjustments", |p| p.rate_limit_adj_increase),
    ("rate_limit_adj_decrease", "cumulative adjustments", |p| p.rate_limit_adj_decrease),
    ("upstream_errors", "cumulative errors", |p| p.upstream_errors),
    ("retry_attempts", "cumulative retries", |p| p.retry_attempts),
    ("latency_p50", "ms", |p| p.latency_p50),
    ("latency_p95", "ms", |p| p.latency_p95),
    ("latency_p99", "ms", |p| p.latency_p99),
    ("request_size_avg", "bytes", |p| p.request_size_avg),
    ("response_size_avg", "bytes", |p| p.response_size_avg),
    ("token_rate_in", "tokens/s", |p| Some(p.token_rate_in)),
    ("token_rate_out", "tokens/s", |p| Some(p.token_rate_out)),
    ("token_rate_cache_read", "tokens/s", |p| Some(p.token_rate_cache_read)),
    ("token_rate_cache_write", "tokens/s", |p| Some(p.token_rate_cache_write)),
    ("req_rate", "req/s", |p| Some(p.req_rate)),
    ("error_rate_pct", "%", |p| p.error_rate_pct),
    ("worker_utilization", "ratio 0-1", |p| Some(p.worker_utilization)),
    ("requests", "requests in the point", |p| Some(p.requests)),
    ("cost_rate_usd", "USD/s", |p| Some(p.cost_rate_usd)),
    ("rejection_rate", "/s", |p| Some(p.rejection_rate)),
    ("retry_rate", "/s", |p| Some(p.retry_rate)),
    ("upstream_error_rate", "/s", |p| Some(p.upstream_error_rate)),
    ("ttft_p50", "ms", |p| p.ttft_p50),
    ("ttft_p95", "ms", |p| p.ttft_p95),
    ("ttft_p99", "ms", |p| p.ttft_p99),
    ("tpot_p50", "ms", |p| p.tpot_p50),
    ("tpot_p95", "ms", |p| p.tpot_p95),
    ("tpot_p99", "ms", |p| p.tpot_p99),
    ("pods", "pods", |p| Some(f64::from(p.pods))),
];

/// Download formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    Json,
}

/// What one export holds: a header of `(name, unit)` and, per point, its values.
struct Table {
    name: String,
    headers: Vec<(String, String)>,
    rows: Vec<(i64, String, Vec<Option<f64>>)>,
}

/// `GET /api/export?...&format=csv|json[&panel=ID]`.
pub(crate) async fn export(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let format = parse_format(params.get("format").map(String::as_str))?;
    let panel = match params.get("panel").map(|p| p.trim()).filter(|p| !p.is_empty()) {
        Some(id) => Some(panel_spec(id).ok_or_else(|| unknown_panel(id))?),
        None => None,
    };
    let q = metrics_query(&state, &params, state.clock.now_ms())?;
    let points = state.source.points(q).await?;
    let table = match panel {
        Some(spec) => panel_table(spec, &points),
        None => full_table(&points),
    };
    Ok(download(&table, format, &file_stem(&params, &table.name)))
}

fn parse_format(v: Option<&str>) -> Result<Format, ApiError> {
    match v.map(str::trim) {
        None | Some("" | "csv") => Ok(Format::Csv),
        Some("json") => Ok(Format::Json),
        Some(other) => Err(ApiError::BadRequest(format!("invalid format parameter {other:?}: use csv or json"))),
    }
}

fn unknown_panel(id: &str) -> ApiError {
    let ids: Vec<&str> = super::dashboard::PANEL_SPECS.iter().map(|s| s.id).collect();
    ApiError::BadRequest(format!("invalid panel parameter {id:?}: use one of {}", ids.join(", ")))
}

/// Every field, and one `status_<code>_rate` column per status code in the window.
fn full_table(points: &[Point]) -> Table {
    let codes: BTreeSet<&String> = points.iter().flat_map(|p| p.status_code_rates.keys()).collect();
    let mut headers: Vec<(String, String)> =
        COLUMNS.iter().map(|(n, u, _)| ((*n).to_owned(), (*u).to_owned())).collect();
    headers.extend(codes.iter().map(|c| (format!("status_{c}_rate"), "req/s".to_owned())));
    let rows = points
        .iter()
        .map(|p| {
            let mut values: Vec<Option<f64>> = COLUMNS.iter().map(|(_, _, get)| get(p)).collect();
            values.extend(codes.iter().map(|c| Some(p.status_code_rates.get(*c).copied().unwrap_or(0.0))));
            (p.timestamp, p.variant.clone(), values)
        })
        .collect();
    Table { name: "metrics".to_owned(), headers, rows }
}

/// The lines of one panel, named as its legend names them.
fn panel_table(spec: &PanelSpec, points: &[Point]) -> Table {
    let unit = if spec.unit.label().is_empty() { "count" } else { spec.unit.label() };
    let headers = spec
        .metrics
        .iter()
        .map(|(name, _)| (if name.is_empty() { spec.id.to_owned() } else { (*name).to_owned() }, unit.to_owned()))
        .collect();
    let rows = points
        .iter()
        .map(|p| (p.timestamp, p.variant.clone(), spec.metrics.iter().map(|(_, get)| get(p)).collect()))
        .collect();
    Table { name: spec.id.to_owned(), headers, rows }
}

/// `zai-dash-latency-1h-canary`: what, over which range, of which variant.
fn file_stem(params: &HashMap<String, String>, name: &str) -> String {
    let part = |k: &str, default: &str| {
        let v = params.get(k).map(|v| v.trim()).filter(|v| !v.is_empty()).unwrap_or(default);
        v.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' { c } else { '-' }).collect::<String>()
    };
    let range = if params.contains_key("start") || params.contains_key("end") {
        "window".to_owned()
    } else {
        part("range", "1h")
    };
    format!("zai-dash-{name}-{range}-{}", part("variant", "all"))
}

fn download(table: &Table, format: Format, stem: &str) -> Response {
    let (body, content_type, ext) = match format {
        Format::Csv => (csv(table), "text/csv; charset=utf-8", "csv"),
        Format::Json => (json(table), "application/json", "json"),
    };
    let disposition = format!("attachment; filename=\"{stem}.{ext}\"");
    ([(header::CONTENT_TYPE, content_type.to_owned()), (header::CONTENT_DISPOSITION, disposition)], body)
        .into_response()
}

/// RFC 4180 CSV; the header row names each column with its unit, `name (unit)`. A value that
/// does not exist (no request: no percentile) is an empty cell, never a fake zero.
fn csv(table: &Table) -> String {
    let mut out = String::from("time (UTC),timestamp (Unix ms),variant");
    for (name, unit) in &table.headers {
        out.push(',');
        out.push_str(&csv_field(&format!("{name} ({unit})")));
    }
    out.push_str("\r\n");
    for (ts, variant, values) in &table.rows {
        let _ = write!(out, "{},{ts},{}", rfc3339_ms(*ts), csv_field(variant));
        for v in values {
            out.push(',');
            if let Some(v) = v.filter(|v| v.is_finite()) {
                let _ = write!(out, "{v}");
            }
        }
        out.push_str("\r\n");
    }
    out
}

/// A text cell: formula-proofed, then quoted when RFC 4180 needs it.
fn csv_field(s: &str) -> String {
    let s = defuse_formula(s);
    if s.contains([',', '"', '\r', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.into_owned() }
}

/// A text cell a spreadsheet would run as a formula (`=HYPERLINK(...)`, `+cmd`, `-2+3`, `@SUM`,
/// or behind a tab or carriage return) gets a leading `'`, which spreadsheets show as text
/// (OWASP's advice on CSV injection). Variant names and column names come from the proxies'
/// labels, so an export must not hand them to a spreadsheet as code. A cell that is a number
/// (`-1`) is not a formula and stays as it is; value cells are numbers and never pass here.
fn defuse_formula(s: &str) -> std::borrow::Cow<'_, str> {
    let risky = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && s.parse::<f64>().map_or(true, |v| !v.is_finite()) {
        std::borrow::Cow::Owned(format!("'{s}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// `{"name", "columns": [{"name","unit"}], "rows": [{"timestamp","time","variant", <name>: value}]}`.
fn json(table: &Table) -> String {
    let columns: Vec<serde_json::Value> =
        table.headers.iter().map(|(n, u)| serde_json::json!({ "name": n, "unit": u })).collect();
    let rows: Vec<serde_json::Value> = table
        .rows
        .iter()
        .map(|(ts, variant, values)| {
            let mut row = serde_json::Map::new();
            row.insert("timestamp".into(), (*ts).into());
            row.insert("time".into(), rfc3339_ms(*ts).into());
            row.insert("variant".into(), variant.clone().into());
            for ((name, _), v) in table.headers.iter().zip(values) {
                row.insert(name.clone(), v.filter(|v| v.is_finite()).map_or(serde_json::Value::Null, Into::into));
            }
            serde_json::Value::Object(row)
        })
        .collect();
    serde_json::json!({ "name": table.name, "columns": columns, "rows": rows }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table {
            name: "latency".into(),
            headers: vec![("p50".into(), "ms".into()), ("p95".into(), "ms".into())],
            rows: vec![(1_800_000_000_000, "canary".into(), vec![Some(120.5), None])],
        }
    }

    #[test]
    fn csv_names_units_and_leaves_missing_values_empty() {
        let text = csv(&table());
        let mut lines = text.split("\r\n");
        assert_eq!(lines.next(), Some("time (UTC),timestamp (Unix ms),variant,p50 (ms),p95 (ms)"));
        assert_eq!(lines.next(), Some("2027-01-15T08:00:00.000Z,1800000000000,canary,120.5,"));
        assert_eq!(csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");
    }

    #[test]
    fn text_cells_that_a_spreadsheet_would_run_are_defused_and_numbers_stay_numbers() {
        for (cell, want) in [
            ("=HYPERLINK(\"http://evil.example\",\"x\")", "\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\")\""),
            ("+cmd", "'+cmd"),
            ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "\"'\r=1\""),
            ("-inf", "'-inf"),
            ("-1", "-1"),
            ("-0.5e3", "-0.5e3"),
            ("canary", "canary"),
            ("a=b", "a=b"),
        ] {
            assert_eq!(csv_field(cell), want, "{cell:?}");
        }
        let t = Table {
            name: "x".into(),
            headers: vec![("v".into(), "req/s".into())],
            rows: vec![(0, "=1+1".into(), vec![Some(-2.5)])],
        };
        assert!(csv(&t).ends_with("\r\n1970-01-01T00:00:00.000Z,0,'=1+1,-2.5\r\n"), "{}", csv(&t));
    }

    #[test]
    fn json_keeps_nulls_and_units() {
        let v: serde_json::Value = serde_json::from_str(&json(&table())).unwrap();
        assert_eq!(v["columns"][1]["unit"], "ms");
        assert_eq!(v["rows"][0]["p50"], 120.5);
        assert!(v["rows"][0]["p95"].is_null());
        assert_eq!(v["rows"][0]["variant"], "canary");
    }

    #[test]
    fn every_field_of_a_point_is_a_column() {
        let names: BTreeSet<&str> = COLUMNS.iter().map(|c| c.0).collect();
        assert_eq!(names.len(), COLUMNS.len(), "no column twice");
        // Every scalar field the API serializes has a column (status codes and quota aside).
        let point = crate::point::PointBuilder::new()
            .build(crate::point::Bucket::narrow(5_000, 5_000), &[&crate::point::Summary::default()])
            .remove(0);
        let json = serde_json::to_value(point).unwrap();
        for key in json.as_object().unwrap().keys() {
            if !["timestamp", "variant", "status_code_rates", "quota"].contains(&key.as_str()) {
                assert!(names.contains(key.as_str()), "{key} has no export column");
            }
        }
    }
}
