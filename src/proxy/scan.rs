//! Reading the few fields the proxy needs from JSON bodies without building a tree (issue 11).
//!
//! A `serde_json::Value` of `{"messages":[0,0,...]}` costs some 32 bytes per element: a 30 MB
//! request grew the proxy by half a gigabyte. Here every body is still parsed (and so validated)
//! whole by serde_json, but through visitors that keep only what is asked for: a model name, a
//! flag, string *lengths*, usage numbers. Everything else is skipped with [`Skip`], so
//! memory stays at the body itself plus serde_json's scratch buffer for escaped strings.
//!
//! [`Skip`] reads a skipped value as a tree would (numbers as `f64`, so `1e400` is out of range;
//! strings with their escapes decoded, so a lone surrogate is refused) and then forgets it.
//! serde's `IgnoredAny` would not: serde_json skips an ignored number or string by its grammar
//! alone, and the usage fuzzer found bodies the scanner accepted and serde_json rejects.
//!
//! A field of an unexpected type is ignored rather than failing the whole body, as the
//! `Value`-based reading did (`"model": 5` means "no model", not "not JSON").

use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// What to keep from one JSON value; each hook sees the value when it has that type, and the
/// defaults skip it.
pub(crate) trait Pick: Default {
    /// A string.
    fn string(&mut self, _s: &str) {}
    /// `true` or `false`.
    fn boolean(&mut self, _b: bool) {}
    /// A non-negative integer (negative ones and floats are skipped, like `Value::as_u64`).
    fn number(&mut self, _n: u64) {}
    /// An array.
    fn seq<'de, A: SeqAccess<'de>>(&mut self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(())
    }
    /// An object.
    fn map<'de, A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(())
    }
}

/// Parses (and so validates) a whole JSON document, keeping what `T` picks.
///
/// The body is checked to be UTF-8 first: serde_json skips an ignored string (a key or value
/// nobody picks) without looking at its bytes, so invalid UTF-8 there would otherwise pass for
/// JSON (the usage fuzzer found it). Checking the whole body up front is cheap next to parsing.
pub(crate) fn scan<T: Pick>(body: &[u8]) -> Result<T, serde_json::Error> {
    let text = std::str::from_utf8(body).map_err(<serde_json::Error as serde::de::Error>::custom)?;
    serde_json::from_str::<Scan<T>>(text).map(|s| s.0)
}

/// One JSON value of any type, read through `T`.
struct Scan<T>(T);

impl<'de, T: Pick> serde::Deserialize<'de> for Scan<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScanVisitor(PhantomData)).map(Scan)
    }
}

struct ScanVisitor<T>(PhantomData<T>);

impl<'de, T: Pick> Visitor<'de> for ScanVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<T, E> {
        let mut t = T::default();
        t.boolean(v);
        Ok(t)
    }

    fn visit_i64<E>(self, v: i64) -> Result<T, E> {
        let mut t = T::default();
        if let Ok(n) = u64::try_from(v) {
            t.number(n);
        }
        Ok(t)
    }

    fn visit_u64<E>(self, v: u64) -> Result<T, E> {
        let mut t = T::default();
        t.number(v);
        Ok(t)
    }

    fn visit_f64<E>(self, _: f64) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_str<E>(self, v: &str) -> Result<T, E> {
        let mut t = T::default();
        t.string(v);
        Ok(t)
    }

    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_none<E>(self) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        <Scan<T> as serde::Deserialize>::deserialize(d).map(|s| s.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        let mut t = T::default();
        t.seq(seq)?;
        Ok(t)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        let mut t = T::default();
        t.map(map)?;
        Ok(t)
    }
}

/// Any JSON value, checked as serde_json's tree checks it and then dropped (see the module
/// comment): nothing is allocated but serde_json's scratch buffer for escaped strings.
struct Skip;

impl<'de> serde::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_none<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Skip, D::Error> {
        <Skip as serde::Deserialize>::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// An object key, as its index in a list of wanted names (no allocation).
struct KeyIn(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for KeyIn {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIn {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|k| *k == v))
    }
}

/// Walks an object: `on(i, map)` reads the value of the `i`-th wanted key; others are skipped.
fn fields<'de, A: MapAccess<'de>>(
    map: &mut A,
    names: &'static [&'static str],
    mut on: impl FnMut(usize, &mut A) -> Result<(), A::Error>,
) -> Result<(), A::Error> {
    while let Some(key) = map.next_key_seed(KeyIn(names))? {
        match key {
            Some(i) => on(i, map)?,
            None => {
                map.next_value::<Skip>()?;
            }
        }
    }
    Ok(())
}

/// The next value of `map`, read through `T`.
fn value<'de, T: Pick, A: MapAccess<'de>>(map: &mut A) -> Result<T, A::Error> {
    Ok(map.next_value::<Scan<T>>()?.0)
}

/// Sums `T::len` over an array's elements.
fn sum_seq<'de, T: Pick + Len, A: SeqAccess<'de>>(mut seq: A) -> Result<usize, A::Error> {
    let mut total = 0usize;
    while let Some(item) = seq.next_element::<Scan<T>>()? {
        total = total.saturating_add(item.0.len());
    }
    Ok(total)
}

/// A picked text size.
trait Len {
    fn len(&self) -> usize;
}

/// A string, owned (the model name).
#[derive(Debug, Default)]
pub(crate) struct Str(pub Option<String>);

impl Pick for Str {
    fn string(&mut self, s: &str) {
        self.0 = Some(s.to_owned());
    }
}

/// A boolean.
#[derive(Debug, Default)]
struct Bool(Option<bool>);

impl Pick for Bool {
    fn boolean(&mut self, b: bool) {
        self.0 = Some(b);
    }
}

/// A non-negative integer.
#[derive(Debug, Default)]
struct Num(Option<u64>);

impl Pick for Num {
    fn number(&mut self, n: u64) {
        self.0 = Some(n);
    }
}

/// The length of a string, in bytes.
#[derive(Debug, Default)]
struct StrLen(Option<usize>);

impl Pick for StrLen {
    fn string(&mut self, s: &str) {
        self.0 = Some(s.len());
    }
}

/// Text fields of a content block, an Anthropic delta or an OpenAI message or delta.
#[derive(Debug, Default)]
pub(crate) struct Text {
    /// `text`.
    pub text: Option<usize>,
    /// `thinking`.
    pub thinking: Option<usize>,
    /// `content` (OpenAI), when a string.
    pub content: Option<usize>,
}

impl Pick for Text {
    fn map<'de, A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        fields(&mut map, &["text", "thinking", "content"], |i, m| {
            let len = value::<StrLen, _>(m)?.0;
            match i {
                0 => self.text = len,
                1 => self.thinking = len,
                _ => self.content = len,
            }
            Ok(())
        })
    }
}

impl Len for Text {
    /// A content block's `text`.
    fn len(&self) -> usize {
        self.text.unwrap_or(0)
    }
}

/// Text of an array of content blocks.
#[derive(Debug, Default)]
struct Blocks(usize);

impl Pick for Blocks {
    fn seq<'de, A: SeqAccess<'de>>(&mut self, seq: A) -> Result<(), A::Error> {
        self.0 = sum_seq::<Text, A>(seq)?;
        Ok(())
    }
}

/// A message's `content`: a string, or content blocks.
#[derive(Debug, Default)]
struct Content(usize);

impl Pick for Content {
    fn string(&mut self, s: &str) {
        self.0 = s.len();
    }

    fn seq<'de, A: SeqAccess<'de>>(&mut self, seq: A) -> Result<(), A::Error> {
        self.0 = sum_seq::<Text, A>(seq)?;
        Ok(())
    }
}

/// One request message: the text of its `content`.
#[derive(Debug, Default)]
struct Message(usize);

impl Pick for Message {
    fn map<'de, A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        fields(&mut map, &["content"], |_, m| {
            self.0 = value::<Content, _>(m)?.0;
            Ok(())
        })
    }
}

impl Len for Message {
    fn len(&self) -> usize {
        self.0
    }
}

/// What the proxy reads from a request body.
#[derive(Debug, Default)]
pub(crate) struct RequestFields {
    /// `model`, when a string.
    pub model: Option<String>,
    /// `stream`, when a boolean.
    pub stream: Option<bool>,
    /// Bytes of message text: every message's `content` plus `system`.
    pub text_len: usize,
}

impl Pick for RequestFields {
    fn map<'de, A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        let (mut messages, mut system) = (0usize, 0usize);
        fields(&mut map, &["model", "stream", "messages", "system"], |i, m| {
            match i {
                0 => self.model = value::<Str, _>(m)?.0,
                1 => self.stream = value::<Bool, _>(m)?.0,
                2 => messages = value::<Messages, _>(m)?.0,
                _ => system = value::<Content, _>(m)?.0,
            }
            Ok(())
        })?;
        self.text_len = messages.saturating_add(system);
        Ok(())
    }
}

/// The text of every message in `messages`.
#[derive(Debug, Default)]
struct Messages(usize);

impl Pick for Messages {
    fn seq<'de, A: SeqAccess<'de>>(&mut self, seq: A) -> Result<(), A::Error> {
        self.0 = sum_seq::<Message, A>(seq)?;
        Ok(())
    }
}

/// A `usage` object of either API, field by field as the upstream sent them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UsageFields {
    /// The value was an object (a `usage` of another type counts as absent).
    pub object: bool,
    /// Anthropic `input_tokens`.
    pub input_tokens: Option<u64>,
    /// Anthropic `output_tokens`.
    pub output_tokens: Option<u64>,
    /// Anthropic `cache_read_input_tokens`.
    pub cache_read_input_tokens: Option<u64>,
    /// Anthropic `cache_creation_input_tokens`.
    pub cache_creation_input_tokens: Option<u64>,
    /// OpenAI `prompt_tokens`.
    pub prompt_tokens: Option<u64>,
    /// OpenAI `completion_tokens`.
    pub completion_tokens: Option<u64>,
    /// OpenAI `prompt_tokens_details.cached_tokens`.
    pub cached_tokens: Option<u64>,
}

const USAGE_KEYS: &[&str] = &[
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "prompt_tokens",
    "completion_tokens",
    "prompt_tokens_details",
];

impl Pick for UsageFields {
    fn map<'de, A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        self.object = true;
        fields(&mut map, USAGE_KEYS, |i, m| {
            if i == 6 {
                self.cached_tokens = value::<CachedTokens, _>(m)?.0;
                return Ok(());
            }
            let n = value::<Num, _>(m)?.0;
            match i {
                0 => self.input_tokens = n,
                1 => self.output_tokens = n,
                2 => self.cache_read_input_tokens = n,
                3 => self.cache_creation_input_tokens = n,
                4 => self.prompt_tokens = n,
                _ => self.completion_tokens = n,
            }
            Ok(())
        })
    }
}

/// `prompt_tokens_details.cached_tokens`.
#[derive(Debug, Default)]
struct CachedTokens(Option<u64>);

impl Pick for CachedTokens {
    fn map<'de, A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        fields(&mut map, &["cached_tokens"], |_, m| {
            self.0 = value::<Num, _>(m)?.0;
            Ok(())
        })
    }
}

/// OpenAI `choices`: text of every `message.content` and every `delta.content`.
#[derive(Debug, Default)]
pub(crate) struct Choices {
    /// Sum over `choices[].message.content`.
    pub message: usize,
    /// Sum over `choices[].delta.content`.
    pub delta: usize,
}

impl Pick for Choices {
    fn seq<'de, A: SeqAccess<'de>>(&mut self, mut seq: A) -> Result<(), A::Error> {
        while let Some(choice) = seq.next_element::<Scan<Choice>>()? {
            self.message = self.message.saturating_add(choice.0.message);
            self.delta = self.delta.saturating_add(choice.0.delta);
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Choice {
    message: usize,
    delta: usize,
}

impl Pick for Choice {
    fn map<'de, A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        fields(&mut map, &["message", "delta"], |i, m| {
            let len = value::<Text, _>(m)?.content.unwrap_or(0);
            if i == 0 {
                self.message = len
            } else {
                self.delta = len
            }
            Ok(())
        })
    }
}

/// A complete (non-streaming) response of either API.
#[derive(Debug, Default)]
pub(crate) struct ResponseFields {
    /// `usage`.
    pub usage: UsageFields,
    /// Anthropic: text of the `content` blocks.
    pub content_len: usize,
    /// OpenAI: `choices`.
    pub choices: Choices,
}

impl Pick for ResponseFields {
    fn map<'de, A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        fields(&mut map, &["usage", "content", "choices"], |i, m| {
            match i {
                0 => self.usage = value(m)?,
                1 => self.content_len = value::<Blocks, _>(m)?.0,
                _ => self.choices = value(m)?,
            }
            Ok(())
        })
    }
}

/// The `type` of an Anthropic stream event, among those that matter.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    /// Any other type, or none.
    #[default]
    Other,
    /// `message_start`: input and cache usage.
    MessageStart,
    /// `message_delta`: cumulative output usage.
    MessageDelta,
    /// `content_block_delta`: text.
    ContentBlockDelta,
}

impl Pick for EventType {
    fn string(&mut self, s: &str) {
        *self = match s {
            "message_start" => Self::MessageStart,
            "message_delta" => Self::MessageDelta,
            "content_block_delta" => Self::ContentBlockDelta,
            _ => Self::Other,
        };
    }
}

/// One `data:` payload of a stream, of either API.
#[derive(Debug, Default)]
pub(crate) struct EventFields {
    /// Anthropic `type`.
    pub kind: EventType,
    /// Anthropic `message.usage` (`message_start`).
    pub message_usage: UsageFields,
    /// `usage` (Anthropic `message_delta`, OpenAI's final chunk).
    pub usage: UsageFields,
    /// Anthropic `delta`.
    pub delta: Text,
    /// OpenAI `choices`.
    pub choices: Choices,
}

impl Pick for EventFields {
    fn map<'de, A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        fields(&mut map, &["type", "message", "usage", "delta", "choices"], |i, m| {
            match i {
                0 => self.kind = value(m)?,
                1 => self.message_usage = value::<MessageUsage, _>(m)?.0,
                2 => self.usage = value(m)?,
                3 => self.delta = value(m)?,
                _ => self.choices = value(m)?,
            }
            Ok(())
        })
    }
}

/// `message.usage`.
#[derive(Debug, Default)]
struct MessageUsage(UsageFields);

impl Pick for MessageUsage {
    fn map<'de, A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        fields(&mut map, &["usage"], |_, m| {
            self.0 = value(m)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_fields_tolerate_other_types_and_still_validate() {
        let r: RequestFields =
            scan(br#"{"model":5,"stream":true,"messages":[0,"x",{"content":[1,{"text":"abc"}]}],"system":null}"#)
                .unwrap();
        assert_eq!((r.model, r.stream, r.text_len), (None, Some(true), 3));
        assert!(scan::<RequestFields>(br#"{"model":"m""#).is_err(), "truncated JSON is not JSON");
        assert!(scan::<RequestFields>(b"[1,2] x").is_err(), "trailing garbage is not JSON");
        assert!(scan::<RequestFields>(b"[1,{\"a\":[]}]").is_ok(), "any JSON value validates");
    }

    #[test]
    fn invalid_utf8_in_a_skipped_key_or_value_is_not_json() {
        // serde_json alone skips ignored strings without checking their bytes.
        assert!(scan::<RequestFields>(b"{\"model\":\"m\",\"c\xce\xce\":1}").is_err());
        assert!(scan::<RequestFields>(b"{\"other\":\"\xff\"}").is_err());
        assert!(serde_json::from_slice::<serde_json::Value>(b"{\"other\":\"\xff\"}").is_err());
    }

    /// Every body here is refused by serde_json's tree; the scanner must refuse it too, wherever
    /// the offending value sits (picked, skipped, a key, nested in a skipped value).
    #[test]
    fn scanner_refuses_what_the_tree_refuses() {
        let bodies: &[&[u8]] = &[
            // The fuzzer's find: an out-of-range number under a key nobody reads.
            b"{\"usage\":{\"inputt_\\u00e9:18=467ens\":11e400}}",
            b"{\"x\":1e400}",
            b"{\"x\":-1e400}",
            b"{\"x\":[1,{\"y\":2E+999}]}",
            b"{\"usage\":{\"input_tokens\":1e309}}",
            b"{\"x\":01}",
            b"{\"x\":1.}",
            b"{\"x\":.5}",
            b"{\"x\":-}",
            b"{\"x\":1e}",
            b"{\"x\":\"\\ud800\"}",
            b"{\"\\udc00\":1}",
            b"{\"x\":\"\\ud800\\u0041\"}",
            b"{\"x\":\"\\uZZZZ\"}",
            b"{\"x\":\"\\q\"}",
            b"{\"x\":\"a\tb\"}",
            b"{\"model\":\"\\ud800\"}",
        ];
        for body in bodies {
            let shown = String::from_utf8_lossy(body);
            assert!(serde_json::from_slice::<serde_json::Value>(body).is_err(), "the tree accepts {shown}");
            assert!(scan::<RequestFields>(body).is_err(), "request scanner accepted {shown}");
            assert!(scan::<ResponseFields>(body).is_err(), "response scanner accepted {shown}");
        }
        // Their valid neighbours still pass.
        for body in [&b"{\"x\":1e300,\"y\":\"\\ud83d\\ude00\",\"z\":-0.0}"[..], b"{\"\\u00e9\":[1e-400]}"] {
            assert!(serde_json::from_slice::<serde_json::Value>(body).is_ok());
            assert!(scan::<RequestFields>(body).is_ok(), "refused {}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn usage_fields_keep_presence_and_skip_floats_and_negatives() {
        let r: ResponseFields =
            scan(br#"{"usage":{"input_tokens":-1,"output_tokens":2.5,"prompt_tokens":7,"prompt_tokens_details":{"cached_tokens":3}}}"#)
                .unwrap();
        assert!(r.usage.object);
        assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (None, None));
        assert_eq!((r.usage.prompt_tokens, r.usage.cached_tokens), (Some(7), Some(3)));
        let r: ResponseFields = scan(br#"{"usage":"none"}"#).unwrap();
        assert!(!r.usage.object);
    }
}
