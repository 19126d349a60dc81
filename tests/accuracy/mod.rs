//! The accuracy suite's harness; the scenario and its documentation are in `tests/accuracy.rs`.

pub mod buckets;
pub mod dash;
pub mod fake;
pub mod fields;
pub mod ledger;
pub mod model;
pub mod pods;
pub mod prom;
pub mod verify;
