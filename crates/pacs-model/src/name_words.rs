//! Person-name search by words, for people typing in a search box: "elodie" finds
//! `DURAND^ELODIE`, "dur elo" finds it too, "gall" finds `LE GALL^YANN`.
//!
//! The rule: the search text is split into words at spaces; each word, folded like every
//! person name (case, accents), must match the start of a component of the name (family,
//! given, middle, prefix, suffix, in any representation group) or of a word inside one (after
//! a space or a hyphen), with `*` and `?` still wildcards inside a word. A search that spells
//! the name's structure with `^` or `=` is taken as a DICOM value and matched whole.
//!
//! This is what QIDO-RS calls fuzzy matching (PS3.18 8.3.4.1, `fuzzymatching=true`), which
//! leaves the rule to the server; C-FIND never uses it (PS3.4 C.2.2.2.4: the whole value).

use crate::matching::{fold_person_name, trim_value, wildcard_matches, Matcher, ValueKind};

/// Where a word of a name may start, after one of these.
fn is_boundary(c: char) -> bool {
    matches!(c, '^' | '=' | ' ' | '-')
}

impl Matcher {
    /// The matcher of a person-name search typed by a person (see the module's rule).
    pub fn name_words(raw: &str) -> Matcher {
        let value = trim_value(raw);
        if value.contains(['^', '=']) {
            return Matcher::parse(ValueKind::PersonName, value);
        }
        let words: Vec<String> = value
            .split_whitespace()
            .map(fold_person_name)
            .filter(|w| !w.is_empty() && !w.chars().all(|c| c == '*'))
            .collect();
        if words.is_empty() {
            Matcher::Universal
        } else {
            Matcher::NameWords(words)
        }
    }

    /// This matcher with whole-value person-name matching turned into matching by words;
    /// every other matcher unchanged. Patterns from [`Matcher::parse`] are already folded,
    /// and folding again changes nothing.
    pub fn into_name_words(self) -> Matcher {
        match self {
            Matcher::Single(v) | Matcher::Wildcard(v) => Matcher::name_words(&v),
            other => other,
        }
    }
}

/// Whether every word matches the start of a word of `folded_name` (already folded).
pub(crate) fn matches(words: &[String], folded_name: &str) -> bool {
    let starts: Vec<&str> = std::iter::once(folded_name)
        .chain(
            folded_name
                .char_indices()
                .filter(|&(_, c)| is_boundary(c))
                .map(|(i, c)| &folded_name[i + c.len_utf8()..]),
        )
        .collect();
    words.iter().all(|word| {
        let pattern = format!("{word}*");
        starts.iter().any(|rest| wildcard_matches(&pattern, rest))
    })
}

/// The literal text each word begins with (before any wildcard), for an index to narrow on:
/// a name matching the words contains every one of these.
pub fn literal_prefixes(words: &[String]) -> impl Iterator<Item = &str> {
    words
        .iter()
        .map(|w| &w[..w.find(['*', '?']).unwrap_or(w.len())])
        .filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finds(search: &str, name: &str) -> bool {
        Matcher::name_words(search).matches(ValueKind::PersonName, Some(name))
    }

    #[test]
    fn a_given_name_finds_the_patient() {
        assert!(finds("elodie", "DURAND^ELODIE"));
        assert!(finds("Élodie", "DURAND^ELODIE"));
        assert!(finds("elo", "Durand^Élodie"));
        assert!(finds("durand", "DURAND^ELODIE"));
        assert!(finds("dur elo", "DURAND^ELODIE"));
        assert!(finds("elo dur", "DURAND^ELODIE"));
    }

    #[test]
    fn words_match_from_their_start_only() {
        assert!(!finds("lodie", "DURAND^ELODIE"));
        assert!(!finds("rand", "DURAND^ELODIE"));
        // Every word must match.
        assert!(!finds("durand paul", "DURAND^ELODIE"));
    }

    #[test]
    fn words_inside_components_and_other_groups_count() {
        assert!(finds("gall", "LE GALL^YANN"));
        assert!(finds("pierre", "MARTIN^JEAN-PIERRE"));
        assert!(finds("jean-p", "MARTIN^JEAN-PIERRE"));
        assert!(finds("yamada", "Yamada^Tarou=山田^太郎"));
        assert!(finds("太郎", "Yamada^Tarou=山田^太郎"));
        assert!(finds("dr", "DURAND^ELODIE^^DR"));
    }

    #[test]
    fn wildcards_still_work_inside_a_word() {
        assert!(finds("*lodie", "DURAND^ELODIE"));
        assert!(finds("el?die", "DURAND^ELODIE"));
        assert!(finds("d*d", "DURAND^ELODIE"));
        assert!(!finds("x*", "DURAND^ELODIE"));
    }

    #[test]
    fn a_structured_value_is_matched_whole() {
        assert_eq!(
            Matcher::name_words("DURAND^EL*"),
            Matcher::parse(ValueKind::PersonName, "DURAND^EL*")
        );
        assert!(finds("DURAND^EL*", "DURAND^ELODIE"));
        assert!(!finds("ELODIE^DURAND", "DURAND^ELODIE"));
    }

    #[test]
    fn empty_searches_match_everything() {
        assert_eq!(Matcher::name_words("  "), Matcher::Universal);
        assert_eq!(Matcher::name_words("* *"), Matcher::Universal);
        assert!(Matcher::name_words("elodie").matches(ValueKind::PersonName, Some("A\\DURAND^ELODIE")));
        assert!(!Matcher::name_words("elodie").matches(ValueKind::PersonName, None));
    }

    #[test]
    fn whole_value_matchers_become_word_matchers() {
        let parsed = Matcher::parse(ValueKind::PersonName, "Élodie");
        assert_eq!(
            parsed.into_name_words(),
            Matcher::NameWords(vec!["elodie".into()])
        );
        let range = Matcher::parse(ValueKind::Date, "20240101-20240131");
        assert_eq!(range.clone().into_name_words(), range);
    }

    #[test]
    fn prefixes_are_the_literal_start_of_each_word() {
        let words = vec!["dur".to_string(), "*lodie".to_string(), "el?d".to_string()];
        assert_eq!(literal_prefixes(&words).collect::<Vec<_>>(), ["dur", "el"]);
    }
}
