//! Estimated cost of tokens (docs/decisions.md, Built-in proxy): USD per 1,000 tokens per direction, doubled
//! in the peak tier (07:00-10:59 UTC, zai-proxy's fixed UTC-5 02:00-05:59). The rates default to
//! the GLM-4.7 public list price and are configurable.

use chrono::Timelike;

/// USD per 1,000 tokens, off-peak; peak multiplies by [`Pricing::peak_multiplier`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pricing {
    /// Uncached input.
    pub input: f64,
    /// Output.
    pub output: f64,
    /// Cache reads.
    pub cache_read: f64,
    /// Cache writes.
    pub cache_write: f64,
    /// Peak-tier factor.
    pub peak_multiplier: f64,
}

impl Default for Pricing {
    fn default() -> Self {
        Self { input: 0.0006, output: 0.0022, cache_read: 0.00011, cache_write: 0.0, peak_multiplier: 2.0 }
    }
}

/// `peak` or `off_peak` at `now_ms`.
pub fn tier(now_ms: i64) -> &'static str {
    let hour = chrono::DateTime::from_timestamp_millis(now_ms).map_or(0, |t| t.hour());
    if (7..=10).contains(&hour) { "peak" } else { "off_peak" }
}

impl Pricing {
    /// Cost of `tokens` in `direction` (`input`, `output`, `cache_read`, `cache_write`) in `tier`.
    pub(crate) fn cost(&self, direction: &str, tokens: u64, tier: &str) -> f64 {
        let per_k = match direction {
            "input" => self.input,
            "output" => self.output,
            "cache_read" => self.cache_read,
            "cache_write" => self.cache_write,
            _ => 0.0,
        };
        let factor = if tier == "peak" { self.peak_multiplier } else { 1.0 };
        tokens as f64 / 1000.0 * per_k * factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_is_seven_to_eleven_utc() {
        let at = |h: i64, m: i64| 1_800_000_000_000 - 1_800_000_000_000 % 86_400_000 + (h * 60 + m) * 60_000;
        assert_eq!(tier(at(6, 59)), "off_peak");
        assert_eq!(tier(at(7, 0)), "peak");
        assert_eq!(tier(at(10, 59)), "peak");
        assert_eq!(tier(at(11, 0)), "off_peak");
    }

    #[test]
    fn cost_per_direction_and_tier() {
        let p = Pricing::default();
        assert!((p.cost("output", 1000, "off_peak") - 0.0022).abs() < 1e-12);
        assert!((p.cost("input", 2000, "peak") - 0.0024).abs() < 1e-12);
        assert_eq!(p.cost("cache_write", 5000, "peak"), 0.0);
    }
}
