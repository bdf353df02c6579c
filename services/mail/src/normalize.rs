//! From raw RFC 5322 bytes to the fields of a contact, whatever the
//! charset, transfer encoding or damage.
//!
//! Parsing is done by mail-parser, with the message size capped and each
//! parse run under [`std::panic::catch_unwind`] (mail-parser has had
//! panics on crafted input): whatever happens, a [`Normalized`] comes out,
//! flagged with what went wrong, and the caller keeps the raw original.

use std::panic::{AssertUnwindSafe, catch_unwind};

use chrono::{DateTime, Utc};
use guichet_core::proto::v1::FlagKind;
use mail_parser::{HeaderName, Message, MessageParser, MimeHeaders, PartType};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{noise, quote, repair};

/// Limits of one normalization.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Larger messages are not parsed beyond their headers.
    pub max_message_size: usize,
    /// The body text is cut beyond this many characters (the contact must
    /// fit in a stream message; the raw original keeps everything).
    pub max_body_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 25 * 1024 * 1024,
            max_body_chars: 200_000,
        }
    }
}

/// RFC 5322's line limit: longer header values are absurd.
const MAX_HEADER_CHARS: usize = 998;
const MAX_RECIPIENTS: usize = 200;
const MAX_REFERENCES: usize = 100;

/// A file found in the message.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Attachment {
    pub file_name: String,
    pub media_type: String,
    pub size: usize,
    pub sha256: String,
    #[serde(skip)]
    pub data: Vec<u8>,
}

/// Something noticed about the message (see `FlagKind` in contact.proto).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    pub kind: FlagKind,
    pub reason: String,
}

impl Serialize for Flag {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}: {}", self.kind.as_str_name(), self.reason))
    }
}

/// The normalized fields of one e-mail.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Normalized {
    pub from_name: String,
    pub from_address: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    /// The new text, plain UTF-8.
    pub body: String,
    /// The quoted history, apart.
    pub quoted_text: String,
    pub message_id: String,
    pub in_reply_to: String,
    pub references: Vec<String>,
    pub auto_submitted: String,
    pub language: String,
    #[serde(serialize_with = "rfc3339")]
    pub sent_at: Option<DateTime<Utc>>,
    pub attachments: Vec<Attachment>,
    pub flags: Vec<Flag>,
}

fn rfc3339<S: serde::Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => s.serialize_str(&at.to_rfc3339()),
        None => s.serialize_none(),
    }
}

/// Mailers that send 8-bit text without declaring a charset nearly
/// always mean Windows-1252 (a superset of ISO-8859-1): when the text came
/// out with replacement characters, the message is read again as such and
/// its text fields taken from that reading (attachments keep their bytes).
fn redecode_undeclared(raw: &[u8], limits: &Limits, out: &mut Normalized) {
    let (text, _, _) = encoding_rs::WINDOWS_1252.decode(raw);
    let transcoded = text.into_owned().into_bytes();
    let again = catch_unwind(AssertUnwindSafe(|| {
        MessageParser::default()
            .parse(&transcoded)
            .map(|m| from_message(&m, limits, false))
    }));
    if let Ok(Some(again)) = again
        && !again.has_undecodable_text()
    {
        out.from_name = again.from_name;
        out.subject = again.subject;
        out.body = again.body;
        out.quoted_text = again.quoted_text;
        out.to = again.to;
        out.cc = again.cc;
    }
}

impl Normalized {
    fn has_undecodable_text(&self) -> bool {
        [&self.from_name, &self.subject, &self.body, &self.quoted_text]
            .iter()
            .any(|t| t.contains('\u{FFFD}'))
            || self.to.iter().chain(&self.cc).any(|t| t.contains('\u{FFFD}'))
    }

    fn flag(&mut self, kind: FlagKind, reason: impl Into<String>) {
        let reason = reason.into();
        if !self.flags.iter().any(|f| f.kind == kind && f.reason == reason) {
            self.flags.push(Flag { kind, reason });
        }
    }

    pub fn has_flag(&self, kind: FlagKind) -> bool {
        self.flags.iter().any(|f| f.kind == kind)
    }
}

/// Normalizes `raw`. Never panics, never fails: damage becomes flags.
pub fn normalize(raw: &[u8], limits: &Limits) -> Normalized {
    normalize_fetched(raw, None, limits)
}

/// Normalizes what was fetched of a message the server declared to be
/// `declared_size` bytes: when that is more than `raw` (the watcher
/// fetched only the first `max_message_size` bytes of an oversized
/// message), the headers and the text as far as it goes, flagged
/// truncated.
pub fn normalize_fetched(raw: &[u8], declared_size: Option<u64>, limits: &Limits) -> Normalized {
    let declared = declared_size.and_then(|d| usize::try_from(d).ok());
    if let Some(declared) = declared.filter(|d| *d > raw.len()) {
        return normalize_prefix(raw, declared, limits);
    }
    let oversize = raw.len() > limits.max_message_size;
    let repaired = (!oversize).then(|| repair::repair(raw)).flatten();
    let raw = repaired.as_ref().map_or(raw, |r| r.bytes.as_slice());
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        let parser = MessageParser::default();
        let message = if oversize {
            parser.parse_headers(raw)
        } else {
            parser.parse(raw)
        };
        message.map(|m| from_message(&m, limits, oversize))
    }));
    let mut out = match parsed {
        Ok(Some(n)) => n,
        Ok(None) => unreadable(raw, limits, "no header could be read; the raw message is kept"),
        Err(_) => unreadable(
            raw,
            limits,
            "the parser failed on this message; the raw message is kept",
        ),
    };
    if let Some(repaired) = &repaired {
        out.flag(
            FlagKind::DamagedStructure,
            format!(
                "{}: text recovered, the raw message is kept",
                repaired.damage.join("; ")
            ),
        );
    }
    // A declared charset is honoured even with invalid bytes (flagged
    // MALFORMED_TEXT in `from_message`): re-reading the whole message as
    // Windows-1252 for one stray byte would garble every accent in it.
    if !oversize
        && !out.has_flag(FlagKind::MalformedText)
        && out.has_undecodable_text()
        && std::str::from_utf8(raw).is_err()
    {
        redecode_undeclared(raw, limits, &mut out);
    }
    if oversize {
        out.flag(
            FlagKind::Truncated,
            format!(
                "message of {} bytes is over the {} bytes limit: headers only, the raw message is kept",
                raw.len(),
                limits.max_message_size
            ),
        );
    } else if out.body.is_empty() {
        out.flag(FlagKind::EmptyBody, "no readable text body");
    }
    out
}

/// A message's first bytes: parsed as a whole (mail-parser reads a cut
/// MIME structure as far as it goes), flagged truncated with both sizes.
fn normalize_prefix(raw: &[u8], declared: usize, limits: &Limits) -> Normalized {
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        MessageParser::default()
            .parse(raw)
            .map(|m| from_message(&m, limits, false))
    }));
    let mut out = match parsed {
        Ok(Some(n)) => n,
        Ok(None) => unreadable(raw, limits, "no header could be read; the raw message's start is kept"),
        Err(_) => unreadable(
            raw,
            limits,
            "the parser failed on this message; the raw message's start is kept",
        ),
    };
    out.flag(
        FlagKind::Truncated,
        format!(
            "message of {declared} bytes is over the {} bytes limit: only its first {} bytes were fetched and kept",
            limits.max_message_size,
            raw.len()
        ),
    );
    out
}

/// What can be said of bytes mail-parser could not read at all: their
/// text, as well as it can be decoded, as the body.
fn unreadable(raw: &[u8], limits: &Limits, reason: &str) -> Normalized {
    let mut out = Normalized::default();
    out.flag(FlagKind::ParseError, reason);
    let text = String::from_utf8_lossy(&raw[..raw.len().min(limits.max_body_chars)]);
    out.body = clean_text(&text);
    out
}

fn from_message(m: &Message<'_>, limits: &Limits, headers_only: bool) -> Normalized {
    let mut out = Normalized::default();

    if let Some(addr) = m.from().and_then(|a| a.first()) {
        out.from_name = header_text(&mut out, "From", addr.name().unwrap_or_default());
        out.from_address = header_text(&mut out, "From", addr.address().unwrap_or_default());
    }
    if out.from_address.is_empty() || !out.from_address.contains('@') {
        out.flag(FlagKind::MalformedHeader, "no usable sender address (From)");
        out.from_address.clear();
    }
    out.to = recipients(&mut out, "To", m, HeaderName::To);
    out.cc = recipients(&mut out, "Cc", m, HeaderName::Cc);
    out.subject = header_text(&mut out, "Subject", m.subject().unwrap_or_default());
    out.message_id = message_id(&mut out, "Message-ID", m.message_id().unwrap_or_default());
    out.in_reply_to = m
        .in_reply_to()
        .as_text_list()
        .and_then(|l| l.first().map(|s| s.to_string()))
        .or_else(|| m.in_reply_to().as_text().map(str::to_owned))
        .map(|id| message_id(&mut out, "In-Reply-To", &id))
        .unwrap_or_default();
    let references: Vec<String> = match m.references().as_text_list() {
        Some(list) => list.iter().map(|s| s.to_string()).collect(),
        None => m.references().as_text().map(|s| vec![s.to_owned()]).unwrap_or_default(),
    };
    if references.len() > MAX_REFERENCES {
        out.flag(
            FlagKind::MalformedHeader,
            format!("References over {MAX_REFERENCES} ids: cut"),
        );
    }
    // Keep the most recent ones: they are the ones follow-ups match.
    let skip = references.len().saturating_sub(MAX_REFERENCES);
    out.references = references
        .into_iter()
        .skip(skip)
        .map(|r| message_id(&mut out, "References", &r))
        .filter(|r| !r.is_empty())
        .collect();
    out.sent_at = m
        .date()
        .filter(|d| d.is_valid())
        .and_then(|d| DateTime::from_timestamp(d.to_timestamp(), 0));
    out.language = raw_header(m, "content-language")
        .and_then(|l| l.split([',', ';', '-']).next().map(|t| t.trim().to_ascii_lowercase()))
        .filter(|t| (2..=8).contains(&t.len()) && t.chars().all(|c| c.is_ascii_alphabetic()))
        .unwrap_or_default();
    out.auto_submitted = raw_header(m, "auto-submitted")
        .map(|v| v.trim().chars().take(100).collect())
        .unwrap_or_default();

    for noise in noise::detect(m) {
        out.flag(noise.kind, noise.reason);
    }

    if !headers_only {
        let mut texts = Vec::new();
        for i in 0..m.text_body.len() {
            if let Some(text) = m.body_text(i) {
                if text.contains('\u{FFFD}')
                    && let Some(charset) = declared_charset(m, i)
                {
                    out.flag(
                        FlagKind::MalformedText,
                        format!(
                            "text with bytes invalid in its declared charset {charset}: each shown as U+FFFD, \
                             the raw message is kept"
                        ),
                    );
                }
                let text = clean_text(&text);
                if !text.trim().is_empty() {
                    texts.push(text);
                }
            }
        }
        let mut text = texts.join("\n\n");
        if text.chars().count() > limits.max_body_chars {
            text = text.chars().take(limits.max_body_chars).collect();
            out.flag(
                FlagKind::Truncated,
                format!(
                    "text over {} characters: cut, the raw message is kept",
                    limits.max_body_chars
                ),
            );
        }
        let (body, quoted) = quote::split_reply(&text);
        out.body = body.trim().to_owned();
        out.quoted_text = quoted;
        if m.parts.iter().any(|p| p.is_encoding_problem) {
            out.flag(
                FlagKind::ParseError,
                "a part could not be decoded; the raw message is kept",
            );
        }
        out.attachments = m
            .attachments()
            .filter_map(|part| {
                let data = part.contents();
                if data.is_empty() {
                    return None;
                }
                let media_type = part
                    .content_type()
                    .map(|ct| match ct.subtype() {
                        Some(sub) => format!("{}/{}", ct.ctype(), sub),
                        None => ct.ctype().to_owned(),
                    })
                    .unwrap_or_else(|| match part.body {
                        PartType::Message(_) => "message/rfc822".to_owned(),
                        _ => "application/octet-stream".to_owned(),
                    })
                    .to_ascii_lowercase();
                let file_name = part
                    .attachment_name()
                    .map(str::to_owned)
                    .unwrap_or_else(|| default_name(&media_type));
                Some(Attachment {
                    file_name: file_name.trim().to_owned(),
                    media_type,
                    size: data.len(),
                    sha256: hex::encode(Sha256::digest(data)),
                    data: data.to_vec(),
                })
            })
            .collect();
    }
    out
}

/// The charset the `i`-th text part declares, unless it is US-ASCII:
/// 8-bit text labelled US-ASCII is a mailer's default label, not a
/// declaration, and is better read as Windows-1252.
fn declared_charset(m: &Message<'_>, i: usize) -> Option<String> {
    let part = m.parts.get(*m.text_body.get(i)? as usize)?;
    let charset = part.content_type()?.attribute("charset")?.trim().to_ascii_lowercase();
    let undeclared = charset.is_empty() || matches!(charset.as_str(), "us-ascii" | "ascii" | "us_ascii");
    (!undeclared).then(|| charset.chars().filter(|c| !c.is_control()).take(40).collect())
}

fn default_name(media_type: &str) -> String {
    match media_type {
        "message/rfc822" => "message.eml".into(),
        "message/delivery-status" => "delivery-status.txt".into(),
        "text/plain" => "text.txt".into(),
        "text/html" => "text.html".into(),
        _ => "attachment".into(),
    }
}

fn raw_header<'a>(m: &'a Message<'_>, name: &str) -> Option<&'a str> {
    m.headers_raw()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// One-line header text, absurd lengths cut and flagged.
fn header_text(out: &mut Normalized, name: &str, value: &str) -> String {
    let one_line: String = value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if one_line.chars().count() > MAX_HEADER_CHARS {
        out.flag(
            FlagKind::MalformedHeader,
            format!("{name} over {MAX_HEADER_CHARS} characters: cut"),
        );
        return one_line.chars().take(MAX_HEADER_CHARS).collect();
    }
    one_line
}

/// A message id without angle brackets; absurd ones dropped and flagged.
fn message_id(out: &mut Normalized, name: &str, value: &str) -> String {
    let id = value.trim().trim_start_matches('<').trim_end_matches('>').trim();
    if id.len() > MAX_HEADER_CHARS || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        out.flag(FlagKind::MalformedHeader, format!("{name} unusable: dropped"));
        return String::new();
    }
    id.to_owned()
}

/// The addresses of every `name` header (a message may carry two `To:`:
/// each is kept, in order).
fn recipients(out: &mut Normalized, name: &str, m: &Message<'_>, header: HeaderName<'_>) -> Vec<String> {
    let all: Vec<String> = m
        .header_values(header)
        .filter_map(|v| v.as_address())
        .flat_map(|address| address.iter())
        .filter_map(|a| {
            let addr = a.address().map(str::trim).filter(|s| !s.is_empty());
            let display = a.name().map(str::trim).filter(|s| !s.is_empty());
            match (display, addr) {
                (Some(n), Some(a)) if n.trim_matches(['"', '\'']).eq_ignore_ascii_case(a) => Some(a.to_owned()),
                (Some(n), Some(a)) => Some(format!("{n} <{a}>")),
                (None, Some(a)) => Some(a.to_owned()),
                (Some(n), None) => Some(n.to_owned()),
                (None, None) => None,
            }
        })
        .collect();
    if all.len() > MAX_RECIPIENTS {
        out.flag(
            FlagKind::MalformedHeader,
            format!("{name} over {MAX_RECIPIENTS} recipients: cut"),
        );
    }
    all.into_iter()
        .take(MAX_RECIPIENTS)
        .map(|r| header_text(out, name, &r))
        .collect()
}

/// LF line ends, no control characters but tabs, no trailing blanks.
fn clean_text(text: &str) -> String {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::with_capacity(text.len());
    for line in text.split('\n') {
        let line: String = line
            .chars()
            .filter(|c| !c.is_control() || *c == '\t')
            .map(|c| if c == '\u{a0}' { ' ' } else { c })
            .collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    // Runs of blank lines (HTML conversion leaves many) become one.
    let mut collapsed = String::with_capacity(out.len());
    let mut blank = 0;
    for line in out.lines() {
        if line.trim().is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        collapsed.push_str(line);
        collapsed.push('\n');
    }
    collapsed.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_oversize_still_normalize_with_flags() {
        let limits = Limits {
            max_message_size: 2048,
            max_body_chars: 1000,
        };
        let n = normalize(b"", &limits);
        assert!(
            n.has_flag(FlagKind::ParseError) || n.has_flag(FlagKind::EmptyBody),
            "{n:?}"
        );
        let mut big = b"From: a@b.fr\r\nSubject: gros\r\n\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'x', 5000));
        let n = normalize(&big, &limits);
        assert!(n.has_flag(FlagKind::Truncated), "{n:?}");
        assert_eq!((n.subject.as_str(), n.body.as_str()), ("gros", ""));
        let mut long = b"From: a@b.fr\r\nSubject: long\r\n\r\n".to_vec();
        long.extend(std::iter::repeat_n(b'y', 1500));
        let n = normalize(&long, &limits);
        assert!(n.has_flag(FlagKind::Truncated) && n.body.len() == 1000, "{:?}", n.flags);
    }

    #[test]
    fn text_is_cleaned() {
        assert_eq!(clean_text("a \r\n\r\n\r\n\r\nb\u{0}\u{a0}c\t"), "a\n\nb c");
    }
}
