//! Text from records, made safe for where it is written. Records come from other machines (CI artifacts)
//! and programs (`exec` command lines): every string in them is untrusted, and is data wherever it goes.
//!
//! - [`terminal`]: control characters (C0, DEL, C1) written as `\u{1b}`, so that a record cannot clear a
//!   screen, set a window title or colour the output;
//! - [`markdown`]: that, and the characters markdown reads as markup (`|`, `` ` ``, `<`, `>`, `&`, `*`,
//!   `[`, `]`, `\`, and `#` at the start), so that a record cannot break a table or add a heading, a link
//!   or HTML to a job summary (`_` is left: GitHub's markdown never reads it as emphasis inside a word,
//!   and counter names hold it);
//! - [`xml`]: that, for text the XML writer escapes itself: the characters XML 1.0 forbids (most of C0)
//!   cannot be written even as references, and would make a whole JUnit report invalid.

use std::fmt::Write as _;

/// Whether a character is a control character a terminal acts on.
fn control(c: char) -> bool {
    c.is_control()
}

/// Whether `text` may hold a control character, by its bytes: C0 and DEL are bytes of their own, and
/// every C1 character (U+0080 to U+009F) starts with 0xc2. `false` is certain; `true` is to be looked at.
fn may_hold_control(text: &str) -> bool {
    text.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2)
}

fn escape(c: char, out: &mut String) {
    let _ = write!(out, "\\u{{{:x}}}", c as u32);
}

/// `text` with every control character written as `\u{..}`, newlines and tabs included.
pub fn terminal(text: &str) -> String {
    if !may_hold_control(text) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if control(c) {
            escape(c, &mut out);
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` as literal markdown text, for a table cell or a list item.
pub fn markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.chars().enumerate() {
        match c {
            c if control(c) => escape(c, &mut out),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '|' | '`' | '*' | '[' | ']' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            c => out.push(c),
        }
    }
    out
}

/// An identifier (a cell id) as a markdown code span when it holds nothing but letters, digits and
/// `=,._-` (a cell id always does), else as escaped text: a code span shows its text as it is, markup
/// included, and cannot be escaped.
pub fn markdown_code(text: &str) -> String {
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || "=,._-".contains(c)) {
        format!("`{text}`")
    } else {
        markdown(text)
    }
}

/// `text` with every character XML 1.0 forbids (`Char`, section 2.2: C0 but tab, newline and carriage
/// return; U+FFFE and U+FFFF) and every other control character written as `\u{..}`; the XML writer
/// escapes markup itself.
pub fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if (control(c) && c != '\n' && c != '\t') || c == '\u{fffe}' || c == '\u{ffff}' {
            escape(c, &mut out);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(terminal("\u{1b}[2J\u{7}title\u{9b}x\n"), "\\u{1b}[2J\\u{7}title\\u{9b}x\\u{a}");
        assert_eq!(terminal("plain → text"), "plain → text");
    }

    #[test]
    fn markdown_text_is_never_markup() {
        assert_eq!(markdown("# a | b `c` <script>&amp;"), "\\# a \\| b \\`c\\` &lt;script&gt;&amp;amp;");
        assert_eq!(markdown("x\ny"), "x\\u{a}y");
        assert_eq!(markdown("a#b"), "a#b");
    }

    #[test]
    fn only_plain_identifiers_become_code_spans() {
        assert_eq!(markdown_code("thread=detached,self=none"), "`thread=detached,self=none`");
        assert_eq!(markdown_code("x`|y"), "x\\`\\|y");
    }

    #[test]
    fn xml_text_has_no_forbidden_characters() {
        assert_eq!(xml("a\u{1}b\u{1b}c\td\ne\u{fffe}"), "a\\u{1}b\\u{1b}c\td\ne\\u{fffe}");
    }
}
