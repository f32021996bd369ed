//! The family (branch) and usual script of common language codes, for reports that group
//! languages: zero-shot transfer is told apart by whether an unseen language shares a family
//! or a script with the training languages. Codes are ISO 639-1 (or 639-3 where there is no
//! 639-1 code); a BCP-47 tag is looked up by its primary subtag. Unknown codes group as
//! "other".

/// A language's family (at the branch level for Indo-European) and usual script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LanguageInfo {
    /// The family or branch, e.g. "Romance", "Slavic", "Semitic".
    pub family: &'static str,
    /// The script it is usually written in, e.g. "Latin", "Cyrillic".
    pub script: &'static str,
}

/// (code, family, script), sorted by code.
const TABLE: &[(&str, &str, &str)] = &[
    ("af", "Germanic", "Latin"),
    ("am", "Semitic", "Ethiopic"),
    ("ar", "Semitic", "Arabic"),
    ("as", "Indo-Aryan", "Bengali"),
    ("az", "Turkic", "Latin"),
    ("be", "Slavic", "Cyrillic"),
    ("bg", "Slavic", "Cyrillic"),
    ("bn", "Indo-Aryan", "Bengali"),
    ("bs", "Slavic", "Latin"),
    ("ca", "Romance", "Latin"),
    ("cs", "Slavic", "Latin"),
    ("cy", "Celtic", "Latin"),
    ("da", "Germanic", "Latin"),
    ("de", "Germanic", "Latin"),
    ("el", "Hellenic", "Greek"),
    ("en", "Germanic", "Latin"),
    ("eo", "Constructed", "Latin"),
    ("es", "Romance", "Latin"),
    ("et", "Uralic", "Latin"),
    ("eu", "Basque", "Latin"),
    ("fa", "Iranian", "Arabic"),
    ("fi", "Uralic", "Latin"),
    ("fil", "Austronesian", "Latin"),
    ("fr", "Romance", "Latin"),
    ("ga", "Celtic", "Latin"),
    ("gl", "Romance", "Latin"),
    ("gu", "Indo-Aryan", "Gujarati"),
    ("ha", "Chadic", "Latin"),
    ("he", "Semitic", "Hebrew"),
    ("hi", "Indo-Aryan", "Devanagari"),
    ("hr", "Slavic", "Latin"),
    ("hu", "Uralic", "Latin"),
    ("hy", "Armenian", "Armenian"),
    ("id", "Austronesian", "Latin"),
    ("ig", "Niger-Congo", "Latin"),
    ("is", "Germanic", "Latin"),
    ("it", "Romance", "Latin"),
    ("ja", "Japonic", "Japanese"),
    ("jv", "Austronesian", "Latin"),
    ("ka", "Kartvelian", "Georgian"),
    ("kk", "Turkic", "Cyrillic"),
    ("km", "Austroasiatic", "Khmer"),
    ("kn", "Dravidian", "Kannada"),
    ("ko", "Koreanic", "Hangul"),
    ("ku", "Iranian", "Latin"),
    ("ky", "Turkic", "Cyrillic"),
    ("la", "Romance", "Latin"),
    ("lb", "Germanic", "Latin"),
    ("lo", "Tai-Kadai", "Lao"),
    ("lt", "Baltic", "Latin"),
    ("lv", "Baltic", "Latin"),
    ("mk", "Slavic", "Cyrillic"),
    ("ml", "Dravidian", "Malayalam"),
    ("mn", "Mongolic", "Cyrillic"),
    ("mr", "Indo-Aryan", "Devanagari"),
    ("ms", "Austronesian", "Latin"),
    ("mt", "Semitic", "Latin"),
    ("my", "Sino-Tibetan", "Myanmar"),
    ("nb", "Germanic", "Latin"),
    ("ne", "Indo-Aryan", "Devanagari"),
    ("nl", "Germanic", "Latin"),
    ("nn", "Germanic", "Latin"),
    ("no", "Germanic", "Latin"),
    ("pa", "Indo-Aryan", "Gurmukhi"),
    ("pl", "Slavic", "Latin"),
    ("ps", "Iranian", "Arabic"),
    ("pt", "Romance", "Latin"),
    ("ro", "Romance", "Latin"),
    ("ru", "Slavic", "Cyrillic"),
    ("si", "Indo-Aryan", "Sinhala"),
    ("sk", "Slavic", "Latin"),
    ("sl", "Slavic", "Latin"),
    ("so", "Cushitic", "Latin"),
    ("sq", "Albanian", "Latin"),
    ("sr", "Slavic", "Cyrillic"),
    ("sv", "Germanic", "Latin"),
    ("sw", "Niger-Congo", "Latin"),
    ("ta", "Dravidian", "Tamil"),
    ("te", "Dravidian", "Telugu"),
    ("tg", "Iranian", "Cyrillic"),
    ("th", "Tai-Kadai", "Thai"),
    ("tl", "Austronesian", "Latin"),
    ("tr", "Turkic", "Latin"),
    ("uk", "Slavic", "Cyrillic"),
    ("ur", "Indo-Aryan", "Arabic"),
    ("uz", "Turkic", "Latin"),
    ("vi", "Austroasiatic", "Latin"),
    ("xh", "Niger-Congo", "Latin"),
    ("yo", "Niger-Congo", "Latin"),
    ("zh", "Sino-Tibetan", "Han"),
    ("zu", "Niger-Congo", "Latin"),
];

/// The family and script of `code` (its primary subtag, case-insensitive), if known.
pub fn info(code: &str) -> Option<LanguageInfo> {
    let primary = code
        .split(['-', '_'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    TABLE
        .binary_search_by(|(c, _, _)| (*c).cmp(primary.as_str()))
        .ok()
        .map(|i| LanguageInfo {
            family: TABLE[i].1,
            script: TABLE[i].2,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_looks_up_tags() {
        assert!(
            TABLE.windows(2).all(|w| w[0].0 < w[1].0),
            "sorted, no duplicates"
        );
        assert_eq!(info("pt-BR").unwrap().family, "Romance");
        assert_eq!(info("SR").unwrap().script, "Cyrillic");
        assert_eq!(info("zh_Hant").unwrap().script, "Han");
        assert!(info("xx").is_none() && info("").is_none());
    }

    #[test]
    fn every_udhr_language_is_known() {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../corpora/udhr/test.tsv"),
        )
        .unwrap();
        for line in text.lines().skip(1) {
            let code = line.split('\t').next().unwrap();
            assert!(info(code).is_some(), "{code} has no family");
        }
    }
}
