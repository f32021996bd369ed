//! llama.cpp-style GGUF metadata for a Hugging Face model folder, derived from its
//! `config.json` (architecture hyper-parameters) and `tokenizer.json` (vocabulary, merges,
//! special tokens), following the keys and conventions of llama.cpp's `convert_hf_to_gguf.py`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::meta::{MetaValue, Metadata};

use super::names::Family;

/// llama.cpp token types (`gguf.TokenType`).
mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// Largest vocabulary ferry accepts from a `tokenizer.json` (ids are untrusted input).
const MAX_VOCAB: usize = 1 << 22;

/// Builds llama.cpp-style GGUF metadata: `general.architecture` (from `model_type`),
/// `general.name`, the `{arch}.*` hyper-parameters found in `config_json`, and the
/// `tokenizer.ggml.*` keys from `tokenizer_json` (WordPiece -> `bert`, byte-level BPE ->
/// `gpt2`, SentencePiece BPE with byte fallback -> `llama`, Unigram -> `t5`). Missing files
/// and missing fields are skipped; an unreadable or non-JSON file is an error.
pub fn hf_metadata(
    config_json: Option<&Path>,
    tokenizer_json: Option<&Path>,
    name: &str,
) -> Result<Metadata> {
    let mut m = Metadata::new();
    m.insert("general.name".into(), MetaValue::String(name.to_string()));
    let config = config_json.map(read_json).transpose()?;
    if let Some((cfg, path)) = &config {
        add_architecture(&mut m, cfg, path)?;
    }
    if let Some((tok, path)) = tokenizer_json.map(read_json).transpose()? {
        let cfg = config.as_ref().map(|(c, _)| c);
        if tok.get("ferry").and_then(Value::as_str) == Some("char_ngrams") {
            add_char_ngrams(&mut m, &tok).map_err(|msg| Error::malformed(&path, msg))?;
        } else {
            add_tokenizer(&mut m, &tok, cfg).map_err(|msg| Error::malformed(&path, msg))?;
        }
    }
    Ok(m)
}

fn read_json(path: &Path) -> Result<(Value, std::path::PathBuf)> {
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let v = serde_json::from_slice(&text)
        .map_err(|e| Error::malformed(path, format!("not valid JSON: {e}")))?;
    Ok((v, path.to_path_buf()))
}

/// The first of `keys` present in `cfg` as an unsigned integer.
fn first_u64(cfg: &Value, keys: &[&str]) -> Option<u64> {
    keys.iter().find_map(|k| cfg.get(k).and_then(Value::as_u64))
}

fn first_f64(cfg: &Value, keys: &[&str]) -> Option<f64> {
    keys.iter().find_map(|k| cfg.get(k).and_then(Value::as_f64))
}

/// `general.architecture` and the `{arch}.*` hyper-parameters.
fn add_architecture(m: &mut Metadata, cfg: &Value, path: &Path) -> Result<()> {
    let Some(arch) = cfg.get("model_type").and_then(Value::as_str) else {
        return Ok(());
    };
    if arch.is_empty()
        || !arch
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(Error::malformed(
            path,
            format!("`model_type` {arch:?} is not an architecture name"),
        ));
    }
    m.insert(
        "general.architecture".into(),
        MetaValue::String(arch.to_string()),
    );
    let u32s: [(&str, &[&str]); 8] = [
        (
            "context_length",
            &[
                "max_position_embeddings",
                "n_positions",
                "n_ctx",
                "max_seq_len",
            ],
        ),
        ("embedding_length", &["hidden_size", "n_embd", "d_model"]),
        (
            "block_count",
            &["num_hidden_layers", "n_layer", "num_layers"],
        ),
        (
            "feed_forward_length",
            &["intermediate_size", "n_inner", "d_ff"],
        ),
        (
            "attention.head_count",
            &["num_attention_heads", "n_head", "num_heads"],
        ),
        ("attention.head_count_kv", &["num_key_value_heads"]),
        // An explicit head size (Mistral Nemo's is not hidden / heads).
        ("attention.key_length", &["head_dim"]),
        ("attention.value_length", &["head_dim"]),
    ];
    for (key, names) in u32s {
        if let Some(v) = first_u64(cfg, names).and_then(|v| u32::try_from(v).ok()) {
            m.insert(format!("{arch}.{key}"), MetaValue::U32(v));
        }
    }
    // llama.cpp's LlamaModel (Llama, Mistral) writes the config's vocabulary size; the
    // tokenizer's token count stays the fallback (`as_llama_cpp_arch`), so a folder without a
    // tokenizer still tells transformers' GGUF loader the size (it assumes 32000 otherwise).
    if matches!(arch, "llama" | "mistral") {
        if let Some(v) = first_u64(cfg, &["vocab_size"]).and_then(|v| u32::try_from(v).ok()) {
            m.insert(format!("{arch}.vocab_size"), MetaValue::U32(v));
        }
    }
    let f32s: [(&str, &[&str]); 3] = [
        (
            "attention.layer_norm_epsilon",
            &["layer_norm_eps", "layer_norm_epsilon"],
        ),
        ("attention.layer_norm_rms_epsilon", &["rms_norm_eps"]),
        ("rope.freq_base", &["rope_theta"]),
    ];
    for (key, names) in f32s {
        if let Some(v) = first_f64(cfg, names) {
            m.insert(format!("{arch}.{key}"), MetaValue::F32(v as f32));
        }
    }
    // transformers 5 writes the rotary base under `rope_parameters`; without it llama.cpp,
    // candle and transformers' GGUF loader all fall back to 10000 and the model drifts.
    let nested_theta = cfg
        .get("rope_parameters")
        .and_then(|p| p.get("rope_theta"))
        .and_then(Value::as_f64);
    if let (None, Some(v)) = (m.get(&format!("{arch}.rope.freq_base")), nested_theta) {
        m.insert(format!("{arch}.rope.freq_base"), MetaValue::F32(v as f32));
    }
    if matches!(
        arch,
        "bert" | "roberta" | "nomic_bert" | "jina_bert_v2" | "modernbert"
    ) {
        m.insert(format!("{arch}.attention.causal"), MetaValue::Bool(false));
    }
    Ok(())
}

/// The tokenizer model of a `tokenizer.json`, in llama.cpp's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// WordPiece (BERT): llama.cpp `bert`.
    WordPiece,
    /// Byte-level BPE (GPT-2, Llama 3): llama.cpp `gpt2`.
    Gpt2,
    /// SentencePiece BPE with byte fallback (Llama 2, Mistral): llama.cpp `llama`.
    Spm,
    /// Unigram (T5, XLM-R): llama.cpp `t5`.
    Unigram,
}

impl Kind {
    fn ggml_name(self) -> &'static str {
        match self {
            Kind::WordPiece => "bert",
            Kind::Gpt2 => "gpt2",
            Kind::Spm => "llama",
            Kind::Unigram => "t5",
        }
    }
}

/// One vocabulary slot.
#[derive(Debug, Clone)]
struct Slot {
    text: String,
    score: f32,
    ty: i32,
}

type Res<T> = std::result::Result<T, String>;

/// ferry's hashed character n-gram features (a classifier trained by ferry, in place of a
/// `tokenizer.json`) as `ferry.char_ngrams.*` keys, so the file records how its inputs are
/// made (llama.cpp has no such tokenizer; ferry runs the model from its folder, whose n-gram
/// file travels beside the GGUF).
fn add_char_ngrams(m: &mut Metadata, tok: &Value) -> Res<()> {
    for k in ["min_n", "max_n", "buckets"] {
        let v = tok
            .get(k)
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| format!("char n-gram file without a valid `{k}`"))?;
        m.insert(format!("ferry.char_ngrams.{k}"), MetaValue::U32(v));
    }
    for k in ["words", "lowercase"] {
        let v = tok.get(k).and_then(Value::as_bool).unwrap_or(true);
        m.insert(format!("ferry.char_ngrams.{k}"), MetaValue::Bool(v));
    }
    Ok(())
}

fn add_tokenizer(m: &mut Metadata, tok: &Value, cfg: Option<&Value>) -> Res<()> {
    let model = tok.get("model").ok_or("no `model` object")?;
    let kind = match model.get("type").and_then(Value::as_str) {
        Some("WordPiece") => Kind::WordPiece,
        Some("BPE") if model.get("byte_fallback").and_then(Value::as_bool) == Some(true) => {
            Kind::Spm
        }
        Some("BPE") => Kind::Gpt2,
        Some("Unigram") => Kind::Unigram,
        // Old WordPiece files have no `type`, only `continuing_subword_prefix`.
        None if model.get("continuing_subword_prefix").is_some() => Kind::WordPiece,
        other => {
            return Err(format!(
                "tokenizer model type {other:?} is not supported (WordPiece, BPE, Unigram)"
            ))
        }
    };
    let mut slots = base_vocab(model, kind)?;
    add_added_tokens(&mut slots, tok)?;
    let unk = model
        .get("unk_token")
        .and_then(Value::as_str)
        .map(str::to_string);
    let unk_id = match (kind, model.get("unk_id").and_then(Value::as_u64)) {
        (Kind::Unigram, Some(id)) => usize::try_from(id).ok(),
        _ => unk.as_deref().and_then(|u| find(&slots, u)),
    };
    if let Some(s) = unk_id
        .and_then(|i| slots.get_mut(i))
        .and_then(Option::as_mut)
    {
        s.ty = token_type::UNKNOWN;
    }
    let ids = special_ids(&slots, tok, cfg, unk_id);
    let slots = fill_holes(slots);
    m.insert(
        "tokenizer.ggml.model".into(),
        MetaValue::String(kind.ggml_name().into()),
    );
    let pre = match kind {
        Kind::Gpt2 => Some(gpt2_pre(tok)),
        Kind::WordPiece => Some("default"),
        _ => None,
    };
    if let Some(pre) = pre {
        m.insert("tokenizer.ggml.pre".into(), MetaValue::String(pre.into()));
    }
    let texts: Vec<MetaValue> = slots
        .iter()
        .map(|s| {
            let t = if kind == Kind::WordPiece {
                phantom(&s.text)
            } else {
                s.text.clone()
            };
            MetaValue::String(t)
        })
        .collect();
    m.insert("tokenizer.ggml.tokens".into(), MetaValue::Array(texts));
    let types = slots.iter().map(|s| MetaValue::I32(s.ty)).collect();
    m.insert("tokenizer.ggml.token_type".into(), MetaValue::Array(types));
    if matches!(kind, Kind::Spm | Kind::Unigram) {
        let scores = slots.iter().map(|s| MetaValue::F32(s.score)).collect();
        m.insert("tokenizer.ggml.scores".into(), MetaValue::Array(scores));
    }
    if matches!(kind, Kind::Gpt2 | Kind::Spm) {
        m.insert(
            "tokenizer.ggml.merges".into(),
            MetaValue::Array(merges(model)?),
        );
    }
    for (key, id) in ids {
        m.insert(format!("tokenizer.ggml.{key}"), MetaValue::U32(id));
    }
    add_template_flags(m, tok);
    Ok(())
}

/// llama.cpp's WordPiece convention ("phantom space"): `##x` becomes `x`, a word-initial
/// token `x` becomes `▁x`, bracketed specials (`[CLS]`) stay as they are.
fn phantom(tok: &str) -> String {
    if tok.starts_with('[') && tok.ends_with(']') {
        tok.to_string()
    } else if let Some(rest) = tok.strip_prefix("##") {
        rest.to_string()
    } else {
        format!("\u{2581}{tok}")
    }
}

/// The model's own vocabulary, indexed by id (holes are `None`).
fn base_vocab(model: &Value, kind: Kind) -> Res<Vec<Option<Slot>>> {
    let vocab = model
        .get("vocab")
        .ok_or("the tokenizer model has no `vocab`")?;
    let mut slots: Vec<Option<Slot>> = Vec::new();
    if kind == Kind::Unigram {
        let list = vocab.as_array().ok_or("Unigram `vocab` is not a list")?;
        for (id, pair) in list.iter().enumerate() {
            let text = pair
                .get(0)
                .and_then(Value::as_str)
                .ok_or("Unigram vocab entry is not [token, score]")?;
            let score = pair.get(1).and_then(Value::as_f64).unwrap_or(0.0) as f32;
            put(&mut slots, id, normal(text, score, kind))?;
        }
        return Ok(slots);
    }
    let map = vocab
        .as_object()
        .ok_or("`vocab` is not an object of token -> id")?;
    for (text, id) in map {
        let id = id
            .as_u64()
            .and_then(|i| usize::try_from(i).ok())
            .ok_or_else(|| format!("token {text:?} has no integer id"))?;
        // SentencePiece BPE has no scores in tokenizer.json: rank by id, as llama.cpp's HF path does.
        put(&mut slots, id, normal(text, -(id as f32), kind))?;
    }
    Ok(slots)
}

fn normal(text: &str, score: f32, kind: Kind) -> Slot {
    let is_byte =
        kind == Kind::Spm && text.len() == 6 && text.starts_with("<0x") && text.ends_with('>');
    Slot {
        text: text.to_string(),
        score,
        ty: if is_byte {
            token_type::BYTE
        } else {
            token_type::NORMAL
        },
    }
}

fn put(slots: &mut Vec<Option<Slot>>, id: usize, slot: Slot) -> Res<()> {
    if id >= MAX_VOCAB {
        return Err(format!(
            "token id {id} is beyond ferry's limit of {MAX_VOCAB}"
        ));
    }
    if id >= slots.len() {
        slots.resize(id + 1, None);
    }
    slots[id] = Some(slot);
    Ok(())
}

/// Adds `added_tokens` (special ones are CONTROL, others USER_DEFINED).
fn add_added_tokens(slots: &mut Vec<Option<Slot>>, tok: &Value) -> Res<()> {
    let Some(list) = tok.get("added_tokens").and_then(Value::as_array) else {
        return Ok(());
    };
    for t in list {
        let text = t
            .get("content")
            .and_then(Value::as_str)
            .ok_or("an added token has no `content`")?;
        let id = t
            .get("id")
            .and_then(Value::as_u64)
            .and_then(|i| usize::try_from(i).ok())
            .ok_or_else(|| format!("added token {text:?} has no integer id"))?;
        let special = t.get("special").and_then(Value::as_bool).unwrap_or(false);
        let score = slots
            .get(id)
            .and_then(|s| s.as_ref())
            .map(|s| s.score)
            .unwrap_or(0.0);
        let ty = if special {
            token_type::CONTROL
        } else {
            token_type::USER_DEFINED
        };
        put(
            slots,
            id,
            Slot {
                text: text.to_string(),
                score,
                ty,
            },
        )?;
    }
    Ok(())
}

/// Fills ids no token uses with `[PAD{id}]`, UNUSED, as llama.cpp does.
fn fill_holes(slots: Vec<Option<Slot>>) -> Vec<Slot> {
    slots
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            s.unwrap_or_else(|| Slot {
                text: format!("[PAD{i}]"),
                score: 0.0,
                ty: token_type::UNUSED,
            })
        })
        .collect()
}

fn find(slots: &[Option<Slot>], text: &str) -> Option<usize> {
    slots
        .iter()
        .position(|s| s.as_ref().is_some_and(|s| s.text == text))
}

/// Special token ids: from `config.json` where it gives them, else by their usual spelling.
fn special_ids(
    slots: &[Option<Slot>],
    tok: &Value,
    cfg: Option<&Value>,
    unk: Option<usize>,
) -> Vec<(&'static str, u32)> {
    let from_cfg = |k: &str| -> Option<usize> {
        let v = cfg?.get(k)?;
        let id = v.as_u64().or_else(|| v.as_array()?.first()?.as_u64())?;
        usize::try_from(id).ok().filter(|&i| i < slots.len())
    };
    let by_name = |names: &[&str]| names.iter().find_map(|n| find(slots, n));
    let pad_from_tok = tok
        .get("padding")
        .and_then(|p| p.get("pad_id"))
        .and_then(Value::as_u64)
        .and_then(|i| usize::try_from(i).ok());
    let mut out: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut set = |k: &'static str, v: Option<usize>| {
        if let Some(v) = v {
            out.insert(k, v);
        }
    };
    set(
        "bos_token_id",
        from_cfg("bos_token_id").or_else(|| {
            by_name(&[
                "[CLS]",
                "<s>",
                "<|begin_of_text|>",
                "<bos>",
                "<|startoftext|>",
                "<|endoftext|>",
            ])
        }),
    );
    set(
        "eos_token_id",
        from_cfg("eos_token_id").or_else(|| {
            by_name(&[
                "[SEP]",
                "</s>",
                "<|end_of_text|>",
                "<eos>",
                "<|endoftext|>",
                "<|im_end|>",
            ])
        }),
    );
    set(
        "unknown_token_id",
        unk.or_else(|| by_name(&["[UNK]", "<unk>"])),
    );
    set(
        "seperator_token_id",
        from_cfg("sep_token_id").or_else(|| by_name(&["[SEP]"])),
    );
    set(
        "padding_token_id",
        from_cfg("pad_token_id")
            .or(pad_from_tok)
            .or_else(|| by_name(&["[PAD]", "<pad>"])),
    );
    set("mask_token_id", by_name(&["[MASK]", "<mask>"]));
    out.into_iter()
        .filter_map(|(k, v)| u32::try_from(v).ok().map(|v| (k, v)))
        .collect()
}

/// `tokenizer.ggml.add_bos_token` / `add_eos_token` from a `TemplateProcessing` post-processor.
fn add_template_flags(m: &mut Metadata, tok: &Value) {
    let Some(pp) = tok.get("post_processor") else {
        return;
    };
    let pp = match pp.get("type").and_then(Value::as_str) {
        Some("TemplateProcessing") => pp,
        Some("Sequence") => match pp
            .get("processors")
            .and_then(Value::as_array)
            .and_then(|ps| {
                ps.iter()
                    .find(|p| p.get("type").and_then(Value::as_str) == Some("TemplateProcessing"))
            }) {
            Some(p) => p,
            None => return,
        },
        _ => return,
    };
    let Some(single) = pp.get("single").and_then(Value::as_array) else {
        return;
    };
    let is_special = |v: Option<&Value>| v.is_some_and(|v| v.get("SpecialToken").is_some());
    m.insert(
        "tokenizer.ggml.add_bos_token".into(),
        MetaValue::Bool(is_special(single.first())),
    );
    m.insert(
        "tokenizer.ggml.add_eos_token".into(),
        MetaValue::Bool(is_special(single.last())),
    );
}

/// BPE merges as `"a b"` strings (tokenizer.json holds strings or, lately, pairs).
fn merges(model: &Value) -> Res<Vec<MetaValue>> {
    let Some(list) = model.get("merges").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|m| match m {
            Value::String(s) => Ok(MetaValue::String(s.clone())),
            Value::Array(p) if p.len() == 2 => match (p[0].as_str(), p[1].as_str()) {
                (Some(a), Some(b)) => Ok(MetaValue::String(format!("{a} {b}"))),
                _ => Err("a merge pair is not two strings".to_string()),
            },
            _ => Err("a merge is neither a string nor a pair".to_string()),
        })
        .collect()
}

/// Puts the metadata of a Hugging Face `model_type` under llama.cpp's architecture name for
/// its `family` (Mistral is `llama` there): `general.architecture` and every `{model_type}.*`
/// key move, and the keys llama.cpp derives in `convert_hf_to_gguf.py` are added (the rotary
/// dimension of Llama-family models; the pooling of BERT sentence encoders).
pub(crate) fn as_llama_cpp_arch(m: &mut Metadata, family: Family) {
    let arch = family.gguf_arch();
    let from = m
        .get("general.architecture")
        .and_then(MetaValue::as_str)
        .map(str::to_string);
    if let Some(from) = from.filter(|f| f != arch) {
        let prefix = format!("{from}.");
        let moved: Vec<String> = m
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        for k in moved {
            if let Some(v) = m.remove(&k) {
                m.insert(format!("{arch}.{}", &k[prefix.len()..]), v);
            }
        }
    }
    m.insert(
        "general.architecture".into(),
        MetaValue::String(arch.into()),
    );
    let get = |m: &Metadata, k: &str| m.get(&format!("{arch}.{k}")).and_then(MetaValue::as_u64);
    let vocab = m.get("tokenizer.ggml.tokens").and_then(|t| match t {
        MetaValue::Array(a) => Some(a.len()),
        _ => None,
    });
    if let Some(n) = vocab.and_then(|n| u32::try_from(n).ok()) {
        m.entry(format!("{arch}.vocab_size"))
            .or_insert(MetaValue::U32(n));
    }
    match family {
        Family::Llama | Family::Qwen2 => {
            let (e, h) = (get(m, "embedding_length"), get(m, "attention.head_count"));
            if let (Some(e), Some(h)) = (e, h.filter(|&h| h > 0)) {
                let head_dim = get(m, "attention.key_length").unwrap_or(e / h);
                m.entry(format!("{arch}.rope.dimension_count"))
                    .or_insert(MetaValue::U32(head_dim as u32));
                // transformers un-permutes K by this count and silently skips it when absent.
                m.entry(format!("{arch}.attention.head_count_kv"))
                    .or_insert(MetaValue::U32(h as u32));
            }
        }
        Family::Bert => {
            // Sentence encoders (all-MiniLM and kin) mean-pool: llama.cpp's pooling type 1.
            m.entry(format!("{arch}.pooling_type"))
                .or_insert(MetaValue::U32(1));
            m.entry("tokenizer.ggml.token_type_count".into())
                .or_insert(MetaValue::U32(2));
        }
    }
}

/// llama.cpp's pre-tokenizer name (`tokenizer.ggml.pre`) for a byte-level BPE `tokenizer.json`.
/// llama.cpp picks it by hashing the tokenization of a test text; ferry reads the
/// pre-tokenizer the hash stands for: GPT-2's regex alone is `gpt-2`, single digits split
/// before it is SmolLM's `smollm`, anything else `default` (llama.cpp's GPT-2-like fallback,
/// which may split some text differently: Llama 3's and Qwen2's regexes are not told apart yet).
fn gpt2_pre(tok: &Value) -> &'static str {
    let Some(pre) = tok.get("pre_tokenizer") else {
        return "default";
    };
    let kind = |v: &Value| {
        v.get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let byte_level = |v: &Value| {
        kind(v) == "ByteLevel" && v.get("use_regex").and_then(Value::as_bool) != Some(false)
    };
    if byte_level(pre) {
        return "gpt-2";
    }
    let Some(steps) = pre.get("pretokenizers").and_then(Value::as_array) else {
        return "default";
    };
    let digits = steps.iter().any(|s| {
        kind(s) == "Digits" && s.get("individual_digits").and_then(Value::as_bool) == Some(true)
    });
    match (steps.len(), digits, steps.last().is_some_and(byte_level)) {
        (2, true, true) => "smollm",
        _ => "default",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer_json() -> Value {
        serde_json::json!({
            "added_tokens": [
                {"id": 0, "content": "[PAD]", "special": true},
                {"id": 1, "content": "[UNK]", "special": true},
                {"id": 2, "content": "[CLS]", "special": true},
                {"id": 3, "content": "[SEP]", "special": true},
                {"id": 4, "content": "[MASK]", "special": true}
            ],
            "post_processor": {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "[CLS]"}}, {"Sequence": {"id": "A"}}, {"SpecialToken": {"id": "[SEP]"}}]},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4, "hello": 5, "##lo": 7}}
        })
    }

    #[test]
    fn llama_family_vocab_size_comes_from_the_config() {
        let cfg =
            serde_json::json!({"model_type": "mistral", "vocab_size": 512, "hidden_size": 32});
        let mut m = Metadata::new();
        add_architecture(&mut m, &cfg, Path::new("config.json")).unwrap();
        as_llama_cpp_arch(&mut m, crate::formats::gguf::names::Family::Llama);
        assert_eq!(m["llama.vocab_size"], MetaValue::U32(512));
        // llama.cpp's Qwen2 converter writes none.
        let cfg = serde_json::json!({"model_type": "qwen2", "vocab_size": 512});
        let mut m = Metadata::new();
        add_architecture(&mut m, &cfg, Path::new("config.json")).unwrap();
        assert!(!m.contains_key("qwen2.vocab_size"));
    }

    #[test]
    fn wordpiece_to_llama_cpp_bert() {
        let mut m = Metadata::new();
        add_tokenizer(&mut m, &tokenizer_json(), None).unwrap();
        assert_eq!(m["tokenizer.ggml.model"], MetaValue::String("bert".into()));
        let MetaValue::Array(toks) = &m["tokenizer.ggml.tokens"] else {
            panic!()
        };
        let toks: Vec<&str> = toks.iter().map(|t| t.as_str().unwrap()).collect();
        assert_eq!(
            toks,
            [
                "[PAD]",
                "[UNK]",
                "[CLS]",
                "[SEP]",
                "[MASK]",
                "\u{2581}hello",
                "[PAD6]",
                "lo"
            ]
        );
        let MetaValue::Array(types) = &m["tokenizer.ggml.token_type"] else {
            panic!()
        };
        assert_eq!(types[1], MetaValue::I32(token_type::UNKNOWN));
        assert_eq!(types[2], MetaValue::I32(token_type::CONTROL));
        assert_eq!(types[5], MetaValue::I32(token_type::NORMAL));
        assert_eq!(types[6], MetaValue::I32(token_type::UNUSED));
        for (k, v) in [
            ("bos", 2),
            ("eos", 3),
            ("unknown", 1),
            ("seperator", 3),
            ("padding", 0),
            ("mask", 4),
        ] {
            assert_eq!(
                m[&format!("tokenizer.ggml.{k}_token_id")],
                MetaValue::U32(v),
                "{k}"
            );
        }
        assert_eq!(m["tokenizer.ggml.add_bos_token"], MetaValue::Bool(true));
        assert!(!m.contains_key("tokenizer.ggml.merges"));
    }

    #[test]
    fn bpe_merges_both_spellings_and_hostile_ids() {
        let tok = serde_json::json!({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2},
            "merges": ["a b", ["ab", "b"]]}});
        let mut m = Metadata::new();
        add_tokenizer(
            &mut m,
            &tok,
            Some(&serde_json::json!({"eos_token_id": [2, 1]})),
        )
        .unwrap();
        assert_eq!(m["tokenizer.ggml.model"], MetaValue::String("gpt2".into()));
        assert_eq!(
            m["tokenizer.ggml.merges"],
            MetaValue::Array(vec![
                MetaValue::String("a b".into()),
                MetaValue::String("ab b".into())
            ])
        );
        assert_eq!(m["tokenizer.ggml.eos_token_id"], MetaValue::U32(2));
        let bad = serde_json::json!({"model": {"type": "BPE", "vocab": {"a": 1u64 << 40}}});
        assert!(add_tokenizer(&mut Metadata::new(), &bad, None)
            .unwrap_err()
            .contains("limit"));
    }

    #[test]
    fn real_minilm_folder() {
        let Some(dir) = ferry_testkit::minilm() else {
            return;
        };
        let m = hf_metadata(
            Some(&dir.join("config.json")),
            Some(&dir.join("tokenizer.json")),
            "all-MiniLM-L6-v2",
        )
        .unwrap();
        assert_eq!(m["general.architecture"], MetaValue::String("bert".into()));
        assert_eq!(m["bert.block_count"], MetaValue::U32(6));
        assert_eq!(m["bert.embedding_length"], MetaValue::U32(384));
        assert_eq!(
            m["bert.attention.layer_norm_epsilon"],
            MetaValue::F32(1e-12)
        );
        let MetaValue::Array(toks) = &m["tokenizer.ggml.tokens"] else {
            panic!()
        };
        assert_eq!(toks.len(), 30522);
        assert_eq!(toks[101], MetaValue::String("[CLS]".into()));
        // gguf-py's SpecialVocab on this folder gives bos 101, eos 102, unk 100, sep 102, pad 0, mask 103.
        for (k, v) in [
            ("bos", 101),
            ("eos", 102),
            ("unknown", 100),
            ("seperator", 102),
            ("padding", 0),
            ("mask", 103),
        ] {
            assert_eq!(
                m[&format!("tokenizer.ggml.{k}_token_id")],
                MetaValue::U32(v),
                "{k}"
            );
        }
    }
}
