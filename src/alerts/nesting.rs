//! How deep a YAML text nests lists and mappings, counted in one linear pass before any parser
//! sees the text. The YAML parser's time grows with the square of the nesting depth before its
//! own recursion limit refuses a file (a 200 KB rules file of `[` took 47 s), so the rules file
//! is refused on this count first (`rules::parse_rules`).

/// An upper bound of how deep `text` nests collections, in one pass and without parsing:
/// flow brackets (`[`, `{`) open anywhere outside comments, plus the block levels the
/// indentation and `- ` entries open. Brackets inside quoted text are counted too, so the
/// bound errs on the side of refusing; a comment never hides a bracket the parser would read.
pub(crate) fn depth(text: &str) -> usize {
    let (mut deepest, mut flow) = (0, 0usize);
    let mut blocks: Vec<usize> = Vec::new();
    for line in text.lines() {
        let content = line.trim_start_matches(' ');
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        if flow == 0 {
            open_blocks(&mut blocks, line.len() - content.len(), content);
        }
        let mut previous = ' ';
        for c in content.chars() {
            match c {
                '#' if previous.is_whitespace() => break,
                '[' | '{' => flow += 1,
                ']' | '}' => flow = flow.saturating_sub(1),
                _ => {}
            }
            deepest = deepest.max(blocks.len() + flow);
            previous = c;
        }
        deepest = deepest.max(blocks.len() + flow);
    }
    deepest
}

/// The block levels open at a line starting at `indent` with `content`: every level at or
/// right of the line's start is closed, then the line opens one, and each `- ` entry marker
/// opens one more (`- - x` is a list in a list). A level is twice its column, plus one for an
/// entry marker: a list written at its key's column (`rules:` then `- name: A`) is inside the
/// key, and the next key at that column closes both.
fn open_blocks(blocks: &mut Vec<usize>, indent: usize, content: &str) {
    let (mut column, mut rest) = (indent, content);
    loop {
        let entry = rest.strip_prefix('-').filter(|a| a.is_empty() || a.starts_with([' ', '\t']));
        let level = 2 * column + usize::from(entry.is_some());
        while blocks.last().is_some_and(|&b| b >= level) {
            blocks.pop();
        }
        blocks.push(level);
        let Some(after) = entry else { return };
        let inner = after.trim_start_matches([' ', '\t']);
        if inner.is_empty() {
            return;
        }
        column += rest.len() - inner.len();
        rest = inner;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_counted_before_parsing() {
        assert_eq!(depth(super::super::rules::DEFAULT_RULES), 5, "a rule's mapping, then `{{` of a summary");
        assert_eq!(depth("rules:\n  - {name: A, expr: req_rate, threshold: 1}\n"), 4);
        assert_eq!(depth("a: [[[]]]  # [[[[[[\n"), 4, "comments are not read");
        assert_eq!(depth("- - - - x\n"), 5, "each entry marker opens a level");
        assert_eq!(depth("a:\n b:\n  c:\n   d: 1\nz: 2\n"), 4);
        assert_eq!(depth("rules: [\n  [\n    1 ] ]\n"), 3, "lines inside brackets open no block");
        assert_eq!(depth("rules:\n- name: A\n  expr: x\nother: 1\n"), 3, "a list at its key's column is inside it");
        assert_eq!(depth("k:\n- k:\n  - k:\n    - k:\n      - x\n"), 9);
        assert_eq!(depth(&format!("rules: {}{}", "[".repeat(40), "]".repeat(40))), 41);
        assert_eq!(depth(&format!("rules:\n{}x\n", "- ".repeat(40))), 42);
    }
}
