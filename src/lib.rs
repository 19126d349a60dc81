//! zai-dash: scrapes zai-proxy `/metrics` endpoints into SQLite and serves correct, windowed
//! numbers over REST, Server-Sent Events and server-rendered pages.
//!
//! # Layout
//! Top-level modules form layers; every dependency points down (ARCHITECTURE.md draws it, and
//! `tests/layers.rs` fails when a new one points up).
//!
//! **Core**, depending on nothing above it:
//! - [`point`]: the domain model: rows of increases, histograms, points per variant.
//! - [`clock`]: the injectable wall clock and bucket arithmetic.
//! - [`expo`]: writing the Prometheus text format like Go's client_golang.
//! - [`canary`]: sequential canary analysis (always-valid confidence sequences, per metric).
//! - [`budget`]: quota runway, spend forecasts and SLOs with their burn-rate alerts (pure).
//! - [`variant`]: variant names and how a target's variant is decided.
//! - [`health`]: per-target scrape health and whether the database takes writes, as data,
//!   written by the scraper and the writer, read by pages, probes and alerts.
//! - [`setting`]: parsing single setting values (durations, addresses, secrets).
//! - [`net`]: the serving loop every listener runs (`TCP_NODELAY`, header-read and idle timeouts).
//! - [`host`]: which `Host` a browser may change state by (`ALLOWED_HOSTS`, DNS rebinding).
//! - `redact`: URL credentials shown as `***` wherever a URL is shown, logged or labelled.
//! - [`promql`]: the PromQL behind every number, for engines that scrape the proxies.
//! - [`phase`]: where an alert stands (shared by the alert engine and the objectives).
//! - [`shutdown`]: signals; [`telemetry`]: logs; [`console`]: what commands print on stdout.
//!
//! **Contracts**, on the core: [`ports`], the traits and hand-off types one part needs from
//! another (the collector's batches, raw samples for remote write, alert records, everything
//! the pages, the API and the alerts read), so that no subsystem imports another.
//!
//! **Subsystems**, each on the contracts and the core, never on each other:
//! - [`scrape`]: one task per target (fetch, parse, increases) and the bucket ticker.
//! - [`store`]: SQLite (WAL): the single writer and what it holds while writes fail, rollups and
//!   retention, range queries.
//! - [`hub`]: live fan-out of points with a resume ring.
//! - [`proxy`]: the built-in LLM reverse proxy exporting zai-proxy's `zai_proxy_*` metrics.
//! - [`alerts`]: alerting rules evaluated each tick, persisted, sent to Alertmanager or webhooks.
//! - [`promsource`]: source mode: every number from PromQL against an engine that scrapes the proxies.
//! - [`remote`]: remote write out: a durable queue of scraped samples shipped to Prometheus-compatible receivers.
//!
//! **Web**, on the subsystems it reads and the core:
//! - [`web`]: router, JSON API, SSE adapter, pages, `/metrics`, error mapping.
//!
//! **Wiring**, on top:
//! - [`config`]: flags and environment composed into validated [`config::Settings`].
//! - [`app`]: builds and runs the pieces, ordered shutdown.
//! - [`healthcheck`]: the `zai-dash healthcheck` probe for container health checks.
//! - [`demo`]: the whole loop in one process (simulated upstream, two proxies, traffic).
//! - [`commands`]: one function per subcommand.
//!
//! Data flow: scrape task → ticker (one batch per 5 s bucket) → writer (one transaction) →
//! hub (SSE); downsampler: `metrics_5s` → `metrics_1m`; API reads both tables (through a cache
//! of sealed buckets).

#![warn(missing_docs)]

// Core.
pub mod budget;
pub mod canary;
pub mod clock;
pub(crate) mod console;
pub mod expo;
pub mod health;
pub mod heap;
pub(crate) mod host;
pub mod net;
pub(crate) mod phase;
pub mod point;
pub mod promql;
pub(crate) mod redact;
pub mod setting;
pub(crate) mod shutdown;
pub mod telemetry;
pub(crate) mod variant;

// Contracts.
pub mod ports;

// Subsystems.
pub mod alerts;
pub mod hub;
pub mod promsource;
pub mod proxy;
pub mod remote;
pub mod scrape;
pub mod store;

// Web.
pub mod web;

// Wiring.
pub mod app;
pub mod commands;
pub mod config;
pub mod demo;
pub(crate) mod healthcheck;

/// The version, from the `VERSION` file.
pub const VERSION: &str = env!("ZAI_DASH_VERSION");
