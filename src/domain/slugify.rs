//! Slugs from room names: Ukrainian (and Russian) Cyrillic transliterated by the Ukrainian
//! national system of 2010, so "Енергія" becomes "enerhiia", not an empty string.

use super::MAX_SLUG;

fn cyrillic(c: char, word_start: bool) -> Option<&'static str> {
    Some(match c {
        'а' => "a",
        'б' => "b",
        'в' => "v",
        'г' => "h",
        'ґ' => "g",
        'д' => "d",
        'е' | 'э' | 'ё' => "e",
        'є' => {
            if word_start {
                "ye"
            } else {
                "ie"
            }
        }
        'ж' => "zh",
        'з' => "z",
        'и' | 'ы' => "y",
        'і' => "i",
        'ї' => {
            if word_start {
                "yi"
            } else {
                "i"
            }
        }
        'й' => {
            if word_start {
                "y"
            } else {
                "i"
            }
        }
        'к' => "k",
        'л' => "l",
        'м' => "m",
        'н' => "n",
        'о' => "o",
        'п' => "p",
        'р' => "r",
        'с' => "s",
        'т' => "t",
        'у' => "u",
        'ф' => "f",
        'х' => "kh",
        'ц' => "ts",
        'ч' => "ch",
        'ш' => "sh",
        'щ' => "shch",
        'ю' => {
            if word_start {
                "yu"
            } else {
                "iu"
            }
        }
        'я' => {
            if word_start {
                "ya"
            } else {
                "ia"
            }
        }
        'ь' | 'ъ' | '\'' | '’' | 'ʼ' => "",
        _ => return None,
    })
}

/// A slug for `name`: lowercase ASCII letters, digits and `-`, at most [`MAX_SLUG`] long;
/// empty when the name has nothing to make one from.
pub fn slugify(name: &str) -> String {
    let mut out = String::new();
    let mut word_start = true;
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
            word_start = false;
        } else if let Some(latin) = cyrillic(c, word_start) {
            out.push_str(latin);
            word_start = false;
        } else {
            if !out.ends_with('-') && !out.is_empty() {
                out.push('-');
            }
            word_start = true;
        }
    }
    let mut slug: String = out.trim_matches('-').chars().take(MAX_SLUG).collect();
    while slug.ends_with('-') {
        slug.pop();
    }
    slug
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Slug;

    #[test]
    fn ukrainian_names_become_readable_slugs() {
        assert_eq!(slugify("Енергія"), "enerhiia");
        assert_eq!(slugify("Київ — Центр"), "kyiv-tsentr");
        assert_eq!(slugify("Їжак і Юля"), "yizhak-i-yulia");
        assert_eq!(slugify("Зґода, м’ята"), "zgoda-miata");
        assert_eq!(slugify("Energy Co-op 2025!"), "energy-co-op-2025");
        assert_eq!(slugify("🌞🌞"), "");
        let long = slugify(&"слово ".repeat(30));
        assert!(Slug::parse(long.clone()).is_ok(), "{long}");
    }
}
