//! The words search works on, made here for both sides: the vector a message is found by
//! (written in the statement that indexes the message) and the query. One tokenizer for
//! both, so a query asks for exactly what a message holds, and Postgres's text parser runs
//! on neither (it was a third of the index's CPU).
//!
//! A word is a run of letters and digits, lowercased; an apostrophe between two letters
//! stays inside it (Ukrainian `м'ясо`, English `don't`), whichever of `'`, `’` or `ʼ` it is
//! typed with: all three are kept as `ʼ`. No stemming (Postgres has no Ukrainian
//! dictionary): query words match as prefixes instead.

use std::{fmt::Write as _, ops::Range};

/// The longest lexeme Postgres takes, in bytes (longer words are not searchable).
const MAX_LEXEME_BYTES: usize = 2047;
/// The largest position a tsvector holds; later words share it.
const MAX_POSITION: usize = 16_383;
/// Positions a tsvector keeps for one lexeme.
const MAX_POSITIONS: usize = 256;
/// Query words used; the rest are ignored.
const MAX_QUERY_WORDS: usize = 16;

/// The shortest word matched as a prefix: shorter ones match whole words only, so that a
/// letter or two cannot make a query rank half the index.
const MIN_PREFIX_CHARS: usize = 3;

fn is_apostrophe(c: char) -> bool {
    matches!(c, '\'' | '\u{2019}' | '\u{2BC}')
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() && !is_apostrophe(c)
}

/// The words of `text` in order: each one's byte range in `text` and its search form
/// (for queries and highlights; documents take them straight from [`for_each_word`]).
fn words(text: &str) -> Vec<(Range<usize>, String)> {
    let mut buffer = String::with_capacity(text.len());
    let mut spans = Vec::new();
    for_each_word(text, &mut buffer, |source, word| {
        spans.push((source, word));
        true
    });
    spans
        .into_iter()
        .map(|(source, word)| (source, buffer[word].to_owned()))
        .collect()
}

/// A tsvector in Postgres's binary form, as `tsvectorrecv` reads it (no text for Postgres
/// to parse): the number of lexemes, then each one null-terminated with its positions,
/// lexemes in Postgres's order (bytewise) and positions rising.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsVector(Vec<u8>);

impl sqlx::Type<sqlx::Postgres> for TsVector {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        sqlx::postgres::PgTypeInfo::with_name("tsvector")
    }
}

impl sqlx::postgres::PgHasArrayType for TsVector {
    fn array_type_info() -> sqlx::postgres::PgTypeInfo {
        sqlx::postgres::PgTypeInfo::with_name("_tsvector")
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for TsVector {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        buf.extend_from_slice(&self.0);
        Ok(sqlx::encode::IsNull::No)
    }
}

/// The tsvector a message is found by: the words of its preview, then of its file's name;
/// `None` without a word. (On the ingest path: the words go into one buffer, not a string
/// each.)
pub fn document(preview: &str, file_name: Option<&str>) -> Option<TsVector> {
    let mut buffer = String::with_capacity(preview.len() + file_name.map_or(0, str::len));
    // Each word: its range in `buffer` and its position.
    let mut found: Vec<(u32, u32, u16)> = Vec::with_capacity(preview.len() / 5 + 1);
    for text in std::iter::once(preview).chain(file_name) {
        for_each_word(text, &mut buffer, |_, word| {
            if word.len() <= MAX_LEXEME_BYTES {
                let position = (found.len() + 1).min(MAX_POSITION);
                let as_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                found.push((as_u32(word.start), as_u32(word.end), position as u16));
                true
            } else {
                false
            }
        });
    }
    if found.is_empty() {
        return None;
    }
    let word = |&(start, end, _): &(u32, u32, u16)| &buffer[start as usize..end as usize];
    // By lexeme, then position.
    found.sort_unstable_by(|a, b| word(a).cmp(word(b)).then(a.2.cmp(&b.2)));
    let mut out = Vec::with_capacity(4 + buffer.len() + found.len() * 5);
    out.extend_from_slice(&[0; 4]);
    let mut lexemes: u32 = 0;
    // Where the current lexeme's count of positions is, and the count.
    let (mut count_at, mut positions, mut last) = (0, 0u16, 0);
    let mut current: Option<&str> = None;
    for entry in &found {
        let (lexeme, position) = (word(entry), entry.2);
        if current == Some(lexeme) {
            // Words past the last position share it: once is enough.
            if usize::from(positions) < MAX_POSITIONS && position != last {
                out.extend_from_slice(&position.to_be_bytes());
                positions += 1;
                out[count_at..count_at + 2].copy_from_slice(&positions.to_be_bytes());
                last = position;
            }
            continue;
        }
        lexemes += 1;
        out.extend_from_slice(lexeme.as_bytes());
        out.push(0);
        count_at = out.len();
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&position.to_be_bytes());
        current = Some(lexeme);
        (positions, last) = (1, position);
    }
    out[..4].copy_from_slice(&lexemes.to_be_bytes());
    Some(TsVector(out))
}

/// The lowercase of a letter of the basic Cyrillic block (U+0400–U+045F: Ukrainian's
/// alphabet but `ґ`, Russian's, and more): what `char::to_lowercase` gives, without its
/// table search. `None` for any other character.
fn basic_cyrillic_lowercase(c: char) -> Option<char> {
    let lower = match u32::from(c) {
        upper @ 0x0400..=0x040F => upper + 0x50,
        upper @ 0x0410..=0x042F => upper + 0x20,
        lower @ 0x0430..=0x045F => lower,
        _ => return None,
    };
    char::from_u32(lower)
}

/// Appends each word of `text` to `buffer` in its search form and calls `found` with the
/// word's range in `text` and its range in `buffer`; a word `found` refuses is taken back
/// out. The one tokenizer: documents, queries and highlights all read words through it.
fn for_each_word(
    text: &str,
    buffer: &mut String,
    mut found: impl FnMut(Range<usize>, Range<usize>) -> bool,
) {
    // Where the current word starts: in `text`, and in `buffer`.
    let mut start: Option<(usize, usize)> = None;
    let mut previous_is_word = false;
    let mut chars = text.char_indices().peekable();
    let mut end_word = |buffer: &mut String, start: &mut Option<(usize, usize)>, end: usize| {
        if let Some((source, from)) = start.take()
            && !found(source..end, from..buffer.len())
        {
            buffer.truncate(from);
        }
    };
    while let Some((at, c)) = chars.next() {
        let lower = if c.is_ascii_alphanumeric() {
            Some(c.to_ascii_lowercase())
        } else if c.is_ascii() {
            None
        } else {
            basic_cyrillic_lowercase(c)
        };
        if let Some(lower) = lower {
            start.get_or_insert((at, buffer.len()));
            buffer.push(lower);
            previous_is_word = true;
        } else if is_word_char(c) {
            start.get_or_insert((at, buffer.len()));
            buffer.extend(c.to_lowercase());
            previous_is_word = true;
        } else if is_apostrophe(c)
            && previous_is_word
            && chars.peek().is_some_and(|&(_, n)| is_word_char(n))
        {
            buffer.push('\u{2BC}');
            previous_is_word = false;
        } else {
            end_word(buffer, &mut start, at);
            previous_is_word = false;
        }
    }
    end_word(buffer, &mut start, text.len());
}

/// A search query: its words, the longer ones as prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    terms: Vec<(String, bool)>,
}

impl Query {
    /// The words of `query` of two letters or more (at most 16); `None` without one.
    pub fn parse(query: &str) -> Option<Self> {
        let terms: Vec<(String, bool)> = words(query)
            .into_iter()
            .map(|(_, word)| word)
            .filter(|w| w.chars().nth(1).is_some() && w.len() <= MAX_LEXEME_BYTES)
            .take(MAX_QUERY_WORDS)
            .map(|w| {
                let prefix = w.chars().count() >= MIN_PREFIX_CHARS;
                (w, prefix)
            })
            .collect();
        (!terms.is_empty()).then_some(Self { terms })
    }

    /// The tsquery, in Postgres's text form: every word, `word:*` for a prefix.
    pub fn tsquery(&self) -> String {
        let mut out = String::new();
        for (i, (word, prefix)) in self.terms.iter().enumerate() {
            if i > 0 {
                out.push_str(" & ");
            }
            let _ = write!(out, "'{word}'{}", if *prefix { ":*" } else { "" });
        }
        out
    }

    fn matches(&self, word: &str) -> bool {
        self.terms.iter().any(|(term, prefix)| {
            if *prefix {
                word.starts_with(term.as_str())
            } else {
                word == term
            }
        })
    }

    /// `text` as HTML, the words the query matches in `<b>`: everything else is escaped,
    /// so text cannot forge a highlight.
    pub fn highlight(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 16);
        let mut done = 0;
        for (range, word) in words(text) {
            if self.matches(&word) {
                escape_into(&mut out, &text[done..range.start]);
                out.push_str("<b>");
                escape_into(&mut out, &text[range.clone()]);
                out.push_str("</b>");
                done = range.end;
            }
        }
        escape_into(&mut out, &text[done..]);
        out
    }
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<String> {
        words(text).into_iter().map(|(_, w)| w).collect()
    }

    /// The text form Postgres would print for a binary tsvector.
    fn text(vector: &TsVector) -> String {
        let bytes = &vector.0;
        let count = u32::from_be_bytes(bytes[..4].try_into().unwrap());
        let mut at = 4;
        let mut entries = Vec::new();
        for _ in 0..count {
            let end = at + bytes[at..].iter().position(|&b| b == 0).unwrap();
            let lexeme = std::str::from_utf8(&bytes[at..end]).unwrap().to_owned();
            at = end + 1;
            let n = u16::from_be_bytes([bytes[at], bytes[at + 1]]);
            at += 2;
            let positions: Vec<String> = (0..n)
                .map(|i| {
                    let p = at + 2 * usize::from(i);
                    u16::from_be_bytes([bytes[p], bytes[p + 1]]).to_string()
                })
                .collect();
            at += 2 * usize::from(n);
            entries.push(format!("'{lexeme}':{}", positions.join(",")));
        }
        assert_eq!(at, bytes.len(), "nothing after the last lexeme");
        entries.join(" ")
    }

    fn document_text(preview: &str, name: Option<&str>) -> Option<String> {
        document(preview, name).map(|v| text(&v))
    }

    #[test]
    fn words_are_lowercased_runs_of_letters_and_digits() {
        assert_eq!(
            split("Привіт, Місто! city-plan_2027.pdf"),
            ["привіт", "місто", "city", "plan", "2027", "pdf"]
        );
        assert_eq!(split(" ,; "), Vec::<String>::new());
        assert_eq!(split("ÉCOLE straße"), ["école", "straße"]);
    }

    #[test]
    fn basic_cyrillic_lowercases_as_the_standard_library_does() {
        for c in '\u{400}'..='\u{45F}' {
            let expected: String = c.to_lowercase().collect();
            assert_eq!(
                basic_cyrillic_lowercase(c).map(String::from),
                Some(expected),
                "{c}"
            );
            assert!(is_word_char(c), "{c}");
        }
        assert_eq!(basic_cyrillic_lowercase('Ґ'), None);
        assert_eq!(basic_cyrillic_lowercase('A'), None);
    }

    #[test]
    fn an_apostrophe_inside_a_word_is_one_whichever_is_typed() {
        for text in ["м'ясо", "м’ясо", "мʼясо", "М'ЯСО"] {
            assert_eq!(split(text), ["мʼясо"], "{text}");
        }
        assert_eq!(split("'quoted' it's"), ["quoted", "itʼs"]);
        assert_eq!(split("a''b ʼʼ"), ["a", "b"]);
    }

    #[test]
    fn documents_list_each_word_once_with_its_positions() {
        assert_eq!(
            document_text("Місто і місто", Some("city_plan.pdf")).as_deref(),
            Some("'city':4 'pdf':6 'plan':5 'місто':1,3 'і':2")
        );
        assert_eq!(document("", None), None);
        assert_eq!(document("!!!", Some("...")), None);
        let long = "x".repeat(MAX_LEXEME_BYTES + 1);
        assert_eq!(
            document_text(&format!("{long} ok"), None).as_deref(),
            Some("'ok':1")
        );
    }

    #[test]
    fn documents_hold_the_words_queries_and_highlights_read() {
        for text in [
            "Повідомлення: the energy cooperative meets on Thursday; Дякую!",
            "м'ясо м’ясо мʼясо 'quoted' a''b ʼʼ it's O'Brien",
            "ÉCOLE Straße İstanbul ǅemal x²y ½ ٣٤ 北京 e\u{301}",
            "tabs\tand\nlines, émojis 🙂🙂 and_underscores-and.dots",
        ] {
            let mut expected: Vec<String> = words(text).into_iter().map(|(_, w)| w).collect();
            expected.sort();
            expected.dedup();
            let document = document_text(text, None).unwrap();
            let lexemes: Vec<String> = document
                .split(' ')
                .map(|entry| entry[1..entry.rfind("':").unwrap()].to_owned())
                .collect();
            assert_eq!(lexemes, expected, "{text}");
        }
    }

    #[test]
    fn documents_stay_within_what_postgres_takes() {
        let many = "слово ".repeat(MAX_POSITION + 10);
        let doc = document_text(&many, None).unwrap();
        assert_eq!(doc.matches(',').count() + 1, MAX_POSITIONS);
        let past = (0..MAX_POSITION + 5)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let doc = document_text(&past, None).unwrap();
        assert!(doc.contains(&format!("'w{}':{MAX_POSITION}", MAX_POSITION + 4)));
    }

    #[test]
    fn queries() {
        let q = |s: &str| Query::parse(s).map(|q| q.tsquery());
        assert_eq!(
            q("Привіт, місто!").as_deref(),
            Some("'привіт':* & 'місто':*")
        );
        assert_eq!(q(" ,; "), None);
        assert_eq!(q("it's").as_deref(), Some("'itʼs':*"));
        assert_eq!(q("a"), None, "one letter is no query");
        assert_eq!(q("в місті").as_deref(), Some("'місті':*"));
        assert_eq!(
            q("ok").as_deref(),
            Some("'ok'"),
            "two letters: the whole word"
        );
        assert_eq!(q("a b c"), None);
    }

    #[test]
    fn highlights_mark_matching_words_and_escape_everything_else() {
        let query = Query::parse("міст ok").unwrap();
        assert_eq!(
            query.highlight("Місто <script> <b>forged</b> ok okay"),
            "<b>Місто</b> &lt;script&gt; &lt;b&gt;forged&lt;/b&gt; <b>ok</b> okay"
        );
        assert_eq!(
            Query::parse("м'ясо").unwrap().highlight("свіже м’ясо"),
            "свіже <b>м’ясо</b>"
        );
    }
}
