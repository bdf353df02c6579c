//! Mending a damaged message before it is parsed, the way Python's
//! `email` package recovers it, so that its text reaches an agent.
//!
//! mail-parser reads well-formed mail well, but loses text silently on
//! three kinds of damage that real mailers and hand-written scripts
//! produce, and that Python's `email` (the reference our testers compared
//! against) recovers:
//!
//! - a header block with no blank line after it (a whole message, or one
//!   MIME part): the first line that is not a header starts the body, as
//!   Python's `MissingHeaderBodySeparatorDefect` does (mail-parser takes
//!   it as a header and drops it);
//! - text that contains a MIME boundary without being a delimiter line
//!   (`--b1x`, `--b10`, `voir --b1`): RFC 2046 delimiters are lines of
//!   the exact boundary, optionally followed by `--` and blanks;
//!   mail-parser ends the part at `--b1` anywhere, losing what follows.
//!   A SUB (0x1A) control character is put between the dashes and the
//!   boundary there, which [`crate::normalize`] removes with the other
//!   control characters once the text is decoded;
//! - `Content-Type: text` with no subtype: read as `text/plain` (RFC 2045's
//!   default) instead of an unnamed attachment.
//!
//! The mended bytes are parsed instead of the original; the original is
//! kept untouched in the object store, and the contact is flagged
//! `DAMAGED_STRUCTURE` with what was mended.

/// What [`repair`] changed, and the bytes to parse instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    pub bytes: Vec<u8>,
    /// What was found, once each, for the flag's reason.
    pub damage: Vec<&'static str>,
}

const NO_BLANK_LINE: &str = "a header block without the blank line that ends it";
const BOUNDARY_LOOKALIKE: &str = "a text line that looks like a MIME boundary";
const NO_SUBTYPE: &str = "a `Content-Type: text` without subtype (read as text/plain)";

/// Marks a line that must not be taken for a boundary; dropped with the
/// other control characters when the text is cleaned.
pub const LOOKALIKE_MARK: u8 = 0x1a;

/// Mends `raw`, or returns `None` when there is nothing to mend.
pub fn repair(raw: &[u8]) -> Option<Repaired> {
    let mut out = Vec::with_capacity(raw.len() + 16);
    let mut damage: Vec<&'static str> = Vec::new();
    let mut note = |what: &'static str| {
        if !damage.contains(&what) {
            damage.push(what);
        }
    };
    let mut boundaries: Vec<Vec<u8>> = Vec::new();
    let mut in_headers = true;
    let mut first_line = true;
    // The header being read (folded lines joined), to find boundaries.
    let mut header = Vec::new();

    for line in raw.split_inclusive(|&b| b == b'\n') {
        let content = trim_eol(line);
        let was_first = std::mem::replace(&mut first_line, false);
        if in_headers {
            if content.is_empty() {
                finish_header(&mut header, &mut boundaries);
                in_headers = false;
                out.extend_from_slice(line);
            } else if matches!(content[0], b' ' | b'\t') && !header.is_empty() {
                header.extend_from_slice(content);
                out.extend_from_slice(line);
            } else if is_header_line(content) || (was_first && content.starts_with(b"From ")) {
                finish_header(&mut header, &mut boundaries);
                header.extend_from_slice(content);
                match text_without_subtype(line) {
                    Some(mended) => {
                        note(NO_SUBTYPE);
                        out.extend_from_slice(&mended);
                    }
                    None => out.extend_from_slice(line),
                }
            } else if delimiter(content, &boundaries).is_some() {
                // A part with no header at all, then the next boundary.
                finish_header(&mut header, &mut boundaries);
                note(NO_BLANK_LINE);
                out.extend_from_slice(eol_of(line));
                out.extend_from_slice(line);
                in_headers = !matches!(delimiter(content, &boundaries), Some(true));
            } else {
                finish_header(&mut header, &mut boundaries);
                note(NO_BLANK_LINE);
                out.extend_from_slice(eol_of(line));
                in_headers = false;
                out.extend_from_slice(line);
            }
            continue;
        }
        match delimiter(content, &boundaries) {
            // An opening delimiter: the part's header block follows.
            Some(false) => {
                in_headers = true;
                out.extend_from_slice(line);
            }
            Some(true) => out.extend_from_slice(line),
            None => match mark_lookalikes(line, &boundaries) {
                Some(marked) => {
                    note(BOUNDARY_LOOKALIKE);
                    out.extend_from_slice(&marked);
                }
                None => out.extend_from_slice(line),
            },
        }
    }
    (!damage.is_empty()).then_some(Repaired { bytes: out, damage })
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn eol_of(line: &[u8]) -> &'static [u8] {
    if line.ends_with(b"\r\n") || !line.ends_with(b"\n") {
        b"\r\n"
    } else {
        b"\n"
    }
}

/// `name:` with a name of printable ASCII but the colon (RFC 5322's ftext,
/// the same test as Python's `email.feedparser`).
fn is_header_line(line: &[u8]) -> bool {
    match line.iter().position(|&b| b == b':') {
        Some(0) | None => false,
        Some(colon) => line[..colon].iter().all(|&b| (0x21..=0x7e).contains(&b)),
    }
}

/// Some(false) for `--b`, Some(true) for `--b--` (blanks may follow),
/// for a boundary `b` declared so far; `None` otherwise.
fn delimiter(line: &[u8], boundaries: &[Vec<u8>]) -> Option<bool> {
    let rest = line.strip_prefix(b"--")?;
    boundaries.iter().find_map(|b| {
        let tail = rest.strip_prefix(b.as_slice())?;
        let tail = trim_blanks(tail);
        if tail.is_empty() {
            Some(false)
        } else if tail == b"--" {
            Some(true)
        } else {
            None
        }
    })
}

/// `line` (not a delimiter) with a mark after the dashes of every `--b`
/// of a declared boundary `b` in it, or `None` if there is none.
fn mark_lookalikes(line: &[u8], boundaries: &[Vec<u8>]) -> Option<Vec<u8>> {
    let mut marked: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    while i + 2 <= line.len() {
        if line[i] == b'-' && line[i + 1] == b'-' && boundaries.iter().any(|b| line[i + 2..].starts_with(b)) {
            let out = marked.get_or_insert_with(|| Vec::with_capacity(line.len() + 4));
            out.extend_from_slice(&line[copied..i + 2]);
            out.push(LOOKALIKE_MARK);
            copied = i + 2;
            i += 2;
        } else {
            i += 1;
        }
    }
    let mut out = marked?;
    out.extend_from_slice(&line[copied..]);
    Some(out)
}

fn trim_blanks(mut bytes: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// Records the boundary of a finished `Content-Type` header, and clears it.
fn finish_header(header: &mut Vec<u8>, boundaries: &mut Vec<Vec<u8>>) {
    if let Some(boundary) = boundary_of(header)
        && !boundaries.contains(&boundary)
    {
        boundaries.push(boundary);
    }
    header.clear();
}

fn boundary_of(header: &[u8]) -> Option<Vec<u8>> {
    let colon = header.iter().position(|&b| b == b':')?;
    if !header[..colon].eq_ignore_ascii_case(b"content-type") {
        return None;
    }
    let value = &header[colon + 1..];
    let lower = value.to_ascii_lowercase();
    let at = lower.windows(9).position(|w| w == b"boundary=")? + 9;
    let rest = &value[at..];
    let boundary = match rest.strip_prefix(b"\"") {
        Some(quoted) => quoted.split(|&b| b == b'"').next()?,
        None => rest.split(|&b| b == b';' || b == b' ' || b == b'\t').next()?,
    };
    (!boundary.is_empty() && boundary.len() <= 200).then(|| boundary.to_vec())
}

/// `Content-Type: text` or `Content-Type: text; ...` as `text/plain`.
fn text_without_subtype(line: &[u8]) -> Option<Vec<u8>> {
    let colon = line.iter().position(|&b| b == b':')?;
    if !line[..colon].eq_ignore_ascii_case(b"content-type") {
        return None;
    }
    let value = &line[colon + 1..];
    let start = value.iter().position(|&b| !matches!(b, b' ' | b'\t'))?;
    let token = &value[start..];
    let end = token
        .iter()
        .position(|&b| matches!(b, b';' | b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(token.len());
    if !token[..end].eq_ignore_ascii_case(b"text") {
        return None;
    }
    let split = colon + 1 + start + end;
    let mut mended = line[..split].to_vec();
    mended.extend_from_slice(b"/plain");
    mended.extend_from_slice(&line[split..]);
    Some(mended)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mended(raw: &str) -> (String, Vec<&'static str>) {
        let r = repair(raw.as_bytes()).expect("something to mend");
        (String::from_utf8(r.bytes).expect("utf-8"), r.damage)
    }

    #[test]
    fn well_formed_mail_is_left_alone() {
        let raw = "From: a@b.fr\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
                   Content-Type: text/plain\r\n\r\nhello\r\n--b1--\r\n";
        assert_eq!(repair(raw.as_bytes()), None);
        assert_eq!(repair(b"From: a@b.fr\nSubject: x\n folded\n\nbody\n"), None);
    }

    #[test]
    fn a_missing_blank_line_starts_the_body_at_the_first_non_header() {
        let (text, damage) = mended("From: a@b.fr\r\nBonjour madame, le lampadaire\r\nest en panne\r\n");
        assert_eq!(
            text,
            "From: a@b.fr\r\n\r\nBonjour madame, le lampadaire\r\nest en panne\r\n"
        );
        assert_eq!(damage, vec![NO_BLANK_LINE]);
        let (text, _) = mended("Bonjour,\n\nrien d'autre\n");
        assert_eq!(text, "\nBonjour,\n\nrien d'autre\n");
    }

    #[test]
    fn only_exact_delimiters_are_boundaries() {
        let raw = "Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\n\r\ntext\r\n--b1x no\r\n--b1 \r\n\r\nmore\r\n--b1--\r\n";
        let (text, damage) = mended(raw);
        assert!(text.contains("\r\n--\u{1a}b1x no\r\n"), "{text:?}");
        assert!(
            text.contains("\r\n--b1 \r\n"),
            "a delimiter with trailing blanks is one"
        );
        assert_eq!(damage, vec![BOUNDARY_LOOKALIKE]);
    }

    #[test]
    fn a_boundary_inside_a_line_is_marked_too() {
        let raw = "Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\n\r\nvoir --b1 et --b1--\r\n--b1--\r\n";
        let (text, _) = mended(raw);
        assert!(text.contains("voir --\u{1a}b1 et --\u{1a}b1--\r\n--b1--"), "{text:?}");
    }

    #[test]
    fn a_nested_boundary_that_extends_another_is_not_a_lookalike() {
        let raw = "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
                   Content-Type: multipart/alternative;\r\n boundary=\"b1_inner\"\r\n\r\n--b1_inner\r\n\r\nx\r\n--b1_inner--\r\n--b1--\r\n";
        assert_eq!(repair(raw.as_bytes()), None);
    }

    #[test]
    fn text_without_subtype_is_text_plain() {
        let (text, damage) = mended("From: a@b.fr\r\nContent-Type: text; charset=utf-8\r\n\r\nx\r\n");
        assert!(text.contains("Content-Type: text/plain; charset=utf-8\r\n"), "{text}");
        assert_eq!(damage, vec![NO_SUBTYPE]);
        assert_eq!(repair(b"Content-Type: texts/plain\r\n\r\nx"), None);
    }
}
