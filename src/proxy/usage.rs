//! Token usage from LLM responses, streaming and not (pure; fixture-tested).
//!
//! Anthropic Messages: `usage.input_tokens`, `output_tokens`, `cache_read_input_tokens`,
//! `cache_creation_input_tokens`; streamed in `message_start` (input and cache) and
//! `message_delta` (cumulative output). OpenAI Chat Completions: `usage.prompt_tokens`,
//! `completion_tokens`, `prompt_tokens_details.cached_tokens`; streamed in the final chunk when
//! the client asked for `stream_options.include_usage`. OpenAI's prompt count includes cached
//! tokens, so input = prompt - cached and cache_read = cached, matching Anthropic's split.
//!
//! When the upstream reports nothing, usage is estimated as one token per four characters of
//! text (the request's message text for input, the response's text for output), the same rule
//! zai-proxy falls back to; [`Usage::estimated`] says so.

use super::scan::{EventFields, EventType, RequestFields, ResponseFields, UsageFields, scan};

/// Which API a path speaks, for credentials, error envelopes and usage parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    /// Anthropic Messages (`.../v1/messages`) and any other path.
    Anthropic,
    /// OpenAI Chat Completions (`.../chat/completions`).
    OpenAi,
}

impl ApiKind {
    /// Classifies a request path.
    pub(crate) fn from_path(path: &str) -> Self {
        if path.ends_with("/chat/completions") { Self::OpenAi } else { Self::Anthropic }
    }
}

/// Token counts of one response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Uncached input tokens.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write: u64,
    /// True when the numbers are a local estimate (the upstream reported none).
    pub estimated: bool,
}

impl Usage {
    /// Per direction, in the order of `zai_proxy_tokens_total{direction}`.
    pub(crate) fn by_direction(&self) -> [(&'static str, u64); 4] {
        [
            ("input", self.input),
            ("output", self.output),
            ("cache_read", self.cache_read),
            ("cache_write", self.cache_write),
        ]
    }
}

impl Usage {
    /// A `usage` object read as `kind` reports it; a missing number is 0. OpenAI's prompt count
    /// includes cached tokens, so input = prompt - cached.
    pub(crate) fn from_fields(kind: ApiKind, u: &UsageFields) -> Self {
        match kind {
            ApiKind::Anthropic => Usage {
                input: u.input_tokens.unwrap_or(0),
                output: u.output_tokens.unwrap_or(0),
                cache_read: u.cache_read_input_tokens.unwrap_or(0),
                cache_write: u.cache_creation_input_tokens.unwrap_or(0),
                estimated: false,
            },
            ApiKind::OpenAi => {
                let (prompt, cached) = (u.prompt_tokens.unwrap_or(0), u.cached_tokens.unwrap_or(0));
                Usage {
                    input: prompt.saturating_sub(cached),
                    output: u.completion_tokens.unwrap_or(0),
                    cache_read: cached,
                    cache_write: 0,
                    estimated: false,
                }
            }
        }
    }
}

/// A complete (non-streaming) response, read once: usage and text size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseSummary {
    /// `usage`, when the response has a `usage` object.
    pub usage: Option<Usage>,
    /// Bytes of answer text (for the estimate when usage is missing).
    pub text_len: usize,
}

/// Reads a complete JSON response; `None` when it is not JSON (empty, cut, malformed), which
/// the proxy treats as a failed attempt. Validates the whole body without building a tree.
pub fn summarize_response(kind: ApiKind, body: &[u8]) -> Option<ResponseSummary> {
    let r: ResponseFields = scan(body).ok()?;
    let text_len = match kind {
        ApiKind::Anthropic => r.content_len,
        ApiKind::OpenAi => r.choices.message,
    };
    Some(ResponseSummary { usage: r.usage.object.then(|| Usage::from_fields(kind, &r.usage)), text_len })
}

/// Usage of a complete (non-streaming) JSON response, if it reports any.
pub fn from_json(kind: ApiKind, body: &[u8]) -> Option<Usage> {
    summarize_response(kind, body)?.usage
}

/// Usage of a complete response when the upstream reported input or output tokens (summed
/// without overflow, whatever the upstream claims); `None` when it reported none, so the caller
/// estimates instead.
pub fn reported(usage: Option<Usage>) -> Option<Usage> {
    usage.filter(|u| u.input.saturating_add(u.output) > 0)
}

/// What the proxy needs from a request body: the model and whether it streams.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// `model`, when given.
    pub model: Option<String>,
    /// `"stream": true`.
    pub stream: bool,
    /// Characters of message text (for the input estimate).
    pub text_len: usize,
}

/// Reads a request body; anything that is not JSON is simply "no model, not streaming".
/// Memory stays at the body's size whatever it holds (no JSON tree).
pub fn request_info(body: &[u8]) -> RequestInfo {
    let Ok(r) = scan::<RequestFields>(body) else { return RequestInfo::default() };
    RequestInfo { model: r.model, stream: r.stream.unwrap_or(false), text_len: r.text_len }
}

/// One token per four characters, at least one for non-empty text.
pub(crate) fn estimate_tokens(chars: usize) -> u64 {
    if chars == 0 { 0 } else { (chars as u64).div_ceil(4) }
}

/// Whether an event can carry usage or text: only one with a `usage` or `delta` key can (see
/// `EventFields`), and without an escape in the line such a key appears literally. Most events
/// of a stream (`content_block_start`, `ping`, `..._stop`) have neither, and are not parsed.
fn may_matter(data: &[u8]) -> bool {
    memchr::memchr(b'\\', data).is_some()
        || memchr::memmem::find(data, b"\"usage\"").is_some()
        || memchr::memmem::find(data, b"\"delta\"").is_some()
}

/// Longest SSE line kept; the rest of a longer line is dropped (no event is that large).
const MAX_LINE: usize = 1 << 20;

/// Incremental reader of an SSE response body: finds usage and the first content event in
/// events split across arbitrary chunk boundaries (zai-proxy missed events split across reads).
#[derive(Debug)]
pub struct SseUsage {
    kind: ApiKind,
    line: Vec<u8>,
    usage: Usage,
    reported: bool,
    text_len: usize,
    first_content: bool,
}

/// What one chunk revealed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChunkEvents {
    /// The chunk held the first content token (for time to first token).
    pub first_content: bool,
}

impl SseUsage {
    /// A reader for a stream of `kind`.
    pub fn new(kind: ApiKind) -> Self {
        Self { kind, line: Vec::new(), usage: Usage::default(), reported: false, text_len: 0, first_content: false }
    }

    /// Feeds the next chunk of the body, exactly as it was forwarded. Complete lines are read
    /// in place; only a line split across chunks is copied (and only up to [`MAX_LINE`]).
    pub fn feed(&mut self, chunk: &[u8]) -> ChunkEvents {
        let mut events = ChunkEvents::default();
        let mut rest = chunk;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            let content = if self.line.is_empty() {
                self.handle_line(&rest[..end])
            } else {
                self.append(&rest[..end]);
                let line = std::mem::take(&mut self.line);
                let content = self.handle_line(&line);
                self.line = line; // keeps its capacity for the next split line
                self.line.clear();
                content
            };
            if content && !self.first_content {
                self.first_content = true;
                events.first_content = true;
            }
            rest = &rest[end + 1..];
        }
        self.append(rest);
        events
    }

    /// Keeps the start of a line split across chunks, at most [`MAX_LINE`] bytes of it.
    fn append(&mut self, piece: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.line.len());
        self.line.extend_from_slice(&piece[..piece.len().min(room)]);
    }

    /// Handles one line; returns true when it carried content text.
    fn handle_line(&mut self, line: &[u8]) -> bool {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else { return false };
        if !may_matter(data) {
            return false;
        }
        let Ok(event) = scan::<EventFields>(data.trim_ascii()) else { return false };
        match self.kind {
            ApiKind::Anthropic => self.anthropic_event(&event),
            ApiKind::OpenAi => self.openai_chunk(&event),
        }
    }

    fn anthropic_event(&mut self, e: &EventFields) -> bool {
        match e.kind {
            EventType::MessageStart => {
                if e.message_usage.object {
                    let start = Usage::from_fields(ApiKind::Anthropic, &e.message_usage);
                    self.usage.input = start.input;
                    self.usage.cache_read = start.cache_read;
                    self.usage.cache_write = start.cache_write;
                    self.usage.output = self.usage.output.max(start.output);
                    self.reported = true;
                }
                false
            }
            EventType::MessageDelta => {
                if let Some(out) = e.usage.output_tokens {
                    self.usage.output = out; // cumulative
                    self.reported = true;
                }
                false
            }
            EventType::ContentBlockDelta => {
                let len = e.delta.text.or(e.delta.thinking).unwrap_or(0);
                self.text_len = self.text_len.saturating_add(len);
                len > 0
            }
            EventType::Other => false,
        }
    }

    fn openai_chunk(&mut self, e: &EventFields) -> bool {
        if e.usage.object {
            self.usage = Usage::from_fields(ApiKind::OpenAi, &e.usage);
            self.reported = true;
        }
        let len = e.choices.delta;
        self.text_len = self.text_len.saturating_add(len);
        len > 0
    }

    /// Final usage: what the upstream reported, else the estimate from `request_text_len` and
    /// the streamed text.
    pub fn finish(mut self, request_text_len: usize) -> Usage {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.handle_line(&line);
        }
        if self.reported {
            if self.usage.output == 0 {
                self.usage.output = estimate_tokens(self.text_len);
            }
            return self.usage;
        }
        Usage {
            input: estimate_tokens(request_text_len),
            output: estimate_tokens(self.text_len),
            estimated: true,
            ..Usage::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANTHROPIC_JSON: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"glm-4.7",
        "content":[{"type":"text","text":"Hello there"}],"stop_reason":"end_turn",
        "usage":{"input_tokens":120,"output_tokens":31,"cache_read_input_tokens":2048,"cache_creation_input_tokens":512}}"#;

    const OPENAI_JSON: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","model":"glm-4.7",
        "choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],
        "usage":{"prompt_tokens":1000,"completion_tokens":40,"total_tokens":1040,"prompt_tokens_details":{"cached_tokens":768}}}"#;

    const ANTHROPIC_SSE: &str = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1,\"cache_read_input_tokens\":4000,\"cache_creation_input_tokens\":100}}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" world\"}}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";

    const OPENAI_SSE: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":10}}}\n\n\
data: [DONE]\n\n";

    /// Events are skipped unparsed only when no `usage` or `delta` key can be in them: a key
    /// spelled with an escape is still read.
    #[test]
    fn events_without_usage_or_delta_are_skipped_but_escaped_keys_are_read() {
        let mut r = SseUsage::new(ApiKind::Anthropic);
        r.feed(b"data: {\"type\":\"message_delta\",\"us\\u0061ge\":{\"output_tokens\":7}}\n\n");
        r.feed(b"data: {\"type\":\"content_block_d\\u0065lta\",\"d\\u0065lta\":{\"text\":\"abcd\"}}\n\n");
        r.feed(b"data: {\"type\":\"message_stop\"}\n\n");
        let u = r.finish(0);
        assert_eq!((u.output, u.estimated), (7, false));
        assert!(!may_matter(br#"{"type":"content_block_stop","index":0}"#));
        assert!(may_matter(br#"{"type":"content_block_delta","delta":{"text":"x"}}"#));
        let mut text = SseUsage::new(ApiKind::Anthropic);
        let events = text.feed(b"data: {\"type\":\"content_block_d\\u0065lta\",\"d\\u0065lta\":{\"text\":\"abcd\"}}\n");
        assert!(events.first_content, "an escaped delta key still carries text");
    }

    #[test]
    fn anthropic_json_usage_with_cache_tokens() {
        let u = from_json(ApiKind::Anthropic, ANTHROPIC_JSON.as_bytes()).unwrap();
        assert_eq!((u.input, u.output, u.cache_read, u.cache_write, u.estimated), (120, 31, 2048, 512, false));
    }

    #[test]
    fn openai_json_usage_splits_cached_prompt_tokens() {
        let u = from_json(ApiKind::OpenAi, OPENAI_JSON.as_bytes()).unwrap();
        assert_eq!((u.input, u.output, u.cache_read, u.cache_write), (232, 40, 768, 0));
    }

    #[test]
    fn anthropic_stream_usage_survives_any_chunking() {
        for size in [1, 2, 3, 7, 64, 4096] {
            let mut r = SseUsage::new(ApiKind::Anthropic);
            let mut firsts = 0;
            for chunk in ANTHROPIC_SSE.as_bytes().chunks(size) {
                firsts += usize::from(r.feed(chunk).first_content);
            }
            assert_eq!(firsts, 1, "exactly one first-content event (chunk size {size})");
            let u = r.finish(0);
            assert_eq!((u.input, u.output, u.cache_read, u.cache_write, u.estimated), (25, 15, 4000, 100, false));
        }
    }

    #[test]
    fn openai_stream_usage_from_the_final_chunk() {
        let mut r = SseUsage::new(ApiKind::OpenAi);
        let mut first = None;
        for (i, chunk) in OPENAI_SSE.as_bytes().chunks(5).enumerate() {
            if r.feed(chunk).first_content && first.is_none() {
                first = Some(i);
            }
        }
        assert!(first.is_some());
        let u = r.finish(0);
        assert_eq!((u.input, u.output, u.cache_read), (40, 2, 10));
    }

    #[test]
    fn streams_without_usage_are_estimated() {
        let sse = "data: {\"choices\":[{\"delta\":{\"content\":\"abcdefgh\"}}]}\n\ndata: [DONE]\n\n";
        let mut r = SseUsage::new(ApiKind::OpenAi);
        r.feed(sse.as_bytes());
        let u = r.finish(40);
        assert_eq!((u.input, u.output, u.estimated), (10, 2, true));
    }

    #[test]
    fn request_info_reads_model_stream_and_text() {
        let body = br#"{"model":"glm-4.5-air","stream":true,"system":"be brief","messages":[{"role":"user","content":"abcd"},{"role":"user","content":[{"type":"text","text":"efgh"}]}]}"#;
        let info = request_info(body);
        assert_eq!(info.model.as_deref(), Some("glm-4.5-air"));
        assert!(info.stream);
        assert_eq!(info.text_len, 16);
        assert_eq!(request_info(b"not json"), RequestInfo::default());
    }

    #[test]
    fn hostile_token_counts_do_not_overflow() {
        // `input + output` overflowed (a panic in debug builds) on counts near u64::MAX.
        let huge = br#"{"usage":{"input_tokens":18446744073709551615,"output_tokens":1}}"#;
        let u = reported(from_json(ApiKind::Anthropic, huge)).unwrap();
        assert_eq!((u.input, u.output), (u64::MAX, 1));
        let none = br#"{"usage":{"input_tokens":0,"output_tokens":0}}"#;
        assert_eq!(reported(from_json(ApiKind::Anthropic, none)), None);
    }

    #[test]
    fn api_kind_by_path() {
        assert_eq!(ApiKind::from_path("/api/anthropic/v1/messages"), ApiKind::Anthropic);
        assert_eq!(ApiKind::from_path("/v1/chat/completions"), ApiKind::OpenAi);
        assert_eq!(estimate_tokens(9), 3);
    }
}
