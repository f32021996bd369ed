//! Architecture detection and configuration, normalized across transformers versions and read
//! alike from a Hugging Face `config.json` and from a GGUF's `{arch}.*` metadata.

use std::path::Path;

use candle_transformers::models::bert;
use ferry_io::meta::{MetaValue, Metadata};
use serde_json::Value;

use crate::error::{Error, Result};

/// What the runtime runs, for error messages.
pub const SUPPORTED: &str = "Llama-family decoders (llama, mistral, qwen2; GGUF llama, qwen2), \
                             BERT-family encoders (bert, xlm-roberta, roberta, distilbert; \
                             GGUF bert), classifiers trained by ferry \
                             (a folder with ferry-model.json) and ONNX graphs taking input_ids";

/// A Llama-family decoder's hyper-parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DecoderConfig {
    /// Hidden size.
    pub hidden: usize,
    /// Feed-forward size.
    pub intermediate: usize,
    /// Number of blocks.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// RMS norm epsilon.
    pub rms_eps: f64,
    /// Rotary base frequency.
    pub rope_theta: f64,
    /// Vocabulary size.
    pub vocab: usize,
    /// Whether the output head is the token embedding.
    pub tied: bool,
    /// Whether Q/K/V projections must have biases (Qwen2); other biases are read when present.
    pub qkv_bias: bool,
    /// Mistral's sliding window: a query sees itself and the `n - 1` keys before it (as
    /// transformers' `sliding_window`); `None` is full causal attention (llama.cpp's `llama`).
    pub sliding_window: Option<usize>,
}

/// What kind of model a checkpoint holds.
#[derive(Debug, Clone)]
pub enum ArchConfig {
    /// A causal decoder producing next-token logits.
    Decoder(DecoderConfig),
    /// A BERT-family encoder producing hidden states, its blocks run by candle-transformers'
    /// `BertEncoder`.
    Encoder(EncoderConfig),
    /// A classifier trained by ferry (a ferry model folder), producing class logits.
    Classifier(ClassifierConfig),
    /// An ONNX graph taking token ids, run by ferry-graph's executor.
    Graph(GraphConfig),
}

/// An ONNX graph exported from a language model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GraphConfig {
    /// The output compared (the graph's first).
    pub output: String,
    /// Whether that output is next-token logits (else hidden states): from the `config.json`
    /// beside the graph when there is one, else from the output's name (`logits`).
    pub decoder: bool,
}

/// Which BERT-family encoder a checkpoint holds: the blocks compute the same (post-LN BERT
/// layers); tensor names and position ids differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderFamily {
    /// BERT (`bert`): positions `0..seq`, token-type embeddings, names `[bert.]embeddings.*`,
    /// `encoder.layer.N.*`.
    Bert,
    /// RoBERTa and XLM-RoBERTa (`roberta`, `xlm-roberta`): BERT's names under `[roberta.]`;
    /// positions count real tokens from `pad_token_id + 1` (padding gets `pad_token_id`).
    Roberta,
    /// DistilBERT (`distilbert`): positions `0..seq`, no token types, names
    /// `[distilbert.]embeddings.*`, `transformer.layer.N.{attention.q_lin, ffn.lin1, ...}`.
    DistilBert,
}

impl EncoderFamily {
    /// The family's name, for reports.
    pub fn name(self) -> &'static str {
        match self {
            EncoderFamily::Bert => "bert",
            EncoderFamily::Roberta => "roberta",
            EncoderFamily::DistilBert => "distilbert",
        }
    }
}

/// A BERT-family encoder's hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    /// Which family (tensor names, position ids).
    pub family: EncoderFamily,
    /// The hyper-parameters in candle-transformers' form (DistilBERT's keys mapped to BERT's);
    /// `pad_token_id` is RoBERTa's position `padding_idx`.
    pub bert: bert::Config,
}

/// A ferry-trained classifier, as its model card describes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClassifierConfig {
    /// The network (`bag`, `transformer`, `bert`).
    pub arch: String,
    /// The class names, in output order.
    pub classes: Vec<String>,
    /// Whether the classes are languages (language identification): a probe's language is then
    /// its true class.
    pub classes_are_languages: bool,
    /// Whether the tokenizer's special tokens are added.
    pub add_special_tokens: bool,
    /// Inputs are truncated to this many tokens.
    pub max_len: usize,
}

impl ArchConfig {
    /// The architecture's name, for reports.
    pub fn name(&self) -> &'static str {
        match self {
            ArchConfig::Decoder(_) => "llama-family decoder",
            ArchConfig::Encoder(c) => match c.family {
                EncoderFamily::Bert => "bert encoder",
                EncoderFamily::Roberta => "roberta encoder",
                EncoderFamily::DistilBert => "distilbert encoder",
            },
            ArchConfig::Classifier(_) => "classifier trained by ferry",
            ArchConfig::Graph(g) if g.decoder => "onnx graph (decoder logits)",
            ArchConfig::Graph(_) => "onnx graph (hidden states)",
        }
    }
}

fn cfg_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Config {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// The error for an architecture the runtime does not run (`key` names where it was read).
fn unsupported(path: &Path, arch: &str, key: &str) -> Error {
    Error::Unsupported {
        path: path.to_path_buf(),
        arch: if arch.is_empty() {
            format!("(no {key})")
        } else {
            arch.into()
        },
        supported: SUPPORTED,
    }
}

/// candle-transformers' BERT config from `[vocab, hidden, layers, heads, intermediate,
/// max_positions, type_vocab, pad_id]`, the activation and the layer-norm epsilon
/// (inference: no dropout).
fn bert_config(n: [usize; 8], act: bert::HiddenAct, eps: f64) -> bert::Config {
    bert::Config {
        vocab_size: n[0],
        hidden_size: n[1],
        num_hidden_layers: n[2],
        num_attention_heads: n[3],
        intermediate_size: n[4],
        hidden_act: act,
        hidden_dropout_prob: 0.0,
        max_position_embeddings: n[5],
        type_vocab_size: n[6],
        initializer_range: 0.02,
        layer_norm_eps: eps,
        pad_token_id: n[7],
        position_embedding_type: bert::PositionEmbeddingType::Absolute,
        use_cache: false,
        classifier_dropout: None,
        model_type: Some("bert".into()),
    }
}

/// An encoder's activation from `key` (`hidden_act`, DistilBERT's `activation`), default GELU:
/// `gelu` is transformers' erf form, `gelu_new`/`gelu_pytorch_tanh` the tanh approximation.
fn hidden_act(cfg: &Value, key: &str, path: &Path) -> Result<bert::HiddenAct> {
    match cfg.get(key).and_then(Value::as_str).unwrap_or("gelu") {
        "gelu" => Ok(bert::HiddenAct::Gelu),
        "gelu_new" | "gelu_pytorch_tanh" => Ok(bert::HiddenAct::GeluApproximate),
        "relu" => Ok(bert::HiddenAct::Relu),
        other => Err(cfg_err(path, format!("{key} `{other}` is not supported"))),
    }
}

/// Reads and normalizes a Hugging Face `config.json`.
pub fn from_config_json(path: &Path) -> Result<ArchConfig> {
    let text = std::fs::read(path).map_err(|e| ferry_io::FileError::io(path, e))?;
    let cfg: Value =
        serde_json::from_slice(&text).map_err(|e| cfg_err(path, format!("not valid JSON: {e}")))?;
    from_json(&cfg, path)
}

/// The `rope_theta` of a config in either transformers form: top level (transformers 4) or
/// under `rope_parameters` (transformers 5). Scaled rotary embeddings are refused by name.
pub fn rope_theta(cfg: &Value, path: &Path) -> Result<f64> {
    let params = cfg
        .get("rope_parameters")
        .or_else(|| cfg.get("rope_scaling"));
    if let Some(p) = params.filter(|p| !p.is_null()) {
        let kind = p
            .get("rope_type")
            .or_else(|| p.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        if kind != "default" {
            return Err(cfg_err(
                path,
                format!("rotary scaling `{kind}` is not supported yet (only `default`)"),
            ));
        }
    }
    Ok(cfg
        .get("rope_theta")
        .and_then(Value::as_f64)
        .or_else(|| params?.get("rope_theta")?.as_f64())
        .unwrap_or(10_000.0))
}

/// The sliding window of a decoder's `config.json`: Mistral's `sliding_window` (every layer;
/// `null` in Mistral v0.2 and later). Qwen2's sliding-window layers (`use_sliding_window`: the
/// `layer_types` marked `sliding_attention`, or the layers from `max_window_layers` on) are
/// refused by name rather than run as full attention.
fn sliding_window(cfg: &Value, model_type: &str, path: &Path) -> Result<Option<usize>> {
    match model_type {
        "mistral" => match cfg.get("sliding_window").filter(|v| !v.is_null()) {
            None => Ok(None),
            Some(v) => match v.as_u64().filter(|&n| n > 0) {
                Some(n) => Ok(Some(n as usize)),
                None => Err(cfg_err(
                    path,
                    format!("`sliding_window` {v} is not a positive whole number"),
                )),
            },
        },
        "qwen2" => {
            let sliding = match cfg.get("layer_types").and_then(Value::as_array) {
                Some(types) => types.iter().any(|t| t == "sliding_attention"),
                None => {
                    let layers = cfg.get("num_hidden_layers").and_then(Value::as_u64);
                    let from = cfg.get("max_window_layers").and_then(Value::as_u64);
                    cfg.get("use_sliding_window").and_then(Value::as_bool) == Some(true)
                        && from.unwrap_or(0) < layers.unwrap_or(u64::MAX)
                }
            };
            if sliding {
                return Err(cfg_err(
                    path,
                    "Qwen2 sliding-window attention layers (`use_sliding_window`) are not \
                     supported yet",
                ));
            }
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// Normalizes a parsed `config.json`.
pub fn from_json(cfg: &Value, path: &Path) -> Result<ArchConfig> {
    let model_type = cfg.get("model_type").and_then(Value::as_str).unwrap_or("");
    match model_type {
        "llama" | "mistral" | "qwen2" => decoder_from_json(cfg, model_type, path),
        "bert" | "xlm-roberta" | "roberta" => bert_from_json(cfg, model_type, path),
        "distilbert" => distilbert_from_json(cfg, path),
        other => Err(unsupported(path, other, "model_type")),
    }
}

/// The whole number at `config.json` key `k`.
fn json_usize(cfg: &Value, k: &str, path: &Path) -> Result<usize> {
    cfg.get(k)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| cfg_err(path, format!("`{k}` is missing or not a whole number")))
}

/// The number at `config.json` key `k`.
fn json_f64(cfg: &Value, k: &str, path: &Path) -> Result<f64> {
    cfg.get(k)
        .and_then(Value::as_f64)
        .ok_or_else(|| cfg_err(path, format!("`{k}` is missing or not a number")))
}

/// A Llama-family decoder's `config.json` (`model_type` `llama`, `mistral` or `qwen2`).
fn decoder_from_json(cfg: &Value, model_type: &str, path: &Path) -> Result<ArchConfig> {
    let u = |k: &str| json_usize(cfg, k, path);
    let heads = u("num_attention_heads")?;
    let hidden = u("hidden_size")?;
    let act = cfg
        .get("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or("silu");
    if act != "silu" {
        return Err(cfg_err(
            path,
            format!("hidden_act `{act}`: only silu is supported"),
        ));
    }
    Ok(ArchConfig::Decoder(DecoderConfig {
        hidden,
        intermediate: u("intermediate_size")?,
        layers: u("num_hidden_layers")?,
        heads,
        kv_heads: u("num_key_value_heads").unwrap_or(heads),
        head_dim: u("head_dim").unwrap_or(hidden / heads.max(1)),
        rms_eps: json_f64(cfg, "rms_norm_eps", path)?,
        rope_theta: rope_theta(cfg, path)?,
        vocab: u("vocab_size")?,
        tied: cfg
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        qkv_bias: model_type == "qwen2"
            || cfg.get("attention_bias").and_then(Value::as_bool) == Some(true),
        sliding_window: sliding_window(cfg, model_type, path)?,
    }))
}

/// A BERT or RoBERTa (XLM-RoBERTa) encoder's `config.json`: absolute positions only.
fn bert_from_json(cfg: &Value, model_type: &str, path: &Path) -> Result<ArchConfig> {
    let u = |k: &str| json_usize(cfg, k, path);
    let (family, pad) = match model_type {
        "bert" => (EncoderFamily::Bert, 0),
        _ => (EncoderFamily::Roberta, 1),
    };
    let act = hidden_act(cfg, "hidden_act", path)?;
    let pos = cfg.get("position_embedding_type").and_then(Value::as_str);
    if let Some(other) = pos.filter(|p| *p != "absolute") {
        return Err(cfg_err(
            path,
            format!("position_embedding_type `{other}`: only absolute is supported"),
        ));
    }
    Ok(ArchConfig::Encoder(EncoderConfig {
        family,
        bert: bert_config(
            [
                u("vocab_size")?,
                u("hidden_size")?,
                u("num_hidden_layers")?,
                u("num_attention_heads")?,
                u("intermediate_size")?,
                u("max_position_embeddings")?,
                u("type_vocab_size").unwrap_or(2),
                u("pad_token_id").unwrap_or(pad),
            ],
            act,
            json_f64(cfg, "layer_norm_eps", path).unwrap_or(1e-12),
        ),
    }))
}

/// A DistilBERT encoder's `config.json`, its keys mapped to BERT's.
fn distilbert_from_json(cfg: &Value, path: &Path) -> Result<ArchConfig> {
    let u = |k: &str| json_usize(cfg, k, path);
    // DistilBERT's LayerNorms are built with eps 1e-12 whatever the config says.
    let act = hidden_act(cfg, "activation", path)?;
    Ok(ArchConfig::Encoder(EncoderConfig {
        family: EncoderFamily::DistilBert,
        bert: bert_config(
            [
                u("vocab_size")?,
                u("dim")?,
                u("n_layers")?,
                u("n_heads")?,
                u("hidden_dim")?,
                u("max_position_embeddings")?,
                0,
                u("pad_token_id").unwrap_or(0),
            ],
            act,
            1e-12,
        ),
    }))
}

/// The configuration of a GGUF model from its metadata (`general.architecture` and the
/// `{arch}.*` keys llama.cpp writes) and its tensor shapes.
pub fn from_gguf(
    meta: &Metadata,
    vocab: usize,
    has_output: bool,
    path: &Path,
) -> Result<ArchConfig> {
    let arch = meta
        .get("general.architecture")
        .and_then(MetaValue::as_str)
        .unwrap_or("");
    let u = |k: &str| -> Result<usize> {
        meta.get(&format!("{arch}.{k}"))
            .and_then(MetaValue::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| cfg_err(path, format!("GGUF key `{arch}.{k}` is missing")))
    };
    let f = |k: &str| -> Option<f64> {
        match meta.get(&format!("{arch}.{k}"))? {
            MetaValue::F32(v) => Some(*v as f64),
            MetaValue::F64(v) => Some(*v),
            _ => None,
        }
    };
    match arch {
        "llama" | "qwen2" => {
            let (hidden, heads) = (u("embedding_length")?, u("attention.head_count")?);
            Ok(ArchConfig::Decoder(DecoderConfig {
                hidden,
                intermediate: u("feed_forward_length")?,
                layers: u("block_count")?,
                heads,
                kv_heads: u("attention.head_count_kv").unwrap_or(heads),
                head_dim: u("attention.key_length").unwrap_or(hidden / heads.max(1)),
                rms_eps: f("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
                rope_theta: f("rope.freq_base").unwrap_or(10_000.0),
                vocab,
                tied: !has_output,
                qkv_bias: arch == "qwen2",
                sliding_window: None,
            }))
        }
        // DistilBERT and (XLM-)RoBERTa GGUFs are `bert` too (llama.cpp's convert_hf_to_gguf.py):
        // read back as BERT, with llama.cpp's token-type count (1 for both; a DistilBERT file
        // has no table, and reading it back adds a zero one) and positions from 0 (RoBERTa's
        // rows before `pad_token_id + 1` were cut off when written).
        "bert" => Ok(ArchConfig::Encoder(EncoderConfig {
            family: EncoderFamily::Bert,
            bert: bert_config(
                [
                    vocab,
                    u("embedding_length")?,
                    u("block_count")?,
                    u("attention.head_count")?,
                    u("feed_forward_length")?,
                    u("context_length")?,
                    ferry_io::arch::token_type_count(meta),
                    0,
                ],
                bert::HiddenAct::Gelu,
                f("attention.layer_norm_epsilon").unwrap_or(1e-12),
            ),
        })),
        other => Err(unsupported(path, other, "general.architecture")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smollm2(rope: Value) -> Value {
        let mut v = serde_json::json!({
            "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
            "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
            "rms_norm_eps": 1e-5, "vocab_size": 49152, "tie_word_embeddings": true
        });
        for (k, x) in rope.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    /// transformers 4 writes `rope_theta` at the top level, transformers 5 under
    /// `rope_parameters`; both must give the same model (candle's llama silently took 10000
    /// from the second form).
    #[test]
    fn rope_theta_is_read_in_both_transformers_forms() {
        let p = Path::new("config.json");
        let v4 = smollm2(serde_json::json!({"rope_theta": 100000.0}));
        let v5 = smollm2(serde_json::json!({
            "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}
        }));
        let (ArchConfig::Decoder(a), ArchConfig::Decoder(b)) =
            (from_json(&v4, p).unwrap(), from_json(&v5, p).unwrap())
        else {
            panic!("not a decoder")
        };
        assert_eq!(a.rope_theta, 100000.0);
        assert_eq!(a, b);
        assert_eq!((a.head_dim, a.kv_heads, a.tied), (64, 3, true));
        let yarn = smollm2(serde_json::json!({"rope_parameters": {"rope_type": "yarn"}}));
        let err = from_json(&yarn, p).unwrap_err().to_string();
        assert!(err.contains("yarn"), "{err}");
    }

    /// Mistral's `sliding_window` is kept (`null`: none); Qwen2 configs of either transformers
    /// version without sliding-window layers load, with them they are refused by name.
    #[test]
    fn sliding_windows_are_read_or_refused() {
        let p = Path::new("config.json");
        let window = |extra: Value| {
            let mut v = smollm2(extra);
            v["num_hidden_layers"] = 24.into();
            match from_json(&v, p) {
                Ok(ArchConfig::Decoder(c)) => Ok(c.sliding_window),
                Ok(_) => panic!("not a decoder"),
                Err(e) => Err(e.to_string()),
            }
        };
        let mistral = |w: Value| serde_json::json!({"model_type": "mistral", "sliding_window": w});
        assert_eq!(window(mistral(4096.into())), Ok(Some(4096)));
        assert_eq!(window(mistral(Value::Null)), Ok(None));
        assert!(window(mistral(0.into())).is_err());
        // transformers 4 (no layer_types): layers from max_window_layers on slide.
        let v4 = |on: bool, from: u64| {
            serde_json::json!({"model_type": "qwen2", "use_sliding_window": on,
                               "sliding_window": 4096, "max_window_layers": from})
        };
        assert_eq!(window(v4(false, 0)), Ok(None));
        assert_eq!(window(v4(true, 28)), Ok(None));
        let err = window(v4(true, 12)).unwrap_err();
        assert!(err.contains("sliding-window"), "{err}");
        // transformers 5: layer_types says which.
        let v5 = |t: &str| {
            serde_json::json!({"model_type": "qwen2", "use_sliding_window": false,
                               "sliding_window": null, "layer_types": ["full_attention", t]})
        };
        assert_eq!(window(v5("full_attention")), Ok(None));
        assert!(window(v5("sliding_attention")).is_err());
        let llama = serde_json::json!({"model_type": "llama", "sliding_window": 8});
        assert_eq!(window(llama), Ok(None));
    }

    /// DistilBERT's own keys (`dim`, `n_layers`, `activation`, ...) become BERT's; RoBERTa's
    /// padding index defaults to 1.
    #[test]
    fn encoder_families_map_their_keys() {
        let p = Path::new("config.json");
        let distil = serde_json::json!({
            "model_type": "distilbert", "dim": 768, "n_layers": 6, "n_heads": 12,
            "hidden_dim": 3072, "activation": "gelu", "max_position_embeddings": 512,
            "vocab_size": 30522
        });
        let ArchConfig::Encoder(c) = from_json(&distil, p).unwrap() else {
            panic!("not an encoder")
        };
        assert_eq!(c.family, EncoderFamily::DistilBert);
        let b = &c.bert;
        assert_eq!(
            (b.hidden_size, b.num_hidden_layers, b.num_attention_heads),
            (768, 6, 12)
        );
        assert_eq!((b.intermediate_size, b.type_vocab_size), (3072, 0));
        assert_eq!(
            (b.hidden_act, b.layer_norm_eps),
            (bert::HiddenAct::Gelu, 1e-12)
        );
        let xlmr = serde_json::json!({
            "model_type": "xlm-roberta", "hidden_size": 768, "num_hidden_layers": 12,
            "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu",
            "max_position_embeddings": 514, "vocab_size": 250002, "type_vocab_size": 1,
            "layer_norm_eps": 1e-5
        });
        let ArchConfig::Encoder(c) = from_json(&xlmr, p).unwrap() else {
            panic!("not an encoder")
        };
        assert_eq!(c.family, EncoderFamily::Roberta);
        assert_eq!((c.bert.pad_token_id, c.bert.layer_norm_eps), (1, 1e-5));
        let mut bad = distil.clone();
        bad["activation"] = "swish".into();
        let err = from_json(&bad, p).unwrap_err().to_string();
        assert!(err.contains("activation `swish`"), "{err}");
    }

    #[test]
    fn an_unknown_architecture_lists_what_is_supported() {
        let v = serde_json::json!({"model_type": "gpt_neox"});
        let err = from_json(&v, Path::new("m/config.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gpt_neox") && err.contains("llama") && err.contains("bert"),
            "{err}"
        );
    }
}
