//! What is wrong with a rules file, where, and what was expected.

use std::{fmt, ops::Range};

/// One problem in a rules file. `line` and `column` are 1-based; the
/// column counts characters, as an editor does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// What would have been accepted there, when that can be said.
    pub expected: Option<String>,
}

/// Every problem found in a rules file (never just the first), sorted by
/// position. Displayed as one `origin:line:col: message` line each, the
/// form editors and CI logs link to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct RulesError {
    /// The file name (or KV key and revision) the text came from.
    pub origin: String,
    pub errors: Vec<Diagnostic>,
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}", self.origin, d.line, d.column, d.message)?;
            if let Some(expected) = &d.expected {
                write!(f, " (expected {expected})")?;
            }
        }
        Ok(())
    }
}

/// Collects problems as byte ranges and turns them into positions.
pub(crate) struct Diagnostics<'t> {
    text: &'t str,
    line_starts: Vec<usize>,
    found: Vec<(usize, Diagnostic)>,
}

impl<'t> Diagnostics<'t> {
    pub(crate) fn new(text: &'t str) -> Self {
        let line_starts = std::iter::once(0).chain(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        Diagnostics {
            text,
            line_starts: line_starts.collect(),
            found: Vec::new(),
        }
    }

    /// `(line, column)` of a byte offset, both 1-based.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        (line, column)
    }

    pub(crate) fn line_of(&self, span: &Range<usize>) -> usize {
        self.position(span.start).0
    }

    pub(crate) fn error(&mut self, span: &Range<usize>, message: impl Into<String>, expected: Option<&str>) {
        let (line, column) = self.position(span.start);
        let diagnostic = Diagnostic {
            line,
            column,
            message: message.into(),
            expected: expected.map(str::to_owned),
        };
        self.found.push((span.start, diagnostic));
    }

    pub(crate) fn len(&self) -> usize {
        self.found.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    pub(crate) fn into_error(mut self, origin: &str) -> RulesError {
        self.found.sort_by_key(|(at, _)| *at);
        self.found.dedup_by(|a, b| a.1 == b.1);
        RulesError {
            origin: origin.to_owned(),
            errors: self.found.into_iter().map(|(_, d)| d).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let d = Diagnostics::new("ab\néé x\n\nz");
        assert_eq!(d.position(0), (1, 1));
        assert_eq!(d.position(1), (1, 2));
        assert_eq!(d.position(3), (2, 1));
        // "éé " is 5 bytes but 3 characters.
        assert_eq!(d.position(8), (2, 4));
        assert_eq!(d.position(10), (3, 1));
        assert_eq!(d.position(11), (4, 1));
        assert_eq!(d.position(999), (4, 2));
    }

    #[test]
    fn display_is_one_line_per_error() {
        let mut d = Diagnostics::new("a\nb\n");
        d.error(&(2..3), "second", None);
        d.error(&(0..1), "first", Some("a thing"));
        let e = d.into_error("rules.toml");
        assert_eq!(
            e.to_string(),
            "rules.toml:1:1: first (expected a thing)\nrules.toml:2:1: second"
        );
    }
}
