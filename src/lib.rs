//! zai-dash: scrapes zai-proxy `/metrics` endpoints into SQLite and serves correct, windowed
//! numbers over REST, Server-Sent Events and server-rendered pages.
//!
//! # Layout
//! - [`config`]: flags and environment into validated [`config::Settings`].
//! - [`scrape`]: one task per target (fetch, parse, increases, health) and the bucket ticker.
//! - [`point`]: the domain model: rows of increases, histograms, points per variant.
//! - [`store`]: SQLite (WAL): the single writer, rollups and retention, range queries.
//! - [`hub`]: live fan-out of points with a resume ring.
//! - [`selfmetrics`]: zai-dash's own `zai_dash_*` metrics at `/metrics`.
//! - [`web`]: router, JSON API, SSE adapter, pages, error mapping.
//! - [`expo`]: writing the Prometheus text format like Go's client_golang.
//! - [`healthcheck`]: the `zai-dash healthcheck` probe for container health checks.
//! - [`compare`]: baseline vs candidate statistics (z-test on 5xx share, p95 ratio).
//! - [`proxy`]: the built-in LLM reverse proxy exporting zai-proxy's `zai_proxy_*` metrics.
//! - [`demo`]: the whole loop in one process (simulated upstream, two proxies, traffic).
//! - [`commands`]: one function per subcommand; [`shutdown`]: signals; [`telemetry`]: logs.
//! - [`app`]: wiring and ordered shutdown; [`clock`]: the injectable wall clock.
//!
//! Data flow: scrape task → ticker (one batch per 5 s bucket) → writer (one transaction) →
//! hub (SSE); downsampler: `metrics_5s` → `metrics_1m`; API reads both tables (through a cache
//! of sealed buckets).

#![warn(missing_docs)]

pub mod app;
pub mod clock;
pub mod commands;
pub mod compare;
pub mod config;
pub mod demo;
pub mod expo;
pub mod healthcheck;
pub mod hub;
pub mod point;
pub mod proxy;
pub mod scrape;
pub mod selfmetrics;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod web;

/// The version, from the `VERSION` file.
pub const VERSION: &str = env!("ZAI_DASH_VERSION");
