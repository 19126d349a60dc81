//! The alerts suite's harness: real Alertmanager and Prometheus processes on loopback ports
//! chosen at run time, and a small receiver that records webhook bodies.

pub mod alertmanager;
pub mod process;
pub mod prometheus;
pub mod receiver;
