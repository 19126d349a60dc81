//! Target health and version changes as the engine knows them.
//!
//! A target is an instance that reported `zai_proxy_build_info` within the last hour (so other
//! jobs' targets are left out) and that the engine still scrapes (`up`). Its variant and version
//! come from `zai_proxy_build_info`; up, last scrape, duration and samples from the series the
//! engine writes for every scrape (`up`, `scrape_duration_seconds`, `scrape_samples_scraped`).
//! The engine does not say why a scrape failed nor how many failed in a row: `last_error` is
//! `null`, and the API shows `consecutive_failures` as `null` in source mode.

use std::collections::BTreeMap;

use futures_util::future::try_join_all;

use super::client::{EngineError, Series};
use super::session::Session;
use crate::health::TargetHealth;
use crate::ports::ingest::{Event, EventKind};
use crate::promql::parts;

/// How far back a pod's `zai_proxy_build_info` makes it one of ours.
const POD_LOOKBACK_MS: i64 = 3_600_000;
/// Resolution of the search for a down target's last success.
const SUCCESS_RES_MS: i64 = 60_000;

/// `(job, instance)`.
type Key = (String, String);

fn key(s: &Series) -> Key {
    (s.label("job").to_owned(), s.label("instance").to_owned())
}

/// Each series' first value by `(job, instance)`.
fn values(series: &[Series]) -> BTreeMap<Key, f64> {
    series.iter().filter_map(|s| s.samples.first().map(|&(_, v)| (key(s), v))).collect()
}

/// Every target of ours at `now_ms`, by variant then instance.
pub(crate) async fn fetch(session: &Session<'_>, now_ms: i64) -> Result<Vec<TargetHealth>, EngineError> {
    let queries = [
        "up".to_owned(),
        "timestamp(up)".to_owned(),
        parts::pod_versions(POD_LOOKBACK_MS),
        crate::promql::family::BUILD_INFO.to_owned(),
        "scrape_duration_seconds".to_owned(),
        "scrape_samples_scraped".to_owned(),
        parts::last_success(POD_LOOKBACK_MS, SUCCESS_RES_MS),
    ];
    let a = try_join_all(queries.iter().map(|q| session.instant(q, now_ms))).await?;
    let (up, scraped, durations, samples, success) =
        (values(&a[0]), values(&a[1]), values(&a[4]), values(&a[5]), values(&a[6]));
    let known = pods(&a[2]);
    let current = pods(&a[3]);
    let mut out: Vec<TargetHealth> = known
        .into_iter()
        .filter_map(|(k, seen)| {
            let is_up = *up.get(&k)? >= 1.0;
            let (variant, version) = pick(current.get(&k), &seen)?;
            let last_scrape_ms = scraped.get(&k).map(|s| (s * 1000.0).round() as i64);
            let mut h = TargetHealth::new(0, k.1.clone(), variant);
            h.up = is_up;
            h.last_scrape_ms = last_scrape_ms;
            h.last_success_ms =
                if is_up { last_scrape_ms } else { success.get(&k).map(|s| (s * 1000.0).round() as i64) };
            h.scrape_duration_ms = durations.get(&k).map_or(0.0, |d| d * 1000.0);
            h.samples = samples.get(&k).map_or(0, |n| *n as usize);
            // At least this one failed; how many in a row the engine does not say.
            h.consecutive_failures = u32::from(!is_up);
            h.version = version;
            Some(h)
        })
        .collect();
    out.sort_by(|a, b| (&a.variant, &a.url).cmp(&(&b.variant, &b.url)));
    for (i, h) in out.iter_mut().enumerate() {
        h.target_id = i64::try_from(i).unwrap_or(i64::MAX);
    }
    Ok(out)
}

/// `(variant, version)` pairs per pod.
fn pods(series: &[Series]) -> BTreeMap<Key, Vec<(String, String)>> {
    let mut out: BTreeMap<Key, Vec<(String, String)>> = BTreeMap::new();
    for s in series {
        out.entry(key(s)).or_default().push((s.label("variant").to_owned(), s.label("version").to_owned()));
    }
    out
}

/// The pod's variant and version: its current `zai_proxy_build_info` when it has one (it is
/// up), else the one of the last hour; a version is only named when it is certain.
fn pick(current: Option<&Vec<(String, String)>>, seen: &[(String, String)]) -> Option<(String, Option<String>)> {
    let (list, certain) = match current.filter(|c| !c.is_empty()) {
        Some(c) => (c.as_slice(), true),
        None => (seen, seen.len() == 1),
    };
    let (variant, version) = list.iter().max()?;
    let version = (certain && !version.is_empty()).then(|| version.clone());
    Some((variant.clone(), version))
}

/// Version changes between two reads of the targets: `previous` maps an instance to the
/// version it had.
pub(crate) fn version_changes(previous: &BTreeMap<String, String>, now: &[TargetHealth], at_ms: i64) -> Vec<Event> {
    now.iter()
        .filter_map(|h| {
            let (old, new) = (previous.get(&h.url)?, h.version.as_ref()?);
            (old != new).then(|| Event {
                ts_ms: at_ms,
                kind: EventKind::Version,
                variant: h.variant.clone(),
                target: h.url.clone(),
                detail: format!("version {old} -> {new}"),
            })
        })
        .collect()
}

/// Version changes inside `(start_ms, end_ms]` from each pod's first sample of each version
/// (`first_seen` by job, instance, variant, version): a version first seen after another one of
/// the same pod, and after the window's first instant, is a change at that moment.
pub(crate) fn events_from_first_seen(series: &[Series], start_ms: i64, res_ms: i64) -> Vec<Event> {
    let mut by_pod: BTreeMap<Key, Vec<(i64, &Series)>> = BTreeMap::new();
    for s in series {
        if let Some(&(_, v)) = s.samples.first().filter(|(_, v)| v.is_finite()) {
            by_pod.entry(key(s)).or_default().push(((v * 1000.0).round() as i64, s));
        }
    }
    let mut out = Vec::new();
    for (_, mut seen) in by_pod {
        seen.sort_by_key(|(t, _)| *t);
        for pair in seen.windows(2) {
            let ((_, old), (t, new)) = (pair[0], pair[1]);
            if t > start_ms + res_ms {
                out.push(Event {
                    ts_ms: t,
                    kind: EventKind::Version,
                    variant: new.label("variant").to_owned(),
                    target: new.label("instance").to_owned(),
                    detail: format!("version {} -> {}", old.label("version"), new.label("version")),
                });
            }
        }
    }
    out.sort_by_key(|e| e.ts_ms);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(labels: &[(&str, &str)], v: f64) -> Series {
        Series {
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            samples: vec![(0, v)],
        }
    }

    #[test]
    fn a_down_pod_keeps_its_variant_and_a_certain_version_only() {
        let seen = vec![("canary".to_owned(), "1.2.0".to_owned())];
        assert_eq!(pick(None, &seen), Some(("canary".into(), Some("1.2.0".into()))));
        let two = vec![("canary".to_owned(), "1.2.0".to_owned()), ("canary".to_owned(), "1.3.0".to_owned())];
        assert_eq!(pick(None, &two), Some(("canary".into(), None)), "which one is last is unknown");
        let current = vec![("canary".to_owned(), "1.3.0".to_owned())];
        assert_eq!(pick(Some(&current), &two), Some(("canary".into(), Some("1.3.0".into()))));
    }

    #[test]
    fn versions_first_seen_inside_the_window_are_changes() {
        let pod = |version: &str, first_s: f64| {
            s(&[("job", "zai"), ("instance", "10.0.0.5:8080"), ("variant", "canary"), ("version", version)], first_s)
        };
        let events = events_from_first_seen(&[pod("1.12.0", 1_300.0), pod("1.11.1", 900.0)], 1_000_000, 5_000);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].detail, "version 1.11.1 -> 1.12.0");
        assert_eq!((events[0].ts_ms, events[0].target.as_str()), (1_300_000, "10.0.0.5:8080"));
        let only_old = events_from_first_seen(&[pod("1.11.1", 900.0)], 1_000_000, 5_000);
        assert!(only_old.is_empty(), "the first version seen is no change");
    }

    #[test]
    fn live_version_changes_compare_with_the_previous_read() {
        let mut h = TargetHealth::new(1, "10.0.0.5:8080".into(), "canary".into());
        h.version = Some("1.12.0".into());
        let before = BTreeMap::from([("10.0.0.5:8080".to_owned(), "1.11.1".to_owned())]);
        let e = version_changes(&before, std::slice::from_ref(&h), 42);
        assert_eq!(e[0].detail, "version 1.11.1 -> 1.12.0");
        assert!(version_changes(&BTreeMap::new(), &[h], 42).is_empty(), "first sight is no change");
    }
}
