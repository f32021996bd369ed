//! Architecture detection and configuration, normalized across transformers versions and read
//! alike from a Hugging Face `config.json` and from a GGUF's `{arch}.*` metadata.

use std::path::Path;

use candle_transformers::models::bert;
use ferry_io::meta::{MetaValue, Metadata};
use serde_json::Value;

use crate::error::{Error, Result};

/// What the runtime runs, for error messages.
pub const SUPPORTED: &str = "Llama-family decoders (llama, mistral, qwen2; GGUF llama, qwen2) \
                             and BERT encoders (bert; GGUF bert)";

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
}

/// What kind of model a checkpoint holds.
#[derive(Debug, Clone)]
pub enum ArchConfig {
    /// A causal decoder producing next-token logits.
    Decoder(DecoderConfig),
    /// A BERT encoder producing hidden states, run by candle-transformers' `BertModel`.
    Encoder(bert::Config),
}

impl ArchConfig {
    /// The architecture's name, for reports.
    pub fn name(&self) -> &'static str {
        match self {
            ArchConfig::Decoder(_) => "llama-family decoder",
            ArchConfig::Encoder(_) => "bert encoder",
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

/// Reads and normalizes a Hugging Face `config.json`.
pub fn from_config_json(path: &Path) -> Result<ArchConfig> {
    let text = std::fs::read(path).map_err(|source| Error::File {
        path: path.to_path_buf(),
        source,
    })?;
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

/// Normalizes a parsed `config.json`.
pub fn from_json(cfg: &Value, path: &Path) -> Result<ArchConfig> {
    let model_type = cfg.get("model_type").and_then(Value::as_str).unwrap_or("");
    let u = |k: &str| -> Result<usize> {
        cfg.get(k)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| cfg_err(path, format!("`{k}` is missing or not a whole number")))
    };
    let f = |k: &str| -> Result<f64> {
        cfg.get(k)
            .and_then(Value::as_f64)
            .ok_or_else(|| cfg_err(path, format!("`{k}` is missing or not a number")))
    };
    match model_type {
        "llama" | "mistral" | "qwen2" => {
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
                rms_eps: f("rms_norm_eps")?,
                rope_theta: rope_theta(cfg, path)?,
                vocab: u("vocab_size")?,
                tied: cfg
                    .get("tie_word_embeddings")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                qkv_bias: model_type == "qwen2"
                    || cfg.get("attention_bias").and_then(Value::as_bool) == Some(true),
            }))
        }
        "bert" => {
            let act = match cfg
                .get("hidden_act")
                .and_then(Value::as_str)
                .unwrap_or("gelu")
            {
                "gelu" => bert::HiddenAct::Gelu,
                "gelu_new" | "gelu_pytorch_tanh" => bert::HiddenAct::GeluApproximate,
                "relu" => bert::HiddenAct::Relu,
                other => {
                    return Err(cfg_err(
                        path,
                        format!("hidden_act `{other}` is not supported"),
                    ))
                }
            };
            Ok(ArchConfig::Encoder(bert_config(
                [
                    u("vocab_size")?,
                    u("hidden_size")?,
                    u("num_hidden_layers")?,
                    u("num_attention_heads")?,
                    u("intermediate_size")?,
                    u("max_position_embeddings")?,
                    u("type_vocab_size").unwrap_or(2),
                    u("pad_token_id").unwrap_or(0),
                ],
                act,
                f("layer_norm_eps").unwrap_or(1e-12),
            )))
        }
        other => Err(unsupported(path, other, "model_type")),
    }
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
            }))
        }
        "bert" => Ok(ArchConfig::Encoder(bert_config(
            [
                vocab,
                u("embedding_length")?,
                u("block_count")?,
                u("attention.head_count")?,
                u("feed_forward_length")?,
                u("context_length")?,
                2,
                0,
            ],
            bert::HiddenAct::Gelu,
            f("attention.layer_norm_epsilon").unwrap_or(1e-12),
        ))),
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
