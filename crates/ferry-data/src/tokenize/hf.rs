//! A loaded `tokenizer.json` and parallel encoding in a pool the caller sizes.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::{Error, Result};

/// A Hugging Face tokenizer, with the file it came from (for error messages).
///
/// Padding is the batcher's job: a padding setting in the file is removed on load (its pad id
/// is kept as [`Tokenizer::pad_id`]); truncation settings stay in force.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    pad_id: u32,
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
    /// Loads a `tokenizer.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| Error::Tokenizer {
            path: path.to_path_buf(),
            msg: format!("cannot load: {e}"),
        })?;
        Ok(Self::from_inner(inner, path))
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
            inner,
            path: path.into(),
            pad_id,
        }
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    fn err(&self, msg: String) -> Error {
        Error::Tokenizer {
            path: self.path.clone(),
            msg,
        }
    }

    /// The id of `token`, or an error naming it.
    pub fn token_id(&self, token: &str) -> Result<u32> {
        self.inner.token_to_id(token).ok_or_else(|| {
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
        self.inner.get_vocab_size(true)
    }

    /// Token ids of one text.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        self.inner
            .encode_fast(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| self.err(format!("encoding {:?}: {e}", preview(text))))
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
        self.inner
            .encode(text, add_special_tokens)
            .map(|e| e.get_tokens().to_vec())
            .map_err(|e| self.err(format!("encoding {:?}: {e}", preview(text))))
    }
}

/// The first 40 characters of `text`, for messages.
fn preview(text: &str) -> String {
    text.chars().take(40).collect()
}
