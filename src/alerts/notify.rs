//! What receivers are told, in their formats: Alertmanager's API v2 (`POST /api/v2/alerts`),
//! Alertmanager's webhook JSON (version 4, what Alertmanager itself sends to webhooks), and
//! Slack's incoming webhook `{"text": ...}`. Pure functions of a [`Notification`].

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::clock::rfc3339_ms;
use crate::phase::AlertPhase;

/// Go's zero time, which Alertmanager's webhook sends as `endsAt` of a firing alert.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// One alert's news for the receivers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Notification {
    /// Rule and variant: the alert's identity.
    pub key: (String, String),
    /// `firing` or `resolved`.
    pub phase: AlertPhase,
    /// `alertname`, `variant`, `severity`.
    pub labels: BTreeMap<String, String>,
    /// `summary`, `description`, `value`, `threshold`.
    pub annotations: BTreeMap<String, String>,
    /// When it started firing, Unix ms.
    pub starts_ms: i64,
    /// When it resolved (resolved notifications only).
    pub ends_ms: Option<i64>,
}

/// Prometheus' fingerprint of a label set (FNV-1a 64 over sorted names and values, each
/// followed by 0xff), as Alertmanager's webhook reports it.
pub(crate) fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut add = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (k, v) in labels {
        add(k.as_bytes());
        add(&[0xff]);
        add(v.as_bytes());
        add(&[0xff]);
    }
    format!("{h:016x}")
}

/// The body of `POST /api/v2/alerts`: a firing alert is valid until `valid_until_ms` (it is
/// re-sent well before; if zai-dash stops, Alertmanager resolves it by itself then), a resolved
/// one ends when it resolved.
pub(crate) fn alertmanager_body(items: &[Notification], valid_until_ms: i64) -> Value {
    Value::Array(
        items
            .iter()
            .map(|n| {
                json!({
                    "labels": n.labels,
                    "annotations": n.annotations,
                    "startsAt": rfc3339_ms(n.starts_ms),
                    "endsAt": rfc3339_ms(n.ends_ms.unwrap_or(valid_until_ms)),
                })
            })
            .collect(),
    )
}

/// Alertmanager's webhook message (version 4) for one alert.
pub(crate) fn webhook_body(n: &Notification) -> Value {
    let status = n.phase.as_str();
    let group: BTreeMap<&str, &str> = n
        .labels
        .iter()
        .filter(|(k, _)| *k == "alertname" || *k == "variant")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let group_key =
        format!("{{}}:{{{}}}", group.iter().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join(", "));
    json!({
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "zai-dash",
        "groupLabels": group,
        "commonLabels": n.labels,
        "commonAnnotations": n.annotations,
        "externalURL": "",
        "alerts": [{
            "status": status,
            "labels": n.labels,
            "annotations": n.annotations,
            "startsAt": rfc3339_ms(n.starts_ms),
            "endsAt": n.ends_ms.map_or_else(|| ZERO_TIME.to_owned(), rfc3339_ms),
            "generatorURL": "",
            "fingerprint": fingerprint(&n.labels),
        }],
    })
}

/// A Slack incoming-webhook message: one line saying what, where and how bad. Every value is
/// escaped as Slack asks ([`slack_escape`]): a variant, a summary or a label is shown as
/// written, never read as a mention (`<!channel>`) or a link (`<url|text>`).
pub(crate) fn slack_body(n: &Notification) -> Value {
    let label = |k: &str| slack_escape(n.labels.get(k).map_or("", String::as_str));
    let note = |k: &str| slack_escape(n.annotations.get(k).map_or("", String::as_str));
    let head = match n.phase {
        AlertPhase::Firing => format!("[FIRING:{}]", label("severity")),
        _ => "[RESOLVED]".to_owned(),
    };
    let text = format!(
        "{head} {} ({}): {} (value {}, threshold {})",
        label("alertname"),
        label("variant"),
        note("summary"),
        note("value"),
        note("threshold")
    );
    json!({ "text": text })
}

/// Text shown literally in a Slack message: Slack reads `<...>` as mentions, channel links and
/// URLs, and `&` as the start of an entity, so these three become `&amp;`, `&lt;` and `&gt;`
/// (Slack's "Escaping text" rules; nothing else needs escaping).
pub(crate) fn slack_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(phase: AlertPhase, ends_ms: Option<i64>) -> Notification {
        let labels = BTreeMap::from([
            ("alertname".to_owned(), "HighErrorRate".to_owned()),
            ("severity".to_owned(), "critical".to_owned()),
            ("variant".to_owned(), "canary".to_owned()),
        ]);
        let annotations = BTreeMap::from([
            ("summary".to_owned(), "5xx share of canary is 12.5 %".to_owned()),
            ("threshold".to_owned(), "> 5".to_owned()),
            ("value".to_owned(), "12.5".to_owned()),
        ]);
        Notification {
            key: ("HighErrorRate".into(), "canary".into()),
            phase,
            labels,
            annotations,
            starts_ms: 0,
            ends_ms,
        }
    }

    #[test]
    fn fingerprints_match_prometheus() {
        // model.LabelSet{"alertname": "Foo"}.Fingerprint() in Go.
        let ls = BTreeMap::from([("alertname".to_owned(), "Foo".to_owned())]);
        assert_eq!(fingerprint(&ls).len(), 16);
        assert_ne!(fingerprint(&ls), fingerprint(&BTreeMap::new()));
        assert_eq!(fingerprint(&BTreeMap::new()), "cbf29ce484222325", "FNV-1a offset basis for no labels");
    }

    #[test]
    fn alertmanager_items_end_when_resolved_or_stay_valid_while_firing() {
        let body =
            alertmanager_body(&[note(AlertPhase::Firing, None), note(AlertPhase::Resolved, Some(60_000))], 120_000);
        assert_eq!(body[0]["labels"]["alertname"], "HighErrorRate");
        assert_eq!(body[0]["endsAt"], "1970-01-01T00:02:00.000Z");
        assert_eq!(body[1]["endsAt"], "1970-01-01T00:01:00.000Z");
        assert_eq!(body[0]["startsAt"], "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn webhook_and_slack_shapes() {
        let w = webhook_body(&note(AlertPhase::Firing, None));
        assert_eq!((w["version"].as_str(), w["status"].as_str()), (Some("4"), Some("firing")));
        assert_eq!(w["groupKey"], "{}:{alertname=\"HighErrorRate\", variant=\"canary\"}");
        assert_eq!(w["alerts"][0]["endsAt"], ZERO_TIME);
        assert_eq!(w["commonLabels"]["severity"], "critical");
        let s = slack_body(&note(AlertPhase::Resolved, Some(1)));
        assert_eq!(
            s["text"],
            "[RESOLVED] HighErrorRate (canary): 5xx share of canary is 12.5 % (value 12.5, threshold &gt; 5)"
        );
    }

    #[test]
    fn slack_text_shows_every_value_literally() {
        let mut n = note(AlertPhase::Firing, None);
        n.labels.insert("variant".into(), "<!channel>".into());
        n.labels.insert("severity".into(), "crit&<b>".into());
        n.annotations.insert("summary".into(), "<https://evil.example|click> & <@U123>".into());
        let text = slack_body(&n)["text"].as_str().unwrap().to_owned();
        assert_eq!(
            text,
            "[FIRING:crit&amp;&lt;b&gt;] HighErrorRate (&lt;!channel&gt;): &lt;https://evil.example|click&gt; &amp; &lt;@U123&gt; (value 12.5, threshold &gt; 5)"
        );
        assert!(!text.contains('<') && !text.contains('>'));
        assert_eq!(slack_escape("a &amp; b"), "a &amp;amp; b", "an entity in a value is shown as written");
    }
}
