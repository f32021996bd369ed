//! Text to token ids with the model's own `tokenizer.json` (the `tokenizers` crate).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A model's tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl Tokenizer {
    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        let mut inner = tokenizers::Tokenizer::from_file(path).map_err(|e| Error::Tokenizer {
            path: path.to_path_buf(),
            msg: format!("cannot load: {e}"),
        })?;
        // A padding setting (all-MiniLM's pads to a fixed length) would feed pad tokens as
        // text; batches are padded, and masked, by the caller.
        inner.with_padding(None);
        Ok(Tokenizer {
            inner,
            path: path.to_path_buf(),
        })
    }

    /// The ids of `text`, with the special tokens the tokenizer adds (`[CLS]`/`[SEP]` for
    /// BERT), truncated to `max_tokens` when given.
    pub fn encode(&self, text: &str, max_tokens: Option<usize>) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                msg: format!("cannot encode {:?}: {e}", short(text)),
            })?;
        let mut ids = enc.get_ids().to_vec();
        if let Some(n) = max_tokens {
            ids.truncate(n);
        }
        Ok(ids)
    }

    /// The text of one token id, for printing candidates.
    pub fn token(&self, id: u32) -> String {
        self.inner
            .decode(&[id], false)
            .unwrap_or_else(|_| format!("<{id}>"))
    }
}

fn short(text: &str) -> String {
    text.chars().take(40).collect()
}
