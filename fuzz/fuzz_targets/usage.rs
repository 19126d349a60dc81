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

    // Differential: the proxy's tree-free scanner against a reading of serde_json's tree.
    let summary = usage::summarize_response(kind, body);
    match serde_json::from_slice::<serde_json::Value>(body) {
        Err(_) => assert!(summary.is_none(), "the scanner accepted what serde_json rejects"),
        // The scanner refuses a duplicated key serde_json's tree keeps the last of; both read the
        // same from any body the scanner accepts.
        Ok(v) => {
            if let Some(s) = summary {
                assert_eq!(s.usage, reference_usage(kind, &v), "usage differs from the tree's");
                assert_eq!(s.text_len, reference_text_len(kind, &v), "text length differs from the tree's");
                if let Some(u) = usage::reported(s.usage) {
                    assert!(u.input > 0 || u.output > 0);
                }
            }
        }
    }
});

fn n(v: &serde_json::Value, path: &[&str]) -> u64 {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(serde_json::Value::as_u64).unwrap_or(0)
}

/// Usage as the `usage` object of the tree says (the proxy's rules: OpenAI's prompt count
/// includes cached tokens).
fn reference_usage(kind: ApiKind, v: &serde_json::Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    Some(match kind {
        ApiKind::Anthropic => Usage {
            input: n(u, &["input_tokens"]),
            output: n(u, &["output_tokens"]),
            cache_read: n(u, &["cache_read_input_tokens"]),
            cache_write: n(u, &["cache_creation_input_tokens"]),
            estimated: false,
        },
        ApiKind::OpenAi => {
            let cached = n(u, &["prompt_tokens_details", "cached_tokens"]);
            Usage {
                input: n(u, &["prompt_tokens"]).saturating_sub(cached),
                output: n(u, &["completion_tokens"]),
                cache_read: cached,
                cache_write: 0,
                estimated: false,
            }
        }
    })
}

/// Answer text bytes as the tree says.
fn reference_text_len(kind: ApiKind, v: &serde_json::Value) -> usize {
    use serde_json::Value;
    match kind {
        ApiKind::Anthropic => v.get("content").and_then(Value::as_array).map_or(0, |blocks| {
            blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).map(str::len).sum()
        }),
        ApiKind::OpenAi => v.get("choices").and_then(Value::as_array).map_or(0, |c| {
            c.iter().filter_map(|c| c.pointer("/message/content").and_then(Value::as_str)).map(str::len).sum()
        }),
    }
}

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
