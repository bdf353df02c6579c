//! Keeping the quoted history of a reply apart from its new text.
//!
//! Recognised (the forms French town-hall mailboxes actually receive):
//! attribution lines ("Le lun. 3 mars 2025 à 10:12, X a écrit :", possibly
//! wrapped over two lines; "On …, X wrote:"), Outlook's separators
//! ("-----Message d'origine-----", "-----Original Message-----", a line of
//! underscores) and header blocks ("De : … / Envoyé : …", "From: … / Sent: …"),
//! and a trailing block of `>` lines. Quoting above the new text, or
//! interleaved answers, are left whole in the body: cutting them would lose
//! what the usager wrote.

use std::sync::LazyLock;

use regex::Regex;

static ATTRIBUTION: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"(?i)^\s*le\s.{0,300}?\s(a|avez)\s+[ée]crit\s*:\s*$",
        r"(?i)^\s*on\s.{0,300}?\swrote\s*:\s*$",
        r"(?i)^\s*am\s.{0,300}?\sschrieb\s.{0,200}:\s*$",
        r"(?i)^\s*-{2,}\s*(message d['’]origine|original message|message original|mensaje original|ursprüngliche nachricht)\s*-{2,}\s*$",
        r"(?i)^\s*-{2,}\s*(message transf[ée]r[ée]|forwarded message)\s*-{2,}\s*$",
    ]
    .iter()
    .filter_map(|p| Regex::new(p).ok())
    .collect()
});

static OUTLOOK_FROM: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"(?i)^\s*\*?(de|from)\s*:\*?\s*\S").ok());
static OUTLOOK_SENT: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?i)^\s*\*?(envoy[ée]|sent|date|[àa]|to|objet|subject)\s*:\*?\s*\S").ok());
static UNDERSCORES: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"^\s*_{10,}\s*$").ok());

fn is_attribution(line: &str) -> bool {
    ATTRIBUTION.iter().any(|r| r.is_match(line))
}

fn matches(re: &LazyLock<Option<Regex>>, line: &str) -> bool {
    re.as_ref().is_some_and(|r| r.is_match(line))
}

/// Where the quoted history starts, if it can be recognised.
///
/// Linear in the number of lines: a crafted body of thousands of `>`
/// lines must not cost their square (each line asking "is everything
/// after me quoted?" again).
fn quote_start(lines: &[&str]) -> Option<usize> {
    // From this index on, every line is blank or quoted.
    let quoted_tail = lines
        .iter()
        .rposition(|l| !(l.trim().is_empty() || l.trim_start().starts_with('>')))
        .map_or(0, |last| last + 1);
    for (i, line) in lines.iter().enumerate() {
        if is_attribution(line) {
            return Some(i);
        }
        // An attribution wrapped by the sender's mailer.
        if let Some(next) = lines.get(i + 1)
            && line.trim_start().len() > 3
            && is_attribution(&format!("{} {}", line.trim_end(), next.trim_start()))
            && !is_attribution(next)
        {
            return Some(i);
        }
        // Outlook: a "De : / Envoyé :" (or "From: / Sent:") block,
        // possibly under a line of underscores.
        if matches(&OUTLOOK_FROM, line)
            && lines[i + 1..]
                .iter()
                .take(4)
                .filter(|l| matches(&OUTLOOK_SENT, l))
                .count()
                >= 2
        {
            let above = i.checked_sub(1).filter(|&j| matches(&UNDERSCORES, lines[j]));
            return Some(above.unwrap_or(i));
        }
        // A block of `>` lines that runs to the end.
        if line.trim_start().starts_with('>') && i >= quoted_tail {
            return Some(i);
        }
    }
    None
}

/// Splits `text` into (new text, quoted history). The history is empty
/// when none is recognised or when nothing would be left above it.
pub fn split_reply(text: &str) -> (String, String) {
    let lines: Vec<&str> = text.lines().collect();
    match quote_start(&lines) {
        Some(at) if lines[..at].iter().any(|l| !l.trim().is_empty()) => (
            lines[..at].join("\n").trim_end().to_owned(),
            lines[at..].join("\n").trim().to_owned(),
        ),
        _ => (text.trim_end().to_owned(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::split_reply;

    #[test]
    fn french_gmail_attribution_even_wrapped() {
        let (body, quoted) = split_reply(
            "Merci, c'est noté.\n\nLe lun. 3 mars 2025 à 10:12, Mairie <contact@ville.fr> a\nécrit :\n> Bonjour,\n> votre demande",
        );
        assert_eq!(body, "Merci, c'est noté.");
        assert!(
            quoted.starts_with("Le lun. 3 mars") && quoted.ends_with("> votre demande"),
            "{quoted}"
        );
    }

    #[test]
    fn outlook_french_header_block_under_underscores() {
        let text = "Voici le document.\n\n________________________________\nDe : Mairie <contact@ville.fr>\nEnvoyé : lundi 3 mars 2025 10:12\nÀ : Jeanne Martin\nObjet : Votre demande\n\nBonjour";
        let (body, quoted) = split_reply(text);
        assert_eq!(body, "Voici le document.");
        assert!(
            quoted.starts_with("____") && quoted.contains("Objet : Votre demande"),
            "{quoted}"
        );
    }

    #[test]
    fn interleaved_or_top_quotes_stay_whole_and_plain_text_is_untouched() {
        let interleaved = "> Quelle adresse ?\n12 rue de la Paix\n> Quel jour ?\nMardi";
        assert_eq!(split_reply(interleaved), (interleaved.to_owned(), String::new()));
        let only_quote = "> tout est cité";
        assert_eq!(split_reply(only_quote).1, "");
        let plain = "Bonjour,\nle trottoir est abîmé.\nDe: mémoire, depuis mars.";
        assert_eq!(split_reply(plain), (plain.to_owned(), String::new()));
    }

    #[test]
    fn a_crafted_body_of_quote_lines_costs_linear_time() {
        // 100,000 `>` lines then one that is not: the old check looked at
        // every later line from each `>` line (5 billion looks).
        let mut text = "> x\n".repeat(100_000);
        text.push_str("fin");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(split_reply(&text));
        });
        // A bound a thousand times what linear work takes here.
        let (body, quoted) = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("split_reply finishes");
        assert!(quoted.is_empty() && body.ends_with("fin"));
        let mut text = "Merci\n".to_owned();
        text.push_str(&"> x\n".repeat(100_000));
        assert_eq!(split_reply(&text).1.lines().count(), 100_000);
    }

    #[test]
    fn english_and_separator_forms() {
        assert_eq!(
            split_reply("Thanks\nOn Mon, 3 Mar 2025 at 10:12, City <c@x.org> wrote:\n> hi").1,
            "On Mon, 3 Mar 2025 at 10:12, City <c@x.org> wrote:\n> hi"
        );
        assert_eq!(split_reply("Ok\n-----Original Message-----\nFrom: a\nSent: b").0, "Ok");
    }
}
