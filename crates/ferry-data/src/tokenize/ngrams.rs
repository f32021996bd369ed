//! Hashed character n-grams, fastText's subword features: every n-gram of `min_n..=max_n`
//! characters of each whitespace-separated word with `<` and `>` boundary marks (and,
//! optionally, the whole word as a feature of its own), hashed into a fixed number of buckets.
//! A model over them has no out-of-vocabulary word: any text maps to ids.
//!
//! Saved as a small JSON file (`{"ferry": "char_ngrams", ...}`) in place of a
//! `tokenizer.json`; [`super::Tokenizer::from_file`] tells the two apart.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The `ferry` field's value in a saved featurizer.
const TAG: &str = "char_ngrams";
/// The most buckets a featurizer may have (a model holds a row per bucket).
pub const MAX_BUCKETS: usize = 1 << 24;
/// The longest n-gram.
pub const MAX_N: usize = 16;

/// Hashed character n-gram features.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CharNgrams {
    /// Shortest n-gram, in characters (boundary marks count).
    pub min_n: usize,
    /// Longest n-gram.
    pub max_n: usize,
    /// Hash buckets: ids are `0..buckets`.
    pub buckets: usize,
    /// Also a feature per whole word.
    #[serde(default = "yes")]
    pub words: bool,
    /// Lowercase the text first.
    #[serde(default = "yes")]
    pub lowercase: bool,
}

fn yes() -> bool {
    true
}

/// The file form: the settings with a tag and a version.
#[derive(Serialize, Deserialize)]
struct File {
    ferry: String,
    version: u32,
    #[serde(flatten)]
    ngrams: CharNgrams,
}

impl CharNgrams {
    /// Checks the settings: `1 <= min_n <= max_n <= 16`, `1 <= buckets <= 2^24`.
    pub fn validate(&self) -> Result<()> {
        if self.min_n == 0 || self.min_n > self.max_n || self.max_n > MAX_N {
            return Err(Error::Invalid(format!(
                "char n-grams of {}..={} characters: need 1 <= min_n <= max_n <= {MAX_N}",
                self.min_n, self.max_n
            )));
        }
        if self.buckets == 0 || self.buckets > MAX_BUCKETS {
            return Err(Error::Invalid(format!(
                "{} char n-gram buckets: need 1 to {MAX_BUCKETS}",
                self.buckets
            )));
        }
        Ok(())
    }

    /// Whether `text` (a file's contents) is a saved featurizer.
    pub fn is_file_text(text: &str) -> bool {
        serde_json::from_str::<serde_json::Value>(text)
            .is_ok_and(|v| v.get("ferry").and_then(|t| t.as_str()) == Some(TAG))
    }

    /// Reads a saved featurizer from `text` (the contents of `path`).
    pub fn from_file_text(text: &str, path: &Path) -> Result<Self> {
        let err = |msg: String| Error::Tokenizer {
            path: path.to_path_buf(),
            msg,
        };
        let f: File = serde_json::from_str(text)
            .map_err(|e| err(format!("is not a valid char n-gram file: {e}")))?;
        if f.ferry != TAG || f.version != 1 {
            return Err(err(format!(
                "is a {:?} file of version {}; this ferry reads char_ngrams version 1",
                f.ferry, f.version
            )));
        }
        f.ngrams.validate().map_err(|e| err(e.to_string()))?;
        Ok(f.ngrams)
    }

    /// The file form (pretty JSON).
    pub fn to_file_text(&self) -> String {
        let f = File {
            ferry: TAG.into(),
            version: 1,
            ngrams: self.clone(),
        };
        serde_json::to_string_pretty(&f).expect("plain data serializes") + "\n"
    }

    /// Saves the featurizer at `path`, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = self.to_file_text();
        ferry_io::atomic::write_atomic(path, |w| {
            use std::io::Write;
            w.write_all(text.as_bytes())
                .map_err(|e| ferry_io::Error::io(path, e))
        })?;
        Ok(())
    }

    /// The features of `text` as ids: per word, in order, the word itself (when
    /// [`CharNgrams::words`]) then its n-grams by length and position.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        self.visit(text, |piece| ids.push(self.bucket(piece)));
        ids
    }

    /// The features of `text` as strings (for display): a whole word is prefixed `W:`.
    pub fn pieces(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.visit(text, |piece| {
            out.push(match piece {
                Piece::Word(w) => format!("W:{w}"),
                Piece::Gram(g) => g.iter().collect(),
            })
        });
        out
    }

    fn visit(&self, text: &str, mut f: impl FnMut(Piece<'_>)) {
        let lowered;
        let text = if self.lowercase {
            lowered = text.to_lowercase();
            &lowered
        } else {
            text
        };
        let mut chars: Vec<char> = Vec::new();
        for word in text.split_whitespace() {
            if self.words {
                f(Piece::Word(word));
            }
            chars.clear();
            chars.push('<');
            chars.extend(word.chars());
            chars.push('>');
            for n in self.min_n..=self.max_n.min(chars.len()) {
                for g in chars.windows(n) {
                    f(Piece::Gram(g));
                }
            }
        }
    }

    /// The bucket of one feature: 32-bit FNV-1a over its UTF-8 bytes (a word feature starts
    /// with the byte 0x01, which no n-gram of text holds), modulo the bucket count.
    fn bucket(&self, piece: Piece<'_>) -> u32 {
        let mut h = Fnv1a::new();
        match piece {
            Piece::Word(w) => {
                h.write(&[1]);
                h.write(w.as_bytes());
            }
            Piece::Gram(g) => {
                let mut buf = [0u8; 4];
                for c in g {
                    h.write(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        (h.0 % self.buckets as u64) as u32
    }
}

/// One feature before hashing.
#[derive(Clone, Copy)]
enum Piece<'a> {
    Word(&'a str),
    Gram(&'a [char]),
}

/// 32-bit FNV-1a (kept in a u64 for the modulo).
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Fnv1a(0x811c_9dc5)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = ((self.0 ^ u64::from(b)) * 0x0100_0193) & 0xffff_ffff;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ng(words: bool) -> CharNgrams {
        CharNgrams {
            min_n: 1,
            max_n: 3,
            buckets: 1 << 20,
            words,
            lowercase: true,
        }
    }

    #[test]
    fn grams_of_each_word_with_boundaries() {
        let p = ng(true).pieces("Ab c");
        assert_eq!(
            p,
            [
                "W:ab", "<", "a", "b", ">", "<a", "ab", "b>", "<ab", "ab>", "W:c", "<", "c", ">",
                "<c", "c>", "<c>"
            ]
        );
        assert_eq!(ng(false).pieces("c"), ["<", "c", ">", "<c", "c>", "<c>"]);
    }

    #[test]
    fn fnv1a_matches_the_reference_values() {
        // FNV-1a 32-bit test vectors (draft-eastlake-fnv): "" and "a" and "foobar".
        for (s, want) in [
            ("", 0x811c9dc5u64),
            ("a", 0xe40c292c),
            ("foobar", 0xbf9cf968),
        ] {
            let mut h = Fnv1a::new();
            h.write(s.as_bytes());
            assert_eq!(h.0, want, "{s:?}");
        }
    }

    #[test]
    fn ids_fall_in_the_buckets_and_the_file_round_trips() {
        let n = CharNgrams {
            buckets: 7,
            ..ng(true)
        };
        let ids = n.encode("Всеобщая декларация 人权");
        assert!(!ids.is_empty() && ids.iter().all(|&i| i < 7));
        let back = CharNgrams::from_file_text(&n.to_file_text(), Path::new("f.json")).unwrap();
        assert_eq!(back, n);
        assert!(CharNgrams::is_file_text(&n.to_file_text()));
        assert!(!CharNgrams::is_file_text("{\"version\": \"1.0\"}"));
    }

    #[test]
    fn bad_settings_are_errors() {
        for bad in [
            CharNgrams {
                min_n: 0,
                ..ng(true)
            },
            CharNgrams {
                min_n: 4,
                ..ng(true)
            },
            CharNgrams {
                max_n: 17,
                ..ng(true)
            },
            CharNgrams {
                buckets: 0,
                ..ng(true)
            },
            CharNgrams {
                buckets: MAX_BUCKETS + 1,
                ..ng(true)
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let e = CharNgrams::from_file_text(
            "{\"ferry\": \"char_ngrams\", \"version\": 2, \"min_n\": 1, \"max_n\": 2, \"buckets\": 8}",
            Path::new("x/tok.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("x/tok.json") && e.contains("version 2"), "{e}");
    }
}
