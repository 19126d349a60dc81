//! The answers built from a window's points or sums: the export's rows and the live stream's
//! points against the `/api/metrics` points of the same buckets, and `/api/models` against the
//! engine's own increases over the window.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::engine::Engine;
use super::expect::Key;
use super::tally::Tally;

/// One export row: bucket end, time column, variant, and each column's value.
pub struct Row {
    pub timestamp: i64,
    pub time: String,
    pub variant: String,
    pub values: Vec<Option<f64>>,
}

/// An export's column names (units stripped) and rows.
pub struct Export {
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
}

/// Reads the CSV download: `time (UTC),timestamp (Unix ms),variant,<name (unit)>,...`, empty
/// cells for `null`.
pub fn parse_csv(text: &str) -> Export {
    assert!(!text.contains('"'), "no cell of these points needs quoting: {text}");
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let header: Vec<&str> = lines.next().expect("a header row").split(',').collect();
    assert_eq!(header[..3], ["time (UTC)", "timestamp (Unix ms)", "variant"], "CSV header");
    let columns = header[3..]
        .iter()
        .map(|h| h.split_once(" (").unwrap_or_else(|| panic!("column {h:?} has no unit")).0.to_owned())
        .collect();
    let rows = lines
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            assert_eq!(cells.len(), header.len(), "CSV row {line}");
            let values = cells[3..]
                .iter()
                .map(|c| (!c.is_empty()).then(|| c.parse().unwrap_or_else(|e| panic!("cell {c:?}: {e}"))))
                .collect();
            Row {
                timestamp: cells[1].parse().unwrap(),
                time: cells[0].to_owned(),
                variant: cells[2].to_owned(),
                values,
            }
        })
        .collect();
    Export { columns, rows }
}

/// Reads the JSON download: `{"columns": [{"name","unit"}], "rows": [{timestamp, time, variant, <name>}]}`.
pub fn parse_json(v: &Value) -> Export {
    let columns: Vec<String> = v["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| {
            assert!(c["unit"].is_string(), "column {c} has a unit");
            c["name"].as_str().expect("a column name").to_owned()
        })
        .collect();
    let rows = v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            assert_eq!(r.as_object().map(|o| o.len()), Some(columns.len() + 3), "JSON row {r}");
            Row {
                timestamp: r["timestamp"].as_i64().expect("timestamp"),
                time: r["time"].as_str().expect("time").to_owned(),
                variant: r["variant"].as_str().expect("variant").to_owned(),
                values: columns
                    .iter()
                    .map(|c| {
                        let x = &r[c.as_str()];
                        assert!(x.is_null() || x.is_number(), "JSON cell {c} = {x}");
                        x.as_f64()
                    })
                    .collect(),
            }
        })
        .collect();
    Export { columns, rows }
}

/// The point's value in export column `name`: the field of that name, or a status code's rate
/// (`status_503_rate`, 0 when the point has no such code).
fn point_value(p: &Value, name: &str) -> Option<f64> {
    match name.strip_prefix("status_").and_then(|c| c.strip_suffix("_rate")) {
        Some(code) => Some(p["status_code_rates"].get(code).and_then(Value::as_f64).unwrap_or(0.0)),
        None => p[name].as_f64(),
    }
}

/// Every row equals the point of the same bucket, in the same order; every scalar field and
/// every status code is a column.
pub fn check_export(tally: &mut Tally, area: &str, export: &Export, points: &[Value]) {
    if export.rows.len() != points.len() {
        tally.fail(area, format!("{} rows for {} points", export.rows.len(), points.len()));
    }
    let columns: BTreeSet<&str> = export.columns.iter().map(String::as_str).collect();
    for p in points {
        for (k, v) in p.as_object().into_iter().flatten() {
            let column = match k.as_str() {
                "timestamp" | "variant" | "quota" => continue,
                "status_code_rates" => {
                    let codes = v.as_object().into_iter().flatten().map(|(c, _)| format!("status_{c}_rate"));
                    codes.filter(|c| !columns.contains(c.as_str())).collect::<Vec<_>>()
                }
                other => (!columns.contains(other)).then(|| other.to_owned()).into_iter().collect(),
            };
            for c in column {
                tally.fail(area, format!("no column for {c}"));
            }
        }
    }
    for (row, p) in export.rows.iter().zip(points) {
        let at = format!("{} @ {}", row.variant, row.timestamp);
        let same_bucket = p["timestamp"].as_i64() == Some(row.timestamp) && p["variant"] == row.variant.as_str();
        tally.value(area, "bucket", &at, &Value::Bool(same_bucket), &Value::Bool(true));
        let time = zai_dash::clock::rfc3339_ms(row.timestamp);
        tally.value(area, "time", &at, &Value::String(row.time.clone()), &Value::String(time));
        for (name, cell) in export.columns.iter().zip(&row.values) {
            let cell = cell.map_or(Value::Null, Value::from);
            tally.num(area, name, &at, &cell, point_value(p, name));
        }
    }
}

/// `/api/models` over `(start, end]` against the engine's increases of tokens and cost per
/// variant and model at `end`: the same rows, costliest first, the data covering the window.
pub async fn check_models(tally: &mut Tally, area: &str, engine: &Engine, rows: &[Value], start: i64, end: i64) {
    let w = end - start;
    let mut want: BTreeMap<(String, String), ([f64; 4], f64)> = BTreeMap::new();
    let tokens = format!("sum by (variant, model, direction) (increase(zai_proxy_tokens_total[{w}ms]))");
    for (l, s) in engine.instant(&tokens, end).await {
        let d = ["input", "output", "cache_read", "cache_write"].iter().position(|d| *d == l["direction"]).unwrap();
        want.entry((l["variant"].clone(), l["model"].clone())).or_default().0[d] += s[0].1;
    }
    let cost = format!("sum by (variant, model) (increase(zai_proxy_estimated_cost_usd_total[{w}ms]))");
    for (l, s) in engine.instant(&cost, end).await {
        want.entry((l["variant"].clone(), l["model"].clone())).or_default().1 += s[0].1;
    }
    let key =
        |r: &Value| (r["variant"].as_str().unwrap_or("").to_owned(), r["model"].as_str().unwrap_or("").to_owned());
    let got: BTreeSet<(String, String)> = rows.iter().map(key).collect();
    let expected: BTreeSet<(String, String)> = want.keys().cloned().collect();
    if got != expected || got.len() != rows.len() {
        tally.fail(area, format!("rows {got:?} ({} in all), the engine has {expected:?}", rows.len()));
    }
    let costs: Vec<f64> = rows.iter().map(|r| r["cost_usd"].as_f64().unwrap_or(f64::NAN)).collect();
    if !costs.windows(2).all(|c| c[0] >= c[1]) {
        tally.fail(area, format!("not costliest first: {costs:?}"));
    }
    for r in rows {
        let Some((t, c)) = want.get(&key(r)) else { continue };
        let at = format!("{} {}", r["variant"], r["model"]);
        for (i, f) in ["tokens_input", "tokens_output", "tokens_cache_read", "tokens_cache_write"].iter().enumerate() {
            tally.num(area, f, &at, &r[*f], Some(t[i]));
        }
        tally.num(area, "cost_usd", &at, &r["cost_usd"], Some(*c));
        tally.num(area, "covered_seconds", &at, &r["covered_seconds"], Some(w as f64 / 1000.0));
        if r.as_object().map(|o| o.len()) != Some(8) {
            tally.fail(area, format!("{at}: fields {r}"));
        }
    }
}

/// Every `metrics` event of the live stream at `url`, collected until the task is aborted.
pub fn collect_live(url: &str) -> (Arc<Mutex<Vec<Value>>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (url, out) = (url.to_owned(), seen.clone());
    let task = tokio::spawn(async move {
        let mut resp = reqwest::get(url).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "/api/events");
        let mut text = String::new();
        while let Some(chunk) = resp.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let event: String = text.drain(..end + 2).collect();
                for data in event.lines().filter_map(|l| l.strip_prefix("data:")) {
                    let v: Value = serde_json::from_str(data.trim()).unwrap_or_else(|e| panic!("{e}: {data}"));
                    if v["type"] == "metrics" {
                        out.lock().unwrap().push(v["data"].clone());
                    }
                }
            }
        }
    });
    (seen, task)
}

/// The live stream published every bucket of the window once, each equal to the point
/// `/api/metrics` answers for it.
pub fn check_live(tally: &mut Tally, area: &str, live: &[Value], points: &[Value], full: &BTreeSet<Key>) {
    let key = |p: &Value| (p["variant"].as_str().unwrap_or("").to_owned(), p["timestamp"].as_i64().unwrap_or(0));
    for k in full {
        let published: Vec<&Value> = live.iter().filter(|p| key(p) == *k).collect();
        let at = format!("{} @ {}", k.0, k.1);
        tally.value(area, "published once", &at, &Value::from(published.len()), &Value::from(1));
        if let (Some(l), Some(p)) = (published.first(), points.iter().find(|p| key(p) == *k)) {
            tally.value(area, "point", &at, l, p);
        }
    }
    tally.require(area, "point", full.len());
}
