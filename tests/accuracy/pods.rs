//! The pods of the run: two variants, two pods each at any time, different rates, status
//! mixes, latency mixes (so that summing before quantiles matters), two models with two
//! pricing tiers, and gauges that move every raw bucket.

use super::fake::{Mix, ModelSpec, PodSpec};

fn mix(pairs: &[(f64, f64)]) -> Mix {
    pairs.to_vec()
}

fn models(scale: f64) -> Vec<ModelSpec> {
    vec![
        ModelSpec {
            name: "glm-4.7",
            share: 0.7,
            tokens: [1200.0 * scale, 350.0 * scale, 800.0, 40.0],
            peak_share: 0.4,
            ttft: mix(&[(0.5, 0.3), (1.0, 0.4), (2.0, 0.2), (5.0, 0.1)]),
            tpot: mix(&[(0.01, 0.3), (0.025, 0.5), (0.05, 0.2)]),
        },
        ModelSpec {
            name: "glm-4.5-air",
            share: 0.3,
            tokens: [400.0 * scale, 120.0 * scale, 0.0, 0.0],
            peak_share: 0.0,
            ttft: mix(&[(0.25, 0.5), (0.5, 0.3), (1.0, 0.2)]),
            tpot: mix(&[(0.005, 0.4), (0.01, 0.4), (0.025, 0.2)]),
        },
    ]
}

fn errors() -> Mix {
    mix(&[(0.05, 0.5), (0.1, 0.3), (0.25, 0.2)])
}

/// `production` pod A: stays up the whole run.
pub fn prod_a() -> PodSpec {
    PodSpec {
        name: "prod-a",
        variant: "production",
        version: "1.11.1",
        rps: 40.0,
        statuses: vec![("200", 0.955), ("422", 0.01), ("429", 0.02), ("500", 0.005), ("503", 0.01)],
        latency_ok: mix(&[(0.25, 0.2), (0.5, 0.3), (1.0, 0.3), (2.5, 0.15), (5.0, 0.05)]),
        latency_err: errors(),
        models: models(1.0),
        rejections: 0.5,
        retries: vec![("429", 0.8), ("network_error", 0.2)],
        upstream_errors: vec![("429", 0.8), ("upstream_connection", 0.3)],
        adjustments: [0.1, 0.05, 0.02],
        request_bytes: 12_000.0,
        response_bytes: 2_500.0,
        concurrent_base: 3.0,
        concurrent_phase: 0,
        max_workers: 10.0,
        rate_limit_rps: 29.4,
    }
}

/// `production` pod B: replaced by pod C mid-run.
pub fn prod_b() -> PodSpec {
    PodSpec {
        name: "prod-b",
        rps: 60.0,
        statuses: vec![("200", 0.93), ("422", 0.01), ("429", 0.02), ("500", 0.02), ("503", 0.02)],
        latency_ok: mix(&[(1.0, 0.2), (2.5, 0.4), (5.0, 0.3), (10.0, 0.1)]),
        rejections: 0.7,
        concurrent_base: 4.0,
        concurrent_phase: 1,
        rate_limit_rps: 25.0,
        ..prod_a()
    }
}

/// `production` pod C: B's replacement (same traffic, a new version, fresh counters).
pub fn prod_c() -> PodSpec {
    PodSpec {
        name: "prod-c",
        version: "1.12.0",
        concurrent_base: 6.0,
        concurrent_phase: 2,
        rate_limit_rps: 30.0,
        ..prod_b()
    }
}

/// `canary` pod A: its counters reset mid-run (a process restart on the same URL).
pub fn canary_a() -> PodSpec {
    PodSpec {
        name: "canary-a",
        variant: "canary",
        version: "1.12.0",
        rps: 20.0,
        statuses: vec![("200", 0.90), ("429", 0.03), ("500", 0.04), ("502", 0.01), ("503", 0.02)],
        latency_ok: mix(&[(0.5, 0.3), (1.0, 0.3), (2.5, 0.2), (5.0, 0.1), (10.0, 0.1)]),
        latency_err: errors(),
        models: models(1.1),
        rejections: 0.3,
        retries: vec![("429", 0.5), ("truncated_response", 0.1)],
        upstream_errors: vec![("429", 0.5), ("truncated_response", 0.2)],
        adjustments: [0.05, 0.1, 0.01],
        request_bytes: 15_000.0,
        response_bytes: 3_000.0,
        concurrent_base: 2.0,
        concurrent_phase: 3,
        max_workers: 8.0,
        rate_limit_rps: 12.5,
    }
}

/// `canary` pod B: dies mid-run and never comes back.
pub fn canary_b() -> PodSpec {
    PodSpec {
        name: "canary-b",
        statuses: vec![("200", 0.94), ("429", 0.02), ("500", 0.02), ("502", 0.01), ("503", 0.01)],
        latency_ok: mix(&[(2.5, 0.5), (5.0, 0.3), (10.0, 0.15), (30.0, 0.05)]),
        concurrent_base: 1.0,
        concurrent_phase: 4,
        rate_limit_rps: 10.0,
        ..canary_a()
    }
}
