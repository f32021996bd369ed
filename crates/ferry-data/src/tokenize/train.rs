//! Training BPE, Unigram and WordPiece tokenizers on (language-balanced) text, saved as a
//! `tokenizer.json` any Hugging Face tokenizer loads.

use std::path::Path;

use serde_json::{json, Value};
use tokenizers::models::bpe::BpeTrainer;
use tokenizers::models::unigram::UnigramTrainer;
use tokenizers::models::wordpiece::WordPieceTrainer;
use tokenizers::models::TrainerWrapper;
use tokenizers::AddedToken;

use super::Tokenizer;
use crate::error::{Error, Result};
use crate::lang::LangTagStyle;

/// The tokenizer models ferry trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Byte-pair encoding (sentencepiece-style `▁` word boundaries).
    Bpe,
    /// Unigram language model (as sentencepiece, XLM-R, mBART).
    Unigram,
    /// WordPiece (as BERT), `##` continuation prefix.
    WordPiece,
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bpe" => Ok(Kind::Bpe),
            "unigram" => Ok(Kind::Unigram),
            "wordpiece" => Ok(Kind::WordPiece),
            _ => Err(format!(
                "unknown tokenizer kind {s:?}: use bpe, unigram or wordpiece"
            )),
        }
    }
}

/// What to train.
#[derive(Debug, Clone)]
pub struct TrainSpec {
    /// The model.
    pub kind: Kind,
    /// Target vocabulary size (special, language-tag and byte tokens included).
    pub vocab_size: usize,
    /// Minimum frequency of a merge or word (BPE, WordPiece).
    pub min_frequency: u64,
    /// NFKC-normalize before training and encoding.
    pub nfkc: bool,
    /// Add the 256 `<0xNN>` byte tokens so no character is unknown (BPE and Unigram).
    pub byte_fallback: bool,
    /// Language tags to add as special tokens, with their style.
    pub lang_tags: Option<(LangTagStyle, Vec<String>)>,
}

impl TrainSpec {
    /// The default special tokens of a kind: `<pad> <unk> <s> </s>` (BPE, Unigram) or BERT's
    /// `[PAD] [UNK] [CLS] [SEP] [MASK]` (WordPiece). The pad token gets id 0.
    pub fn specials(&self) -> Vec<String> {
        let base: &[&str] = match self.kind {
            Kind::Bpe | Kind::Unigram => &["<pad>", "<unk>", "<s>", "</s>"],
            Kind::WordPiece => &["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        };
        let mut v: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        if let Some((style, langs)) = &self.lang_tags {
            v.extend(langs.iter().map(|l| style.tag(l)));
        }
        v
    }

    fn unk(&self) -> &'static str {
        match self.kind {
            Kind::WordPiece => "[UNK]",
            _ => "<unk>",
        }
    }
}

/// The untrained pipeline as `tokenizer.json`: normalizer, pre-tokenizer, decoder and an
/// empty model of the right kind.
fn skeleton(spec: &TrainSpec) -> Value {
    let normalizer = if spec.nfkc {
        json!({"type": "NFKC"})
    } else {
        Value::Null
    };
    let metaspace =
        json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true});
    let (pre, decoder, model) = match spec.kind {
        Kind::Bpe => (
            metaspace.clone(),
            json!({"type": "Sequence", "decoders": [{"type": "ByteFallback"}, metaspace]}),
            json!({"type": "BPE", "dropout": null, "unk_token": spec.unk(),
                   "continuing_subword_prefix": null, "end_of_word_suffix": null,
                   "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                   "vocab": {}, "merges": []}),
        ),
        Kind::Unigram => (
            metaspace.clone(),
            json!({"type": "Sequence", "decoders": [{"type": "ByteFallback"}, metaspace]}),
            json!({"type": "Unigram", "unk_id": null, "vocab": [], "byte_fallback": false}),
        ),
        Kind::WordPiece => (
            json!({"type": "BertPreTokenizer"}),
            json!({"type": "WordPiece", "prefix": "##", "cleanup": true}),
            json!({"type": "WordPiece", "unk_token": spec.unk(),
                   "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
                   "vocab": {}}),
        ),
    };
    json!({"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
           "normalizer": normalizer, "pre_tokenizer": pre, "post_processor": null,
           "decoder": decoder, "model": model})
}

fn tok_err(msg: impl std::fmt::Display) -> Error {
    Error::Tokenizer {
        path: "<training>".into(),
        msg: msg.to_string(),
    }
}

/// Trains a tokenizer on `texts` (give it a language-balanced sample, see
/// [`crate::sampling`]). BPE is deterministic for the same input. Unigram and WordPiece learn
/// the same pieces every time, but `tokenizers` orders them through hash maps (and sums
/// Unigram's EM scores in parallel), so their ids vary from run to run: keep the saved
/// `tokenizer.json` with the model.
pub fn train<I, S>(spec: &TrainSpec, texts: I) -> Result<Tokenizer>
where
    I: Iterator<Item = S> + Send,
    S: AsRef<str> + Send,
{
    let specials: Vec<AddedToken> = spec
        .specials()
        .into_iter()
        .map(|t| AddedToken::from(t, true))
        .collect();
    let reserved = if spec.byte_fallback && spec.kind != Kind::WordPiece {
        256
    } else {
        0
    };
    let size = spec
        .vocab_size
        .checked_sub(reserved)
        .filter(|&n| n > specials.len())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "a vocabulary of {} cannot hold {} special tokens and {reserved} byte tokens",
                spec.vocab_size,
                specials.len()
            ))
        })?;
    let mut trainer: TrainerWrapper = match spec.kind {
        Kind::Bpe => BpeTrainer::builder()
            .vocab_size(size)
            .min_frequency(spec.min_frequency)
            .special_tokens(specials)
            .show_progress(false)
            .build()
            .into(),
        Kind::Unigram => UnigramTrainer::builder()
            .vocab_size(size as u32)
            .special_tokens(specials)
            .unk_token(Some(spec.unk().to_string()))
            .show_progress(false)
            .build()
            .map_err(tok_err)?
            .into(),
        Kind::WordPiece => WordPieceTrainer::builder()
            .vocab_size(size)
            .min_frequency(spec.min_frequency)
            .special_tokens(specials)
            .show_progress(false)
            .build()
            .into(),
    };
    let mut tok: tokenizers::Tokenizer = skeleton(spec).to_string().parse().map_err(tok_err)?;
    tok.train(&mut trainer, texts).map_err(tok_err)?;
    let mut value: Value =
        serde_json::from_str(&tok.to_string(false).map_err(tok_err)?).map_err(tok_err)?;
    if reserved > 0 {
        add_byte_fallback(&mut value)?;
    }
    value["post_processor"] = post_processor(spec, &value)?;
    let tok = value.to_string().parse().map_err(tok_err)?;
    Ok(Tokenizer::from_inner(tok, "<trained>"))
}

/// Adds `<0x00>` ... `<0xFF>` to the model's vocabulary and turns on byte fallback.
fn add_byte_fallback(value: &mut Value) -> Result<()> {
    let model = &mut value["model"];
    match model["type"].as_str() {
        Some("BPE") => {
            let vocab = model["vocab"]
                .as_object_mut()
                .ok_or_else(|| tok_err("BPE without vocab"))?;
            let mut next = vocab
                .values()
                .filter_map(Value::as_u64)
                .max()
                .map_or(0, |m| m + 1);
            for b in 0..=255u8 {
                let t = format!("<0x{b:02X}>");
                if !vocab.contains_key(&t) {
                    vocab.insert(t, json!(next));
                    next += 1;
                }
            }
        }
        Some("Unigram") => {
            let vocab = model["vocab"]
                .as_array_mut()
                .ok_or_else(|| tok_err("Unigram without vocab"))?;
            let min = vocab
                .iter()
                .filter_map(|p| p[1].as_f64())
                .fold(0f64, f64::min);
            for b in 0..=255u8 {
                vocab.push(json!([format!("<0x{b:02X}>"), min - 10.0]));
            }
        }
        other => return Err(tok_err(format!("no byte fallback for {other:?}"))),
    }
    model["byte_fallback"] = json!(true);
    Ok(())
}

/// A template that wraps every sequence in `<s> ... </s>` (`[CLS] ... [SEP]` for WordPiece).
fn post_processor(spec: &TrainSpec, value: &Value) -> Result<Value> {
    let (bos, eos) = match spec.kind {
        Kind::WordPiece => ("[CLS]", "[SEP]"),
        _ => ("<s>", "</s>"),
    };
    let id = |t: &str| {
        value["added_tokens"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["content"] == t))
            .and_then(|x| x["id"].as_u64())
            .ok_or_else(|| tok_err(format!("special token {t} missing after training")))
    };
    let (b, e) = (id(bos)?, id(eos)?);
    Ok(json!({
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": eos, "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": eos, "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                 {"SpecialToken": {"id": eos, "type_id": 1}}],
        "special_tokens": {
            bos: {"id": bos, "ids": [b], "tokens": [bos]},
            eos: {"id": eos, "ids": [e], "tokens": [eos]},
        }
    }))
}

/// Saves `tok` as `tokenizer.json` (or a char n-gram file) at `path`, atomically.
pub fn save(tok: &Tokenizer, path: &Path) -> Result<()> {
    let text = tok.to_file_text()?;
    ferry_io::atomic::write_atomic(path, |w| {
        use std::io::Write;
        w.write_all(text.as_bytes())
            .map_err(|e| ferry_io::Error::io(path, e))
    })?;
    Ok(())
}
