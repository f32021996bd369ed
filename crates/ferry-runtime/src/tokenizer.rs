//! Text to token ids with the model's own tokenizer: its `tokenizer.json` (or, for ferry's
//! character n-gram classifiers, the n-gram file in its place), or the one a GGUF carries in
//! `tokenizer.ggml.*`. Loading, encoding and saving are `ferry_data::tokenize::Tokenizer`'s;
//! this layer adds the GGUF rebuild and the model's special-token setting.

use std::path::Path;
use std::str::FromStr;

use ferry_io::meta::{MetaValue, Metadata};
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// A model's tokenizer.
pub struct Tokenizer {
    inner: ferry_data::tokenize::Tokenizer,
    /// Whether [`Tokenizer::encode`] adds the special tokens (on unless a model's card says
    /// otherwise).
    special: bool,
}

/// A ferry-data tokenizer error as the runtime's (it names the file either way).
fn tokenizer_error(e: ferry_data::Error, path: &Path) -> Error {
    match e {
        ferry_data::Error::Tokenizer { path, msg } => Error::Tokenizer { path, msg },
        other => Error::Tokenizer {
            path: path.to_path_buf(),
            msg: other.to_string(),
        },
    }
}

impl Tokenizer {
    /// Loads a `tokenizer.json` (or a char n-gram file). A padding setting (all-MiniLM's pads
    /// to a fixed length) is dropped: batches are padded, and masked, by the caller.
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        Ok(Tokenizer {
            inner: ferry_data::tokenize::Tokenizer::from_file(path)
                .map_err(|e| tokenizer_error(e, path))?,
            special: true,
        })
    }

    /// The same tokenizer, adding its special tokens or not (a classifier trained by ferry
    /// records which it was trained with).
    pub fn with_special_tokens(mut self, special: bool) -> Tokenizer {
        self.special = special;
        self
    }

    /// The ids of `text`, with the special tokens the tokenizer adds (`[CLS]`/`[SEP]` for
    /// BERT; unless turned off by [`Tokenizer::with_special_tokens`]), truncated to
    /// `max_tokens` when given.
    pub fn encode(&self, text: &str, max_tokens: Option<usize>) -> Result<Vec<u32>> {
        let mut ids = self
            .inner
            .encode(text, self.special)
            .map_err(|e| tokenizer_error(e, Path::new("<tokenizer>")))?;
        if let Some(n) = max_tokens {
            ids.truncate(n);
        }
        Ok(ids)
    }

    /// Writes the tokenizer as a `tokenizer.json` (or a char n-gram file), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        ferry_data::tokenize::train::save(&self.inner, path).map_err(|e| tokenizer_error(e, path))
    }

    /// The text of one token id, for printing candidates.
    pub fn token(&self, id: u32) -> String {
        match self.inner.hf() {
            Some(t) => t.decode(&[id], false).unwrap_or_else(|_| format!("<{id}>")),
            None => format!("<bucket {id}>"),
        }
    }
}

impl Tokenizer {
    /// The tokenizer a GGUF carries in its `tokenizer.ggml.*` keys, rebuilt as a
    /// `tokenizer.json` would describe it: byte-level BPE (`gpt2`, with SmolLM's single-digit
    /// split for `smollm`) and WordPiece (`bert`, llama.cpp's phantom-space vocabulary turned
    /// back into `##` continuations, lower-cased, `[CLS] ... [SEP]`).
    pub fn from_gguf(meta: &Metadata, path: &Path) -> Result<Tokenizer> {
        let tokens = gguf_strings(meta, "tokenizer.ggml.tokens");
        if tokens.is_empty() {
            return Err(gguf_error(
                path,
                "the GGUF has no tokenizer.ggml.tokens; pass --tokenizer".into(),
            ));
        }
        let types = gguf_token_types(meta);
        let added = gguf_added_tokens(&tokens, &types);
        let model = meta
            .get("tokenizer.ggml.model")
            .and_then(MetaValue::as_str)
            .unwrap_or("");
        let spec = match model {
            "gpt2" => gguf_bpe_spec(meta, &tokens, &added, path)?,
            "bert" => gguf_wordpiece_spec(meta, &tokens, &types, &added),
            other => {
                return Err(gguf_error(path, format!(
                    "the GGUF's tokenizer model `{other}` cannot be rebuilt (gpt2 and bert can); pass --tokenizer tokenizer.json"
                )))
            }
        };
        let inner = tokenizers::Tokenizer::from_str(&spec.to_string())
            .map_err(|e| gguf_error(path, format!("cannot rebuild the GGUF's tokenizer: {e}")))?;
        Ok(Tokenizer {
            inner: ferry_data::tokenize::Tokenizer::from_inner(inner, path),
            special: true,
        })
    }
}

/// The error for a GGUF whose tokenizer cannot be rebuilt.
fn gguf_error(path: &Path, msg: String) -> Error {
    Error::Tokenizer {
        path: path.to_path_buf(),
        msg,
    }
}

/// The strings of the GGUF array `key` (none when absent; a non-string entry as empty).
fn gguf_strings(meta: &Metadata, key: &str) -> Vec<String> {
    match meta.get(key) {
        Some(MetaValue::Array(a)) => a
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect(),
        _ => Vec::new(),
    }
}

/// Each token's `tokenizer.ggml.token_type` (none when absent; an unreadable entry as 1,
/// normal).
fn gguf_token_types(meta: &Metadata) -> Vec<i64> {
    match meta.get("tokenizer.ggml.token_type") {
        Some(MetaValue::Array(a)) => a
            .iter()
            .map(|v| match v {
                MetaValue::I32(x) => *x as i64,
                other => other.as_u64().map_or(1, |u| u as i64),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether token `i` is a control token (type 3).
fn is_control(types: &[i64], i: usize) -> bool {
    types.get(i).is_some_and(|&t| t == 3)
}

/// The control tokens as a `tokenizer.json`'s special `added_tokens`.
fn gguf_added_tokens(tokens: &[String], types: &[i64]) -> Vec<Value> {
    (0..tokens.len())
        .filter(|&i| is_control(types, i))
        .map(|i| {
            json!({"id": i, "content": tokens[i], "single_word": false, "lstrip": false,
                        "rstrip": false, "normalized": false, "special": true})
        })
        .collect()
}

/// The `tokenizer.json` of a GGUF's byte-level BPE (`gpt2`): its pre-tokenizer from
/// `tokenizer.ggml.pre` (SmolLM's single-digit split for `smollm`; others refused by name).
fn gguf_bpe_spec(
    meta: &Metadata,
    tokens: &[String],
    added: &[Value],
    path: &Path,
) -> Result<Value> {
    let vocab: serde_json::Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false,
                            "trim_offsets": true, "use_regex": true});
    let pre = meta.get("tokenizer.ggml.pre").and_then(MetaValue::as_str);
    let pre_tokenizer = match pre {
        Some("smollm") => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level]}),
        None | Some("gpt-2" | "gpt2" | "default") => byte_level.clone(),
        Some(other) => {
            return Err(gguf_error(path, format!(
                "the GGUF's pre-tokenizer `{other}` cannot be rebuilt (gpt-2, smollm and default can); pass --tokenizer tokenizer.json"
            )))
        }
    };
    let spec = json!({"version": "1.0", "added_tokens": added, "normalizer": null,
                      "pre_tokenizer": pre_tokenizer, "post_processor": null,
                      "decoder": byte_level,
                      "model": {"type": "BPE", "vocab": vocab,
                                "merges": gguf_strings(meta, "tokenizer.ggml.merges"),
                                "dropout": null, "unk_token": null,
                                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                                "fuse_unk": false, "byte_fallback": false,
                                "ignore_merges": false}});
    Ok(spec)
}

/// The `tokenizer.json` of a GGUF's WordPiece (`bert`): llama.cpp's phantom-space vocabulary
/// turned back into `##` continuations, lower-cased, `[CLS] ... [SEP]` around each text.
fn gguf_wordpiece_spec(
    meta: &Metadata,
    tokens: &[String],
    types: &[i64],
    added: &[Value],
) -> Value {
    let id = |k: &str, d: usize| {
        meta.get(&format!("tokenizer.ggml.{k}"))
            .and_then(MetaValue::as_u64)
            .map_or(d, |v| v as usize)
    };
    let word = |i: usize, t: &str| -> String {
        if is_control(types, i) || (t.starts_with('[') && t.ends_with(']')) {
            t.to_string()
        } else if let Some(rest) = t.strip_prefix('\u{2581}') {
            rest.to_string()
        } else {
            format!("##{t}")
        }
    };
    let vocab: serde_json::Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (word(i, t), json!(i)))
        .collect();
    let (cls, sep, unk) = (
        id("bos_token_id", 101),
        id("seperator_token_id", 102),
        id("unknown_token_id", 100),
    );
    let name = |i: usize| tokens.get(i).cloned().unwrap_or_default();
    json!({"version": "1.0", "added_tokens": added,
           "normalizer": {"type": "BertNormalizer", "clean_text": true,
                          "handle_chinese_chars": true, "strip_accents": null,
                          "lowercase": true},
           "pre_tokenizer": {"type": "BertPreTokenizer"},
           "post_processor": {"type": "TemplateProcessing",
               "single": [{"SpecialToken": {"id": name(cls), "type_id": 0}},
                          {"Sequence": {"id": "A", "type_id": 0}},
                          {"SpecialToken": {"id": name(sep), "type_id": 0}}],
               "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
               "special_tokens": {
                   name(cls): {"id": name(cls), "ids": [cls], "tokens": [name(cls)]},
                   name(sep): {"id": name(sep), "ids": [sep], "tokens": [name(sep)]}}},
           "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
           "model": {"type": "WordPiece", "unk_token": name(unk),
                     "continuing_subword_prefix": "##",
                     "max_input_chars_per_word": 100, "vocab": vocab}})
}
