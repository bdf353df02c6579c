//! Case and accent folding: the one normalization applied to keywords,
//! to the text they are searched in, and to form-field values.
//!
//! `Déchets  ménagers` and `dechets menagers` fold to the same string:
//! lower case, diacritics removed (precomposed Latin letters and combining
//! marks alike), ligatures spelled out (`œ` → `oe`), typographic
//! apostrophes made plain, hyphens and every run of white space (including
//! non-breaking spaces) turned into one space.

/// Folds `text` for matching. Idempotent: `fold(&fold(s)) == fold(s)`.
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    fold_into(text, &mut out);
    out
}

/// Appends the folded form of `text` to `out` (no allocation per call).
pub fn fold_into(text: &str, out: &mut String) {
    // Start as if a space had just been written, so leading blanks vanish.
    let mut last_space = true;
    for c in text.chars() {
        if c.is_whitespace() || c == '-' || c == '\u{2010}' || c == '\u{2011}' {
            if !last_space {
                out.push(' ');
                last_space = true;
            }
            continue;
        }
        if ('\u{0300}'..='\u{036f}').contains(&c) {
            // Combining diacritical mark (decomposed input).
            continue;
        }
        last_space = false;
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
            continue;
        }
        for lower in c.to_lowercase() {
            match strip(lower) {
                Some(s) => out.push_str(s),
                None => out.push(lower),
            }
        }
    }
    if out.ends_with(' ') {
        out.pop();
    }
}

/// The base letters of a lower-case Latin letter with a diacritic.
fn strip(c: char) -> Option<&'static str> {
    Some(match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'æ' => "ae",
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => "c",
        'ď' | 'đ' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => "e",
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => "g",
        'ĥ' | 'ħ' => "h",
        'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => "i",
        'ĵ' => "j",
        'ķ' => "k",
        'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' => "l",
        'ñ' | 'ń' | 'ņ' | 'ň' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ŏ' | 'ő' => "o",
        'œ' => "oe",
        'ŕ' | 'ŗ' | 'ř' => "r",
        'ś' | 'ŝ' | 'ş' | 'š' => "s",
        'ß' => "ss",
        'ţ' | 'ť' | 'ŧ' => "t",
        'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => "u",
        'ŵ' => "w",
        'ý' | 'ÿ' | 'ŷ' => "y",
        'ź' | 'ż' | 'ž' => "z",
        '\u{2019}' | '\u{2018}' | '\u{02bc}' => "'",
        _ => return None,
    })
}

/// Whether a byte offset of folded text sits on a word boundary on the
/// given side: the neighbouring character is not a letter or digit.
pub(crate) fn boundary_before(text: &str, at: usize) -> bool {
    text[..at].chars().next_back().is_none_or(|c| !c.is_alphanumeric())
}

pub(crate) fn boundary_after(text: &str, at: usize) -> bool {
    text[at..].chars().next().is_none_or(|c| !c.is_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accents_case_ligatures_and_spaces_fold_away() {
        assert_eq!(fold("Déchets"), "dechets");
        assert_eq!(fold("  ORDURES\u{a0}Ménagères\t\n"), "ordures menageres");
        assert_eq!(fold("Œuvre, cœur, Ærø"), "oeuvre, coeur, aero");
        assert_eq!(fold("État-Civil"), "etat civil");
        assert_eq!(fold("l’école"), "l'ecole");
        assert_eq!(fold("Stra\u{df}e"), "strasse");
        // Decomposed: e + combining acute accent.
        assert_eq!(fold("de\u{301}chets"), "dechets");
        assert_eq!(fold("ÇA GÈLE À NOËL"), "ca gele a noel");
    }

    #[test]
    fn folding_is_idempotent() {
        for s in ["Déchets  Ménagers", "É-é", "", "   ", "Ÿ œ"] {
            assert_eq!(fold(&fold(s)), fold(s), "{s:?}");
        }
        assert_eq!(fold("   "), "");
    }

    #[test]
    fn word_boundaries() {
        let t = "la rue, l'ecole";
        assert!(boundary_before(t, 3) && boundary_after(t, 6));
        assert!(!boundary_before(t, 4));
        assert!(boundary_before(t, 10)); // after the apostrophe
        assert!(boundary_after(t, t.len()));
    }
}
