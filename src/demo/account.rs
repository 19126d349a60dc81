//! The demo's simulated account quota: the provider's `/api/monitor/usage/quota/limit`, with a
//! five-hour and a weekly window that fill up with the tokens the simulated upstreams serve.
//!
//! Both upstreams draw on one account, as a production and a canary proxy sharing a key do.
//! The plan is sized from the demo's request rate so the five-hour window moves visibly (about
//! 0.4 points a minute): it starts 45 % used with its reset two hours ahead, and at a steady
//! rate ends its window near 95 %, close enough to exhaustion for a runway forecast to matter.
//! The weekly window starts 38 % used and moves slowly. A window whose reset passes starts over
//! empty. Amounts are credits of 1,000 tokens (input plus output), in the current
//! `CREDIT_LIMIT` schema; a monthly `TIME_LIMIT` entry rides along, as the real answer has one
//! and the proxy must ignore it.

use std::sync::Mutex;

use serde_json::{Value, json};

use crate::clock::SharedClock;

/// Input plus output tokens of an average demo request (prompt 50..1,200, answer 20..220).
const TOKENS_PER_REQUEST: f64 = 900.0;
const MINUTE_MS: i64 = 60_000;
const FIVE_HOURS_MS: i64 = 5 * 60 * MINUTE_MS;
const WEEK_MS: i64 = 7 * 24 * 60 * MINUTE_MS;
const TOKENS_PER_CREDIT: f64 = 1000.0;

/// One window of the simulated plan, in tokens.
#[derive(Debug, Clone)]
struct Meter {
    allowance: f64,
    used: f64,
    reset_ms: i64,
    length_ms: i64,
}

impl Meter {
    /// A window `used_share` full whose reset is `reset_in_ms` ahead, sized so that
    /// `tokens_per_ms` fill it in `fill_ms`.
    fn new(now_ms: i64, tokens_per_ms: f64, fill_ms: i64, used_share: f64, reset_in_ms: i64, length_ms: i64) -> Self {
        let allowance = (tokens_per_ms * fill_ms as f64).max(TOKENS_PER_CREDIT);
        Self { allowance, used: allowance * used_share, reset_ms: now_ms + reset_in_ms, length_ms }
    }

    /// Starts the window over when its reset has passed.
    fn roll(&mut self, now_ms: i64) {
        while now_ms >= self.reset_ms {
            self.reset_ms += self.length_ms;
            self.used = 0.0;
        }
    }

    /// The provider's `limits[]` entry (`unit` 3 five-hour, 6 weekly).
    fn entry(&self, unit: u8, number: u8) -> Value {
        let allowance = (self.allowance / TOKENS_PER_CREDIT).round();
        let used = (self.used / TOKENS_PER_CREDIT).floor();
        json!({
            "type": "CREDIT_LIMIT", "unit": unit, "number": number,
            "usage": allowance, "currentValue": used, "remaining": (allowance - used).max(0.0),
            "percentage": (100.0 * used / allowance).round(), "nextResetTime": self.reset_ms,
        })
    }
}

/// The account both simulated upstreams charge.
#[derive(Debug)]
pub(crate) struct Account {
    clock: SharedClock,
    windows: Mutex<(Meter, Meter)>,
}

impl Account {
    /// An account sized for `rate` requests per second in total.
    pub(crate) fn new(clock: SharedClock, rate: f64) -> Self {
        let now = clock.now_ms();
        let per_ms = rate * TOKENS_PER_REQUEST / 1000.0;
        let five_hour = Meter::new(now, per_ms, 240 * MINUTE_MS, 0.45, 120 * MINUTE_MS, FIVE_HOURS_MS);
        let weekly = Meter::new(now, per_ms, 5 * 24 * 60 * MINUTE_MS, 0.38, 82 * 60 * MINUTE_MS, WEEK_MS);
        Self { clock, windows: Mutex::new((five_hour, weekly)) }
    }

    /// Charges one answer's tokens to both windows.
    pub(crate) fn consume(&self, tokens: u64) {
        let now = self.clock.now_ms();
        let mut w = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (five_hour, weekly) = &mut *w;
        for meter in [five_hour, weekly] {
            meter.roll(now);
            meter.used += tokens as f64;
        }
    }

    /// The quota endpoint's answer now.
    pub(crate) fn answer(&self) -> Value {
        let now = self.clock.now_ms();
        let mut w = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        w.0.roll(now);
        w.1.roll(now);
        let month = now - now.rem_euclid(30 * 24 * 60 * MINUTE_MS) + 30 * 24 * 60 * MINUTE_MS;
        let tools = json!({ "type": "TIME_LIMIT", "unit": 5, "number": 1, "usage": 1000, "currentValue": 120,
            "remaining": 880, "percentage": 12, "nextResetTime": month });
        json!({
            "code": 200, "msg": "Operation successful", "success": true,
            "data": { "level": "pro", "limits": [w.0.entry(3, 5), w.1.entry(6, 1), tools] },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;
    use crate::proxy::quota::{LimitType, Window, normalise};

    #[test]
    fn the_five_hour_window_fills_with_traffic_and_starts_over_at_its_reset() {
        let clock = Arc::new(ManualClock::new(1_800_000_000_000));
        let account = Account::new(clock.clone(), 6.0);
        let read = |a: &Account| normalise(a.answer().to_string().as_bytes()).unwrap();
        let start = read(&account);
        assert_eq!(start.windows.len(), 2, "the TIME_LIMIT entry is not a window");
        let five = &start.windows[0];
        assert_eq!((five.window, five.limit_type), (Window::FiveHour, LimitType::Credit));
        assert!((five.used_ratio - 0.45).abs() < 0.001, "{five:?}");
        assert_eq!(five.reset_ms, Some(1_800_000_000_000 + 2 * 3_600_000));
        assert!((start.windows[1].used_ratio - 0.38).abs() < 0.001);
        // Ten minutes of traffic at the planned rate: about four points more.
        clock.advance_ms(600_000);
        account.consume((6.0 * 600.0 * TOKENS_PER_REQUEST) as u64);
        let later = read(&account).windows[0].used_ratio;
        assert!((later - 0.45 - 10.0 / 240.0).abs() < 0.001, "{later}");
        clock.advance_ms(2 * 3_600_000);
        let after_reset = read(&account);
        assert_eq!(after_reset.windows[0].used_ratio, 0.0);
        assert_eq!(after_reset.windows[0].reset_ms, Some(1_800_000_000_000 + 7 * 3_600_000));
    }
}
