//! Reading a scrape costs time linear in its series (issue 11: 10k/40k/80k histogram series
//! once cost 0.15/2.2/14 CPU-s per scrape). A test binary of its own, so that no other test
//! runs beside the measurement.

use std::time::Instant;

/// About `n` series: half counter series, half histogram lines (label sets of ten buckets, a
/// sum and a count), which the quadratic reader of old scanned per line.
fn many_series(n: usize, variant: &str, value: u64) -> String {
    let mut s = String::from("# TYPE zai_proxy_tokens_total counter\n");
    for i in 0..n / 2 {
        s += &format!(
            "zai_proxy_tokens_total{{direction=\"input\",model=\"m{i}\",pricing_tier=\"peak\",variant=\"{variant}\"}} {value}\n"
        );
    }
    s += "# TYPE zai_proxy_request_duration_seconds histogram\n";
    for i in 0..n / 24 {
        let labels = format!("path=\"/p{i}\",variant=\"{variant}\"");
        for (k, le) in ["0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "+Inf"].iter().enumerate() {
            s += &format!("zai_proxy_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {}\n", value * k as u64);
        }
        s += &format!("zai_proxy_request_duration_seconds_sum{{{labels}}} {value}\n");
        s += &format!("zai_proxy_request_duration_seconds_count{{{labels}}} {}\n", value * 9);
    }
    s
}

/// Per-sample cost of reading a scrape grows linearly: 20,000 series cost at most four times as
/// much per sample as 1,000 (best of several runs each, interleaved, so machine noise hits both).
#[test]
fn scrape_cost_per_sample_stays_linear_in_the_number_of_series() {
    use zai_dash::scrape::{increase::TargetState, parse, reading};
    let once = |a: &str, b: &str, n: usize| {
        let mut state = TargetState::default();
        let started = Instant::now();
        for (i, body) in [a, b, a, b].iter().enumerate() {
            let r = reading::read(&parse::parse(body).unwrap());
            state.advance(&r, i as i64 * 5_000, 1, "production");
        }
        started.elapsed().as_secs_f64() / (4 * n) as f64
    };
    let small = (many_series(1_000, "production", 1), many_series(1_000, "production", 2));
    let large = (many_series(20_000, "production", 1), many_series(20_000, "production", 2));
    // Interleaved, best of seven each: noise on a shared machine hits both sides alike.
    let (mut best_small, mut best_large) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..7 {
        best_small = best_small.min(once(&small.0, &small.1, 1_000));
        best_large = best_large.min(once(&large.0, &large.1, 20_000));
    }
    let (small, large) = (best_small, best_large);
    // Linear reading gives about 1x, a quadratic one 20x: 4x leaves a loaded machine room.
    let ratio = large / small;
    assert!(ratio < 4.0, "per-sample cost at 20,000 series is {ratio:.2}x that at 1,000");
}
