//! torchtext's `basic_english` tokenizer and `build_vocab_from_iterator`, as the seed used
//! them, so a model trained with torchtext keeps its token ids.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};

/// torchtext's `basic_english`: lowercase, then the same regex substitutions in the same
/// order (`'` -> ` '  `, `"` removed, `.,()!?` spaced out, `<br />`, `;` and `:` to spaces),
/// then split on whitespace.
pub fn basic_english(text: &str) -> Vec<String> {
    let mut s = String::with_capacity(text.len() + 16);
    // The substitutions act on single characters, except `<br />`, which is replaced first:
    // torchtext applies `\.` before `<br \/>`, but `<br />` has no period, so order is moot.
    let lowered = text.to_lowercase().replace("<br />", " ");
    for c in lowered.chars() {
        match c {
            '\'' => s.push_str(" '  "),
            '"' => {}
            '.' | ',' | '(' | ')' | '!' | '?' => {
                s.push(' ');
                s.push(c);
                s.push(' ');
            }
            ';' | ':' => s.push(' '),
            _ => s.push(c),
        }
    }
    s.split_whitespace().map(str::to_string).collect()
}

/// A token <-> id table built like torchtext's `build_vocab_from_iterator`: specials first,
/// then tokens by descending frequency (ties in lexicographic order), dropping those seen
/// fewer than `min_freq` times; unknown tokens map to `<unk>`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Vocab {
    itos: Vec<String>,
    default_index: Option<u32>,
    #[serde(skip)]
    stoi: HashMap<String, u32>,
}

impl Vocab {
    /// Builds a vocabulary from tokenized texts. `<unk>`, if among `specials`, becomes the
    /// default index.
    pub fn build<I, T>(texts: I, min_freq: u64, specials: &[&str]) -> Self
    where
        I: IntoIterator<Item = T>,
        T: IntoIterator<Item = String>,
    {
        let mut counts: HashMap<String, u64> = HashMap::new();
        for tokens in texts {
            for t in tokens {
                *counts.entry(t).or_default() += 1;
            }
        }
        for s in specials {
            counts.remove(*s);
        }
        let mut by_freq: Vec<(String, u64)> =
            counts.into_iter().filter(|(_, n)| *n >= min_freq).collect();
        by_freq.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let itos: Vec<String> = specials
            .iter()
            .map(|s| s.to_string())
            .chain(by_freq.into_iter().map(|(t, _)| t))
            .collect();
        let default_index = specials
            .iter()
            .position(|s| *s == "<unk>")
            .map(|i| i as u32);
        Self::from_itos(itos, default_index)
    }

    fn from_itos(itos: Vec<String>, default_index: Option<u32>) -> Self {
        let stoi = itos
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        Vocab {
            itos,
            default_index,
            stoi,
        }
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.itos.len()
    }

    /// Whether it has no tokens.
    pub fn is_empty(&self) -> bool {
        self.itos.is_empty()
    }

    /// The id of `token`: its own, else the default (`<unk>`) index.
    pub fn id(&self, token: &str) -> Option<u32> {
        self.stoi.get(token).copied().or(self.default_index)
    }

    /// The token with id `id`.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.itos.get(id as usize).map(String::as_str)
    }

    /// Ids of `tokens` (tokens with no id and no default are dropped).
    pub fn encode(&self, tokens: &[String]) -> Vec<u32> {
        tokens.iter().filter_map(|t| self.id(t)).collect()
    }

    /// Saves as JSON (`{"itos": [...], "default_index": n}`), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text =
            serde_json::to_string(self).map_err(|e| Error::malformed(path, e.to_string()))?;
        ferry_io::atomic::write_atomic(path, |w| {
            use std::io::Write;
            w.write_all(text.as_bytes())
                .map_err(|e| ferry_io::Error::io(path, e))
        })?;
        Ok(())
    }

    /// Loads a vocabulary saved by [`Vocab::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: Vocab = serde_json::from_str(&text)
            .map_err(|e| Error::malformed(path, format!("not a ferry vocabulary: {e}")))?;
        if v.default_index.is_some_and(|i| i as usize >= v.itos.len()) {
            return Err(Error::malformed(
                path,
                "default_index is past the end of itos",
            ));
        }
        Ok(Self::from_itos(v.itos, v.default_index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_english_matches_torchtext() {
        // Expected values from torchtext 0.18 `get_tokenizer("basic_english")`.
        assert_eq!(
            basic_english("Hello, World! It's (really) \"fine\"; ok: yes.<br />Next?"),
            [
                "hello", ",", "world", "!", "it", "'", "s", "(", "really", ")", "fine", "ok",
                "yes", ".", "next", "?"
            ]
        );
        assert_eq!(
            basic_english("Ein Mann läuft."),
            ["ein", "mann", "läuft", "."]
        );
    }

    #[test]
    fn vocab_order_min_freq_and_unk() {
        let texts = ["a b b c c c", "d c b"].map(basic_english);
        let v = Vocab::build(texts, 2, &["<unk>", "<pad>", "<bos>", "<eos>"]);
        let itos: Vec<&str> = (0..v.len() as u32).map(|i| v.token(i).unwrap()).collect();
        assert_eq!(itos, ["<unk>", "<pad>", "<bos>", "<eos>", "c", "b"]);
        assert_eq!(v.id("zzz"), Some(0));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vocab.json");
        v.save(&p).unwrap();
        let back = Vocab::load(&p).unwrap();
        assert_eq!(back.id("b"), Some(5));
        assert_eq!(back, v);
    }
}
