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

use serde_json::Value;

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
    pub fn from_path(path: &str) -> Self {
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
    pub fn by_direction(&self) -> [(&'static str, u64); 4] {
        [
            ("input", self.input),
            ("output", self.output),
            ("cache_read", self.cache_read),
            ("cache_write", self.cache_write),
        ]
    }
}

fn n(v: &Value, path: &[&str]) -> u64 {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_u64).unwrap_or(0)
}

fn anthropic_usage(u: &Value) -> Usage {
    Usage {
        input: n(u, &["input_tokens"]),
        output: n(u, &["output_tokens"]),
        cache_read: n(u, &["cache_read_input_tokens"]),
        cache_write: n(u, &["cache_creation_input_tokens"]),
        estimated: false,
    }
}

fn openai_usage(u: &Value) -> Usage {
    let prompt = n(u, &["prompt_tokens"]);
    let cached = n(u, &["prompt_tokens_details", "cached_tokens"]);
    Usage {
        input: prompt.saturating_sub(cached),
        output: n(u, &["completion_tokens"]),
        cache_read: cached,
        cache_write: 0,
        estimated: false,
    }
}

/// Usage of a complete (non-streaming) JSON response, if it reports any.
pub fn from_json(kind: ApiKind, body: &[u8]) -> Option<Usage> {
    from_value(kind, &serde_json::from_slice(body).ok()?)
}

/// [`from_json`] on an already parsed body.
pub fn from_value(kind: ApiKind, v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    Some(match kind {
        ApiKind::Anthropic => anthropic_usage(u),
        ApiKind::OpenAi => openai_usage(u),
    })
}

/// Usage of a complete response when the upstream reported input or output tokens; `None` when
/// it reported none, so the caller estimates instead.
pub fn reported(kind: ApiKind, v: &Value) -> Option<Usage> {
    from_value(kind, v).filter(|u| u.input.saturating_add(u.output) > 0)
}

/// Text of a complete response (for the estimate when usage is missing).
pub fn response_text_len(kind: ApiKind, v: &Value) -> usize {
    match kind {
        ApiKind::Anthropic => v.get("content").and_then(Value::as_array).map_or(0, |blocks| {
            blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).map(str::len).sum()
        }),
        ApiKind::OpenAi => v.get("choices").and_then(Value::as_array).map_or(0, |c| {
            c.iter().filter_map(|c| c.pointer("/message/content").and_then(Value::as_str)).map(str::len).sum()
        }),
    }
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
pub fn request_info(body: &[u8]) -> RequestInfo {
    let Ok(v) = serde_json::from_slice::<Value>(body) else { return RequestInfo::default() };
    let text_len =
        v.get("messages").and_then(Value::as_array).map_or(0, |msgs| msgs.iter().map(message_text_len).sum())
            + v.get("system").map_or(0, content_text_len);
    RequestInfo {
        model: v.get("model").and_then(Value::as_str).map(str::to_owned),
        stream: v.get("stream").and_then(Value::as_bool).unwrap_or(false),
        text_len,
    }
}

fn message_text_len(m: &Value) -> usize {
    m.get("content").map_or(0, content_text_len)
}

fn content_text_len(c: &Value) -> usize {
    match c {
        Value::String(s) => s.len(),
        Value::Array(blocks) => blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).map(str::len).sum(),
        _ => 0,
    }
}

/// One token per four characters, at least one for non-empty text.
pub fn estimate_tokens(chars: usize) -> u64 {
    if chars == 0 { 0 } else { (chars as u64).div_ceil(4) }
}

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

    /// Feeds the next chunk of the body, exactly as it was forwarded.
    pub fn feed(&mut self, chunk: &[u8]) -> ChunkEvents {
        let mut events = ChunkEvents::default();
        for &b in chunk {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                if self.handle_line(&line) && !self.first_content {
                    self.first_content = true;
                    events.first_content = true;
                }
            } else if self.line.len() < 1 << 20 {
                self.line.push(b);
            }
        }
        events
    }

    /// Handles one line; returns true when it carried content text.
    fn handle_line(&mut self, line: &[u8]) -> bool {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else { return false };
        let Ok(v) = serde_json::from_slice::<Value>(data.trim_ascii()) else { return false };
        match self.kind {
            ApiKind::Anthropic => self.anthropic_event(&v),
            ApiKind::OpenAi => self.openai_chunk(&v),
        }
    }

    fn anthropic_event(&mut self, v: &Value) -> bool {
        match v.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                if let Some(u) = v.pointer("/message/usage") {
                    let start = anthropic_usage(u);
                    self.usage.input = start.input;
                    self.usage.cache_read = start.cache_read;
                    self.usage.cache_write = start.cache_write;
                    self.usage.output = self.usage.output.max(start.output);
                    self.reported = true;
                }
                false
            }
            Some("message_delta") => {
                if let Some(out) = v.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                    self.usage.output = out; // cumulative
                    self.reported = true;
                }
                false
            }
            Some("content_block_delta") => {
                let text = v.pointer("/delta/text").or_else(|| v.pointer("/delta/thinking")).and_then(Value::as_str);
                let len = text.map_or(0, str::len);
                self.text_len += len;
                len > 0
            }
            _ => false,
        }
    }

    fn openai_chunk(&mut self, v: &Value) -> bool {
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = openai_usage(u);
            self.reported = true;
        }
        let len: usize = v.get("choices").and_then(Value::as_array).map_or(0, |c| {
            c.iter().filter_map(|c| c.pointer("/delta/content").and_then(Value::as_str)).map(str::len).sum()
        });
        self.text_len += len;
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
        let v: Value =
            serde_json::from_str(r#"{"usage":{"input_tokens":18446744073709551615,"output_tokens":1}}"#).unwrap();
        let u = reported(ApiKind::Anthropic, &v).unwrap();
        assert_eq!((u.input, u.output), (u64::MAX, 1));
        let none: Value = serde_json::from_str(r#"{"usage":{"input_tokens":0,"output_tokens":0}}"#).unwrap();
        assert_eq!(reported(ApiKind::Anthropic, &none), None);
    }

    #[test]
    fn api_kind_by_path() {
        assert_eq!(ApiKind::from_path("/api/anthropic/v1/messages"), ApiKind::Anthropic);
        assert_eq!(ApiKind::from_path("/v1/chat/completions"), ApiKind::OpenAi);
        assert_eq!(estimate_tokens(9), 3);
    }
}
