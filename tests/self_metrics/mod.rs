//! Reading zai-dash's own `/metrics` in tests. A series that is not there is an error, never
//! a 0: a renamed or vanished metric must fail the `== 0` checks that read it, not pass them.
#![allow(dead_code)] // each test binary uses a different part

/// The value of `series` (`name{labels}` exactly as written in the exposition) in `text`, or
/// `None` when `text` has no such series.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap_or_else(|e| panic!("{series}: value {v:?} is not a number ({e})")))
}

/// `series` from one `/metrics` answer of the server at `base` (read together, so they
/// describe one moment); panics naming a series the answer lacks.
pub async fn read<const N: usize>(base: &str, series: [&str; N]) -> [f64; N] {
    let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    series.map(|name| value(&text, name).unwrap_or_else(|| panic!("{name} is missing from /metrics:\n{text}")))
}

/// One series of `/metrics`; panics when it is missing.
pub async fn read_one(base: &str, series: &str) -> f64 {
    read(base, [series]).await[0]
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_series_is_none_and_a_prefix_is_not_a_match() {
        let text = "zai_dash_a_total 3\nzai_dash_a_total_more 4\nzai_dash_b{x=\"1\"} 0\n";
        assert_eq!(super::value(text, "zai_dash_a_total"), Some(3.0));
        assert_eq!(super::value(text, "zai_dash_b{x=\"1\"}"), Some(0.0));
        assert_eq!(super::value(text, "zai_dash_b"), None);
        assert_eq!(super::value(text, "zai_dash_c_total"), None);
    }
}
