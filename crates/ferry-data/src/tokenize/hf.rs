//! A loaded tokenizer (a Hugging Face `tokenizer.json`, or ferry's hashed character n-grams)
//! and parallel encoding in a pool the caller sizes.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::ngrams::CharNgrams;
use crate::error::{Error, Result};

/// A tokenizer, with the file it came from (for error messages): a Hugging Face tokenizer or
/// hashed character n-grams ([`CharNgrams`]).
///
/// Padding is the batcher's job: a padding setting in the file is removed on load (its pad id
/// is kept as [`Tokenizer::pad_id`]); truncation settings stay in force.
pub struct Tokenizer {
    backend: Backend,
    path: PathBuf,
    pad_id: u32,
}

enum Backend {
    Hf(Box<tokenizers::Tokenizer>),
    CharNgrams(CharNgrams),
}

/// A rayon pool of `threads` workers (0: one per core) for encoding and batching.
pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("ferry-data-{i}"))
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start {threads} threads: {e}")))
}

impl Tokenizer {
    /// Loads a `tokenizer.json`, or a saved [`CharNgrams`] featurizer.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let err = |msg: String| Error::Tokenizer {
            path: path.to_path_buf(),
            msg,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot load: {e}")))?;
        if CharNgrams::is_file_text(&text) {
            return Ok(Self::from_char_ngrams(
                CharNgrams::from_file_text(&text, path)?,
                path,
            ));
        }
        let inner: tokenizers::Tokenizer =
            text.parse().map_err(|e| err(format!("cannot load: {e}")))?;
        Ok(Self::from_inner(inner, path))
    }

    /// A character n-gram featurizer (`path` names it in errors). Its pad id is 0, a bucket
    /// like any other: padding is masked.
    pub fn from_char_ngrams(ngrams: CharNgrams, path: impl Into<PathBuf>) -> Self {
        Tokenizer {
            backend: Backend::CharNgrams(ngrams),
            path: path.into(),
            pad_id: 0,
        }
    }

    /// Wraps an in-memory tokenizer (`path` names it in errors).
    pub fn from_inner(mut inner: tokenizers::Tokenizer, path: impl Into<PathBuf>) -> Self {
        let pad_id = match inner.get_padding() {
            Some(p) => p.pad_id,
            None => ["<pad>", "[PAD]", "<|pad|>"]
                .iter()
                .find_map(|t| inner.token_to_id(t))
                .unwrap_or(0),
        };
        inner.with_padding(None);
        Tokenizer {
            backend: Backend::Hf(Box::new(inner)),
            path: path.into(),
            pad_id,
        }
    }

    /// The underlying `tokenizers` tokenizer (`None` for character n-grams).
    pub fn hf(&self) -> Option<&tokenizers::Tokenizer> {
        match &self.backend {
            Backend::Hf(t) => Some(t),
            Backend::CharNgrams(_) => None,
        }
    }

    /// The file text [`Tokenizer::from_file`] reads back: the `tokenizer.json` or the char
    /// n-gram settings.
    pub fn to_file_text(&self) -> Result<String> {
        match &self.backend {
            Backend::Hf(t) => t
                .to_string(true)
                .map_err(|e| self.err(format!("cannot serialize: {e}"))),
            Backend::CharNgrams(n) => Ok(n.to_file_text()),
        }
    }

    /// The character n-gram settings (`None` for a Hugging Face tokenizer).
    pub fn char_ngrams(&self) -> Option<&CharNgrams> {
        match &self.backend {
            Backend::Hf(_) => None,
            Backend::CharNgrams(n) => Some(n),
        }
    }

    fn err(&self, msg: String) -> Error {
        Error::Tokenizer {
            path: self.path.clone(),
            msg,
        }
    }

    /// The id of `token`, or an error naming it.
    pub fn token_id(&self, token: &str) -> Result<u32> {
        let Backend::Hf(inner) = &self.backend else {
            return Err(self.err(format!(
                "is a char n-gram featurizer; it has no token {token:?} (language tags need a \
                 BPE, Unigram or WordPiece tokenizer)"
            )));
        };
        inner.token_to_id(token).ok_or_else(|| {
            self.err(format!(
                "has no token {token:?}; add it (for language tags, train with --lang-tags)"
            ))
        })
    }

    /// The padding id: from the file's padding setting, else the first of `<pad>`, `[PAD]`,
    /// `<|pad|>` it knows, else 0.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        match &self.backend {
            Backend::Hf(t) => t.get_vocab_size(true),
            Backend::CharNgrams(n) => n.buckets,
        }
    }

    /// Token ids of one text (char n-grams have no special tokens).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        match &self.backend {
            Backend::Hf(t) => t
                .encode_fast(text, add_special_tokens)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| self.err(format!("encoding {:?}: {e}", preview(text)))),
            Backend::CharNgrams(n) => Ok(n.encode(text)),
        }
    }

    /// Token ids of every text, encoded in parallel in `pool`. The output is in input order
    /// and identical whatever the number of threads.
    pub fn encode_all<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        add_special_tokens: bool,
        pool: &rayon::ThreadPool,
    ) -> Result<Vec<Vec<u32>>> {
        pool.install(|| {
            texts
                .par_iter()
                .with_min_len(64)
                .map(|t| self.encode(t.as_ref(), add_special_tokens))
                .collect()
        })
    }

    /// Tokens (strings) of one text, for display.
    pub fn tokens(&self, text: &str, add_special_tokens: bool) -> Result<Vec<String>> {
        match &self.backend {
            Backend::Hf(t) => t
                .encode(text, add_special_tokens)
                .map(|e| e.get_tokens().to_vec())
                .map_err(|e| self.err(format!("encoding {:?}: {e}", preview(text)))),
            Backend::CharNgrams(n) => Ok(n.pieces(text)),
        }
    }
}

/// The first 40 characters of `text`, for messages.
fn preview(text: &str) -> String {
    text.chars().take(40).collect()
}
