//! Writing-system detection from Unicode ranges, for corpus statistics.

/// A writing system, as far as ferry tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Script {
    /// Latin letters (with extensions).
    Latin,
    /// Cyrillic.
    Cyrillic,
    /// Greek.
    Greek,
    /// Armenian.
    Armenian,
    /// Hebrew.
    Hebrew,
    /// Arabic (with Persian and Urdu letters).
    Arabic,
    /// Devanagari.
    Devanagari,
    /// Bengali.
    Bengali,
    /// Tamil.
    Tamil,
    /// Thai.
    Thai,
    /// Georgian.
    Georgian,
    /// Hangul.
    Hangul,
    /// Hiragana and Katakana.
    Kana,
    /// Han ideographs.
    Han,
    /// A letter of some other script.
    Other,
}

/// The script of a letter, or `None` for digits, punctuation, spaces and symbols.
pub fn of_char(c: char) -> Option<Script> {
    if !c.is_alphabetic() {
        return None;
    }
    let s = match c as u32 {
        0x0041..=0x024F | 0x1E00..=0x1EFF | 0x2C60..=0x2C7F | 0xA720..=0xA7FF => Script::Latin,
        0x0250..=0x02AF => Script::Latin,
        0x0370..=0x03FF | 0x1F00..=0x1FFF => Script::Greek,
        0x0400..=0x052F | 0x1C80..=0x1C8F | 0x2DE0..=0x2DFF | 0xA640..=0xA69F => Script::Cyrillic,
        0x0530..=0x058F => Script::Armenian,
        0x0590..=0x05FF => Script::Hebrew,
        0x0600..=0x06FF | 0x0750..=0x077F | 0x08A0..=0x08FF | 0xFB50..=0xFDFF | 0xFE70..=0xFEFF => {
            Script::Arabic
        }
        0x0900..=0x097F => Script::Devanagari,
        0x0980..=0x09FF => Script::Bengali,
        0x0B80..=0x0BFF => Script::Tamil,
        0x0E00..=0x0E7F => Script::Thai,
        0x10A0..=0x10FF | 0x1C90..=0x1CBF => Script::Georgian,
        0x1100..=0x11FF | 0x3130..=0x318F | 0xAC00..=0xD7AF => Script::Hangul,
        0x3040..=0x30FF | 0x31F0..=0x31FF | 0xFF66..=0xFF9F => Script::Kana,
        0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F => Script::Han,
        _ => Script::Other,
    };
    Some(s)
}

/// Letters per script in `text`, sorted by script.
pub fn count(text: &str) -> Vec<(Script, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for s in text.chars().filter_map(of_char) {
        *counts.entry(s).or_insert(0usize) += 1;
    }
    counts.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_of_udhr_samples() {
        let cases = [
            ("Всички хора", Script::Cyrillic),
            ("Όλοι οι άνθρωποι", Script::Greek),
            ("يولد جميع الناس", Script::Arabic),
            ("人人生而自由", Script::Han),
            ("모든 인간은", Script::Hangul),
            ("すべての人間は", Script::Kana),
            ("ყველა ადამიანი", Script::Georgian),
            ("Všichni lidé", Script::Latin),
            ("सभी मनुष्यों", Script::Devanagari),
            ("כל בני האדם", Script::Hebrew),
            ("มนุษย์ทั้งหลาย", Script::Thai),
        ];
        for (text, want) in cases {
            let c = count(text);
            let top = c.iter().max_by_key(|(_, n)| *n).unwrap().0;
            assert_eq!(top, want, "{text}");
        }
        assert!(count("123 ,.!").is_empty());
    }
}
