//! A sample's label set, borrowed from the exposition it was parsed from.
//!
//! A scrape's parse used to build a `String` for every label name and value: thousands of small
//! allocations per scrape, most of the scrape's CPU (BENCHMARKS.md, issue 14's profile). A
//! [`Labels`] keeps the text between the braces as a slice of the body instead, checked once by
//! [`parse_label_set`], and reads names and values from it on demand. Only a label set with an
//! escape sequence (`\\`, `\n`, `\"`) in it is unescaped into owned values, once, at parse time.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use super::lex::{BLANKS_BYTES, ident_len, quoted};

/// A label's name and its value with escapes resolved.
type UnescapedLabel<'a> = (&'a str, Cow<'a, str>);

/// The labels of one sample, in exposition order, names unique.
#[derive(Clone, Default)]
pub struct Labels<'a> {
    /// The text between `{` and `}`, already checked; empty for a sample without braces.
    raw: &'a str,
    /// The labels with their values unescaped, only when a value held an escape sequence.
    unescaped: Option<Box<[UnescapedLabel<'a>]>>,
    /// Where in `raw` the bound label (`le` of a bucket, `quantile` of a quantile) is, with
    /// the comma and blanks after it: a histogram's lines differ only there, so finding the
    /// lines of one series is a comparison of the text around it.
    bound: Option<(usize, usize)>,
    /// The bound label's value as written (without escapes), or its name when the labels were
    /// unescaped.
    bound_value: Option<&'a str>,
}

impl<'a> Labels<'a> {
    /// The value of the bound label named when parsing (`le`, `quantile`), if present.
    pub(crate) fn bound_value(&self) -> Option<&str> {
        match &self.unescaped {
            None => self.bound_value,
            Some(_) => self.get(self.bound_value?),
        }
    }

    /// Whether both label sets are equal apart from `skip` (same names in the same order, same
    /// values). Lines of one histogram series written alike compare as text around their `le`.
    pub fn same_except(&self, other: &Self, skip: &str) -> bool {
        if let (None, None, Some(a), Some(b)) = (&self.unescaped, &other.unescaped, self.bound, other.bound)
            && self.raw[..a.0] == other.raw[..b.0]
            && self.raw[a.1..] == other.raw[b.1..]
            && self.raw[a.0..].starts_with(skip)
            && other.raw[b.0..].starts_with(skip)
        {
            return true;
        }
        let kept = |l: &(&str, &str)| l.0 != skip;
        self.iter().filter(kept).eq(other.iter().filter(kept))
    }

    /// `(name, value)` pairs in exposition order.
    pub fn iter(&self) -> LabelIter<'_> {
        match &self.unescaped {
            Some(pairs) => LabelIter::Unescaped(pairs.iter()),
            None => LabelIter::Raw(self.raw.as_bytes(), self.raw, 0),
        }
    }

    /// The value of the label `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// An upper bound of the length of every name and value: no label is longer than this.
    pub fn text_len(&self) -> usize {
        match &self.unescaped {
            None => self.raw.len(),
            Some(pairs) => pairs.iter().map(|(n, v)| n.len().max(v.len())).max().unwrap_or(0),
        }
    }

    /// Whether there is no label.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

impl<'s> IntoIterator for &'s Labels<'_> {
    type Item = (&'s str, &'s str);
    type IntoIter = LabelIter<'s>;

    fn into_iter(self) -> LabelIter<'s> {
        self.iter()
    }
}

impl PartialEq for Labels<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl fmt::Debug for Labels<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over `(name, value)` pairs of a [`Labels`].
#[derive(Clone)]
pub enum LabelIter<'s> {
    /// Reading checked text without escapes: bytes, the text, position.
    Raw(&'s [u8], &'s str, usize),
    /// Unescaped pairs.
    Unescaped(std::slice::Iter<'s, (&'s str, Cow<'s, str>)>),
}

impl<'s> Iterator for LabelIter<'s> {
    type Item = (&'s str, &'s str);

    fn next(&mut self) -> Option<(&'s str, &'s str)> {
        match self {
            Self::Unescaped(it) => it.next().map(|(n, v)| (*n, v.as_ref())),
            Self::Raw(b, s, pos) => {
                // The text was checked by `parse_label_set`: name, blanks, `=`, blanks, a quoted
                // value without backslashes, blanks, an optional comma.
                let start = skip_blanks(b, *pos);
                let name_end = start + ident_len(&b[start..], false);
                if name_end == start {
                    return None;
                }
                let open = skip_blanks(b, skip_blanks(b, name_end) + 1);
                let value_start = open + 1;
                let close = value_start + b[value_start..].iter().position(|&c| c == b'"')?;
                let mut next = skip_blanks(b, close + 1);
                if b.get(next) == Some(&b',') {
                    next += 1;
                }
                *pos = next;
                Some((&s[start..name_end], &s[value_start..close]))
            }
        }
    }
}

fn skip_blanks(b: &[u8], mut pos: usize) -> usize {
    while b.get(pos).is_some_and(|c| BLANKS_BYTES.contains(c)) {
        pos += 1;
    }
    pos
}

/// Names of a label set seen so far, for the duplicate check: on the stack for the usual
/// handful, in a set past that (so a hostile line of a million labels stays linear).
struct SeenNames<'a> {
    few: [&'a str; 16],
    len: usize,
    many: Option<HashSet<&'a str>>,
}

impl<'a> SeenNames<'a> {
    /// Adds `name`; false when it was there already.
    fn insert(&mut self, name: &'a str) -> bool {
        if let Some(set) = &mut self.many {
            return set.insert(name);
        }
        if self.few[..self.len].contains(&name) {
            return false;
        }
        if self.len < self.few.len() {
            self.few[self.len] = name;
            self.len += 1;
        } else {
            let mut set: HashSet<&str> = self.few.iter().copied().collect();
            set.insert(name);
            self.many = Some(set);
        }
        true
    }
}

/// Checks the label set after `{` and returns it with the text after `}`.
pub(crate) fn parse_label_set<'a>(
    s: &'a str,
    bound_name: Option<&'static str>,
) -> Result<(Labels<'a>, &'a str), String> {
    let b = s.as_bytes();
    let mut seen = SeenNames { few: [""; 16], len: 0, many: None };
    let mut escaped = false;
    let mut bound = None;
    let mut bound_value = None;
    let mut pos = skip_blanks(b, 0);
    loop {
        match b.get(pos) {
            None => return Err("missing '}' after labels".to_owned()),
            Some(b'}') => break,
            Some(_) => {}
        }
        let name_end = pos + ident_len(&b[pos..], false);
        if name_end == pos {
            // Include at least the offending character, then up to a delimiter.
            let start = pos + s[pos..].chars().next().map_or(0, char::len_utf8);
            let end = s[start..].find(['=', ',', '}', ' ', '\t']).map_or(s.len(), |e| start + e);
            return Err(format!("invalid label name {}", quoted(&s[pos..end])));
        }
        let name = &s[pos..name_end];
        pos = skip_blanks(b, name_end);
        if b.get(pos) != Some(&b'=') {
            return Err(format!("expected '=' after label name {}", quoted(name)));
        }
        pos = skip_blanks(b, pos + 1);
        if b.get(pos) != Some(&b'"') {
            return Err(format!("expected '\"' to open value of label {}", quoted(name)));
        }
        let label_start = name_end - name.len();
        let value_start = pos + 1;
        let (after, has_escape) = value_end(b, value_start)?;
        escaped |= has_escape;
        if !seen.insert(name) {
            return Err(format!("duplicate label {}", quoted(name)));
        }
        pos = skip_blanks(b, after);
        match b.get(pos) {
            Some(b',') => pos = skip_blanks(b, pos + 1),
            Some(b'}') | None => {}
            Some(_) => return Err(format!("expected ',' or '}}' after label {}", quoted(name))),
        }
        if Some(name) == bound_name {
            bound = Some((label_start, pos));
            bound_value = Some(&s[value_start..after - 1]);
        }
    }
    let raw = &s[..pos];
    let labels = if escaped {
        Labels { bound, bound_value: bound.and(bound_name), ..unescaped(raw) }
    } else {
        Labels { raw, unescaped: None, bound, bound_value }
    };
    Ok((labels, &s[pos + 1..]))
}

/// [`parse_label_set`] for a line whose previous sample line had the same bound label: a
/// histogram's bucket lines (a summary's quantile lines) repeat their series' labels and differ
/// in the bound label only, written last. When this line's text up to its bound label is the
/// previous line's, byte for byte, that part was checked there (names, quotes, no escape, no
/// duplicate, no bound label: it is where that line's bound label started), so only the bound
/// label and the closing brace are checked here. Any other shape, or anything wrong, goes
/// through the whole check, which gives the same labels or the same error as ever. Checking
/// each bucket line's series labels again was most of the label check's cost (BENCHMARKS.md,
/// "Scrape ingest, fifth stop").
pub(crate) fn parse_label_set_after<'a>(
    s: &'a str,
    bound_name: Option<&'static str>,
    previous: Option<&Labels<'_>>,
) -> Result<(Labels<'a>, &'a str), String> {
    if let (Some(name), Some(previous)) = (bound_name, previous)
        && let Some(found) = bound_after_previous_series(s, name, previous)
    {
        return Ok(found);
    }
    parse_label_set(s, bound_name)
}

/// The fast case of [`parse_label_set_after`], or `None` for the whole check.
fn bound_after_previous_series<'a>(s: &'a str, name: &str, previous: &Labels<'_>) -> Option<(Labels<'a>, &'a str)> {
    let (start, end) = previous.bound?;
    if previous.unescaped.is_some() || end != previous.raw.len() {
        return None; // escapes, or labels after the bound label: their names need the whole check
    }
    let b = s.as_bytes();
    if !b.starts_with(&previous.raw.as_bytes()[..start]) {
        return None;
    }
    let name_end = start + ident_len(&b[start..], false);
    if &b[start..name_end] != name.as_bytes() {
        return None;
    }
    let mut pos = skip_blanks(b, name_end);
    if b.get(pos) != Some(&b'=') {
        return None;
    }
    pos = skip_blanks(b, pos + 1);
    if b.get(pos) != Some(&b'"') {
        return None;
    }
    let value_start = pos + 1;
    let (after, has_escape) = value_end(b, value_start).ok()?;
    if has_escape {
        return None;
    }
    pos = skip_blanks(b, after);
    if b.get(pos) == Some(&b',') {
        pos = skip_blanks(b, pos + 1);
    }
    if b.get(pos) != Some(&b'}') {
        return None;
    }
    let labels = Labels {
        raw: &s[..pos],
        unescaped: None,
        bound: Some((start, pos)),
        bound_value: Some(&s[value_start..after - 1]),
    };
    Some((labels, &s[pos + 1..]))
}

/// The index after the closing quote of a value starting at `start`, and whether it holds a
/// backslash. Scans bytes: `"` and `\` never occur inside multi-byte UTF-8 sequences.
fn value_end(b: &[u8], start: usize) -> Result<(usize, bool), String> {
    let mut i = start;
    let mut has_escape = false;
    while let Some(&c) = b.get(i) {
        match c {
            b'"' => return Ok((i + 1, has_escape)),
            b'\\' => {
                has_escape = true;
                i += 2;
            }
            _ => i += 1,
        }
    }
    Err("unterminated label value".to_owned())
}

/// The checked label text `raw` with every value unescaped.
fn unescaped(raw: &str) -> Labels<'_> {
    let b = raw.as_bytes();
    let mut pairs = Vec::new();
    let mut pos = skip_blanks(b, 0);
    while pos < b.len() {
        let name_end = pos + ident_len(&b[pos..], false);
        let open = skip_blanks(b, skip_blanks(b, name_end) + 1);
        let Ok((after, has_escape)) = value_end(b, open + 1) else { break };
        let text = &raw[open + 1..after - 1];
        let value = if has_escape { Cow::Owned(unescape(text, true)) } else { Cow::Borrowed(text) };
        pairs.push((&raw[pos..name_end], value));
        pos = skip_blanks(b, after);
        if b.get(pos) == Some(&b',') {
            pos = skip_blanks(b, pos + 1);
        }
    }
    Labels { raw, unescaped: Some(pairs.into_boxed_slice()), bound: None, bound_value: None }
}

/// Resolves `\\` and `\n` (and `\"` when `quotes`); any other backslash sequence is kept
/// verbatim, as Prometheus does. Copies whole runs between backslashes.
pub(crate) fn unescape(raw: &str, quotes: bool) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(p) = rest.find('\\') {
        out.push_str(&rest[..p]);
        let after = &rest[p + 1..];
        let (c, consumed) = match after.as_bytes().first() {
            Some(b'\\') => ('\\', 1),
            Some(b'n') => ('\n', 1),
            Some(b'"') if quotes => ('"', 1),
            _ => ('\\', 0),
        };
        out.push(c);
        rest = &after[consumed..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels<'a>(text: &'a str, bound: Option<&'static str>) -> Labels<'a> {
        parse_label_set(text, bound).unwrap().0
    }

    #[test]
    fn values_are_borrowed_unless_one_holds_an_escape() {
        let plain = labels(r#" a = "x" ,b="y",} rest"#, None);
        assert!(plain.unescaped.is_none());
        assert_eq!(plain.iter().collect::<Vec<_>>(), [("a", "x"), ("b", "y")]);
        let escaped = labels(r#"a="x",b="q\"z\n",c="w"}"#, None);
        assert!(escaped.unescaped.is_some());
        assert_eq!(escaped.iter().collect::<Vec<_>>(), [("a", "x"), ("b", "q\"z\n"), ("c", "w")]);
        assert_eq!(escaped.get("c"), Some("w"));
        assert_eq!(plain, labels(r#"a="x", b="y"}"#, None), "equal labels written differently");
    }

    #[test]
    fn the_bound_label_is_found_with_or_without_escapes() {
        assert_eq!(labels(r#"a="1",le="0.5"}"#, Some("le")).bound_value(), Some("0.5"));
        assert_eq!(labels(r#"le="0.5",a="\\"}"#, Some("le")).bound_value(), Some("0.5"));
        assert_eq!(labels(r#"l="1",a="\\"}"#, Some("le")).bound_value(), None);
        assert_eq!(labels(r#"quantile="0.9"}"#, Some("le")).bound_value(), None);
    }

    #[test]
    fn lines_of_one_series_compare_equal_apart_from_their_bound() {
        let a = labels(r#"m="x",le="0.5",v="p"}"#, Some("le"));
        let b = labels(r#"m="x",le="1",v="p"}"#, Some("le"));
        let spaced = labels(r#"m = "x", le="2", v="p"}"#, Some("le"));
        let other = labels(r#"m="y",le="1",v="p"}"#, Some("le"));
        let escaped = labels(r#"m="x",le="3",v="p",z="\\"}"#, Some("le"));
        assert!(a.same_except(&b, "le"));
        assert!(a.same_except(&spaced, "le"), "written differently, same labels");
        assert!(!a.same_except(&other, "le"));
        assert!(!a.same_except(&escaped, "le"));
        assert!(!a.same_except(&labels(r#"m="x",v="p"}"#, None), "x"));
    }

    /// What a label check gives, comparable: labels, bound position and value, the rest.
    fn outcome(r: Result<(Labels<'_>, &str), String>) -> Result<String, String> {
        r.map(|(l, rest)| format!("{:?} {:?} {:?} {:?} {rest:?}", l, l.bound, l.bound_value(), l.unescaped.is_some()))
    }

    #[test]
    fn a_bucket_after_its_series_previous_bucket_gives_what_the_whole_check_gives() {
        let previous = labels(r#"m="x", v="p",le="0.5"}"#, Some("le"));
        let cases = [
            r#"m="x", v="p",le="1"} 3"#,
            r#"m="x", v="p",le = "+Inf" ,} 3"#,
            r#"m="x", v="p",le="1",m="y"} 3"#,
            r#"m="x", v="p",le="1",le="2"} 3"#,
            r#"m="x", v="p",le="1",v="q"} 3"#,
            r#"m="x", v="p",le="1",z="w"} 3"#,
            r#"m="x", v="p",le="1\"} 3"#,
            r#"m="x", v="p",le="1"#,
            r#"m="x", v="p",le="1" 3"#,
            r#"m="x", v="p",le=1} 3"#,
            r#"m="x", v="p",le} 3"#,
            r#"m="x", v="p",lex="1"} 3"#,
            r#"m="x", v="p",le="1",} 3"#,
            r#"m="x", v="p",} 3"#,
            r#"m="x", v="q",le="1"} 3"#,
            r#"le="1"} 3"#,
            r#"m="x", m="p",le="1"} 3"#,
            r#"m=x, v="p",le="1"} 3"#,
        ];
        for text in cases {
            let whole = outcome(parse_label_set(text, Some("le")));
            assert_eq!(outcome(parse_label_set_after(text, Some("le"), Some(&previous))), whole, "{text}");
        }
        assert!(outcome(parse_label_set_after(cases[3], Some("le"), Some(&previous))).is_err(), "le twice");
        assert!(outcome(parse_label_set_after(cases[2], Some("le"), Some(&previous))).is_err(), "m twice");
        // Labels after the previous line's bound label, or escapes in it: its prefix proves less.
        for previous in [r#"m="x",le="0.5",m2="y"}"#, r#"m="\x",le="0.5"}"#, r#"le="0.5",m="x"}"#] {
            let previous = labels(previous, Some("le"));
            for text in [r#"m="x",le="1",m="y"} 3"#, r#"m="\x",le="1",m="\y"} 3"#, r#"le="1",le="2"} 3"#] {
                let whole = outcome(parse_label_set(text, Some("le")));
                assert_eq!(outcome(parse_label_set_after(text, Some("le"), Some(&previous))), whole, "{text}");
            }
        }
    }

    #[test]
    fn many_labels_are_checked_for_duplicates() {
        let text: String = (0..40).map(|i| format!("l{i}=\"v\",")).collect::<String>() + "}";
        assert_eq!(labels(&text, None).len(), 40);
        let twice = format!("{}l7=\"w\"}}", &text[..text.len() - 1]);
        assert_eq!(parse_label_set(&twice, None).unwrap_err(), "duplicate label \"l7\"");
    }
}
