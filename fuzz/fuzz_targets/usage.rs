//! Token usage from upstream responses: the streaming (SSE) reader and the JSON body reader.
//!
//! Input: `[flags][n][n chunk lengths][body]`. Bit 0 of `flags` picks the API (OpenAI when set);
//! the chunk lengths, cycled, cut the body the way network reads would.
//! Properties:
//! - nothing panics (overflow checks on: hostile token counts such as `u64::MAX` included);
//! - the SSE reader gives the same usage and the same single first-content event whether the
//!   body arrives in one piece or cut at arbitrary points;
//! - the JSON readers agree with each other and with the proxy's "reported usage" decision.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zai_dash::proxy::usage::{self, ApiKind, SseUsage, Usage};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let kind = if flags & 1 == 0 { ApiKind::Anthropic } else { ApiKind::OpenAi };
    let (cuts, body) = match rest.split_first() {
        Some((&n, rest)) if rest.len() >= usize::from(n) => rest.split_at(usize::from(n)),
        _ => (&[][..], rest),
    };

    let info = usage::request_info(body);
    let (whole, whole_firsts) = stream(kind, [body].into_iter(), info.text_len);
    let pieces = Pieces { rest: body, cuts, next: 0, empty: false };
    let (split, split_firsts) = stream(kind, pieces, info.text_len);
    assert_eq!(whole, split, "usage depends on where the stream was cut");
    assert_eq!(whole_firsts, split_firsts, "first-content events depend on where the stream was cut");
    assert!(whole_firsts <= 1, "more than one first-content event");

    let from_json = usage::from_json(kind, body);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        assert_eq!(from_json, usage::from_value(kind, &v));
        assert!(usage::response_text_len(kind, &v) <= body.len());
        if let Some(u) = usage::reported(kind, &v) {
            assert!(u.input > 0 || u.output > 0);
        }
    } else {
        assert_eq!(from_json, None);
    }
});

/// Feeds every chunk, then finishes: the usage and how many chunks reported first content.
fn stream<'a>(kind: ApiKind, chunks: impl Iterator<Item = &'a [u8]>, request_text_len: usize) -> (Usage, usize) {
    let mut reader = SseUsage::new(kind);
    let firsts = chunks.map(|c| usize::from(reader.feed(c).first_content)).sum();
    (reader.finish(request_text_len), firsts)
}

/// The body cut into chunks of the given lengths (cycled; a zero length is an empty read, never
/// two in a row, so the body always runs out).
struct Pieces<'a> {
    rest: &'a [u8],
    cuts: &'a [u8],
    next: usize,
    empty: bool,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let len = match self.cuts {
            [] => 1,
            cuts => usize::from(cuts[self.next % cuts.len()]),
        };
        self.next += 1;
        let len = if self.empty { len.max(1) } else { len };
        self.empty = len == 0;
        let (chunk, rest) = self.rest.split_at(len.min(self.rest.len()));
        self.rest = rest;
        Some(chunk)
    }
}
