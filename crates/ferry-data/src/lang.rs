//! Language labels: which strings ferry accepts as a record's language (any short, printable
//! label is a class), which of them are language codes, and language tags for models.

/// The longest language label ferry accepts, in bytes: longer ones are almost certainly a
/// misread column (text in the language column), not a language.
pub const MAX_LABEL_BYTES: usize = 64;

/// Why a string cannot be a record's language label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// Nothing but whitespace.
    #[error("the language label is empty")]
    Empty,
    /// A control character (a tab, a newline, NUL, ...): a misread line, not a language.
    #[error("the language label {0:?} contains a control character")]
    Control(String),
    /// Longer than [`MAX_LABEL_BYTES`].
    #[error("the language label is {len} bytes long (at most {MAX_LABEL_BYTES}): {start:?}...")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// Its first characters.
        start: String,
    },
}

/// Checks that `label` (already trimmed) can name a class: not empty, no control characters,
/// at most [`MAX_LABEL_BYTES`] bytes. Whether it is also a language code is
/// [`is_valid_code`]'s question, and not a reason to drop it.
pub fn check_label(label: &str) -> Result<(), LabelError> {
    if label.is_empty() {
        Err(LabelError::Empty)
    } else if label.len() > MAX_LABEL_BYTES {
        Err(LabelError::TooLong {
            len: label.len(),
            start: label.chars().take(16).collect(),
        })
    } else if label.chars().any(char::is_control) {
        Err(LabelError::Control(label.to_string()))
    } else {
        Ok(())
    }
}

/// The ISO 639-1 two-letter codes.
const ISO_639_1: &[&str] = &[
    "aa", "ab", "ae", "af", "ak", "am", "an", "ar", "as", "av", "ay", "az", "ba", "be", "bg", "bh",
    "bi", "bm", "bn", "bo", "br", "bs", "ca", "ce", "ch", "co", "cr", "cs", "cu", "cv", "cy", "da",
    "de", "dv", "dz", "ee", "el", "en", "eo", "es", "et", "eu", "fa", "ff", "fi", "fj", "fo", "fr",
    "fy", "ga", "gd", "gl", "gn", "gu", "gv", "ha", "he", "hi", "ho", "hr", "ht", "hu", "hy", "hz",
    "ia", "id", "ie", "ig", "ii", "ik", "io", "is", "it", "iu", "ja", "jv", "ka", "kg", "ki", "kj",
    "kk", "kl", "km", "kn", "ko", "kr", "ks", "ku", "kv", "kw", "ky", "la", "lb", "lg", "li", "ln",
    "lo", "lt", "lu", "lv", "mg", "mh", "mi", "mk", "ml", "mn", "mr", "ms", "mt", "my", "na", "nb",
    "nd", "ne", "ng", "nl", "nn", "no", "nr", "nv", "ny", "oc", "oj", "om", "or", "os", "pa", "pi",
    "pl", "ps", "pt", "qu", "rm", "rn", "ro", "ru", "rw", "sa", "sc", "sd", "se", "sg", "si", "sk",
    "sl", "sm", "sn", "so", "sq", "sr", "ss", "st", "su", "sv", "sw", "ta", "te", "tg", "th", "ti",
    "tk", "tl", "tn", "to", "tr", "ts", "tt", "tw", "ty", "ug", "uk", "ur", "uz", "ve", "vi", "vo",
    "wa", "wo", "xh", "yi", "yo", "za", "zh", "zu",
];

/// Whether `code` is a language code: a BCP-47-shaped tag whose primary subtag
/// is an ISO 639-1 code or three lowercase letters (ISO 639-3), followed by optional subtags
/// of 2 to 8 letters or digits separated by `-` or `_` (`zh-Hans`, `pt_BR`, mBART's `en_XX`).
pub fn is_valid_code(code: &str) -> bool {
    let mut parts = code.split(['-', '_']);
    let primary = parts.next().unwrap_or("");
    let primary_ok = match primary.len() {
        2 => ISO_639_1.binary_search(&primary).is_ok(),
        3 => primary.bytes().all(|b| b.is_ascii_lowercase()),
        _ => false,
    };
    primary_ok
        && parts.all(|p| (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// How a language is marked for a model, as a token spelled from a template.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LangTagStyle {
    /// fairseq / M2M-100: `__en__`, prepended to the text.
    Fairseq,
    /// mBART: `en_XX`, appended to the source and prepended to the target.
    Mbart,
}

impl LangTagStyle {
    /// The tag token for `lang`.
    pub fn tag(&self, lang: &str) -> String {
        let primary = lang.split(['-', '_']).next().unwrap_or(lang);
        match self {
            LangTagStyle::Fairseq => format!("__{lang}__"),
            LangTagStyle::Mbart => format!("{primary}_XX"),
        }
    }
}

impl std::str::FromStr for LangTagStyle {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fairseq" => Ok(LangTagStyle::Fairseq),
            "mbart" => Ok(LangTagStyle::Mbart),
            _ => Err(format!(
                "unknown language-tag style {s:?}: use fairseq (__en__) or mbart (en_XX)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_sorted_for_binary_search() {
        assert!(ISO_639_1.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn codes() {
        for ok in [
            "en",
            "zh-Hans",
            "pt_BR",
            "en_XX",
            "ekk",
            "sr-Cyrl-RS",
            "de-1996",
        ] {
            assert!(is_valid_code(ok), "{ok}");
        }
        for bad in [
            "",
            "xx",
            "x",
            "EN",
            "qqq1",
            "english",
            "en-",
            "xx-notalang",
            "e n",
        ] {
            assert!(!is_valid_code(bad), "{bad}");
        }
    }

    #[test]
    fn any_short_printable_label_is_a_class() {
        for ok in [
            "ell_monotonic",
            "eng",
            "Klingon",
            "x",
            "zh-Hans",
            "中文",
            &"a".repeat(64),
        ] {
            assert_eq!(check_label(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_label(""), Err(LabelError::Empty));
        assert!(matches!(
            check_label("en\u{0}"),
            Err(LabelError::Control(_))
        ));
        assert!(matches!(check_label("a\tb"), Err(LabelError::Control(_))));
        let long = "a".repeat(65);
        let err = check_label(&long).unwrap_err();
        assert!(matches!(err, LabelError::TooLong { len: 65, .. }));
        assert!(err.to_string().contains("65 bytes"), "{err}");
    }

    #[test]
    fn tags() {
        assert_eq!(LangTagStyle::Fairseq.tag("en"), "__en__");
        assert_eq!(LangTagStyle::Mbart.tag("de"), "de_XX");
        assert_eq!(LangTagStyle::Mbart.tag("zh-Hans"), "zh_XX");
    }
}
