//! Options shared by `convert` and `migrate`.

use anyhow::{Context, Result};
use clap::Args;
use ferry_io::convert::{ConvertOptions, DTypeRule};
use ferry_io::rename::{RenameRule, Renamer};
use ferry_io::DType;
use serde_json::json;

/// How tensors are transformed on the way.
#[derive(Args, Debug, Clone)]
pub struct TransformArgs {
    /// Cast float tensors to this type (f32, f16, bf16, f64, f8e4m3); integers are never cast.
    #[arg(long, value_name = "DTYPE")]
    pub dtype: Option<String>,
    /// Give tensors matching REGEX this float type instead, e.g. --keep f32:'.*norm.*' (repeatable, first match wins).
    #[arg(long, value_name = "DTYPE:REGEX")]
    pub keep: Vec<String>,
    /// Quantize float tensors of 2+ dims to a GGML type (q4_0 q4_1 q5_0 q5_1 q8_0 q2_k q3_k q4_k q5_k q6_k), or `auto`: a type per tensor chosen for --budget / --target-size / --target-bpw from each tensor group's measured effect in every language (docs/calibration.md); GGUF output only.
    #[arg(long, value_name = "QTYPE")]
    pub quant: Option<String>,
    /// --quant auto: bounds every language must meet, a preset (q8, q4) or bounds such as 'kld<=0.05,top1>=0.8' (decoders) or 'cos>=0.99' (encoders). Alone: the smallest file within them; with a size: judged only. The written file is verified against them (exit 1 when missed).
    #[arg(long, value_name = "BOUNDS")]
    pub budget: Option<String>,
    /// --quant auto: the tensor data's size (e.g. 90MB), with the smallest worst-language distance within it.
    #[arg(long, value_name = "SIZE")]
    pub target_size: Option<String>,
    /// --quant auto: bits per weight over every tensor (e.g. 4.8), with the smallest worst-language distance within it.
    #[arg(long, value_name = "BPW")]
    pub target_bpw: Option<f64>,
    /// --quant auto: the types to choose from, comma-separated (default: q4_0,q4_1,q4_k,q5_0,q5_1,q5_k,q6_k,q8_0,f16; q2_k and q3_k on request).
    #[arg(long, value_name = "TYPES", value_delimiter = ',')]
    pub auto_types: Vec<String>,
    /// --quant auto: calibrate and judge on these languages only, comma-separated codes (default: all 47 of the embedded UDHR training articles).
    #[arg(long, value_name = "LANGS", value_delimiter = ',')]
    pub auto_languages: Vec<String>,
    /// --quant auto without --imatrix: quantize without an importance matrix. By default auto quantizes with the calibration it weighs the errors by (the language-balanced UDHR sample), as --imatrix would, and records it in the GGUF (quantize.imatrix.*).
    #[arg(long)]
    pub auto_no_imatrix: bool,
    /// Per-tensor quantization override, e.g. --quant-rule q8_0:'.*attn.*' or --quant-rule f16:'embed' (repeatable, first match wins).
    #[arg(long, value_name = "TYPE:REGEX")]
    pub quant_rule: Vec<String>,
    /// Rename tensors: PATTERN=REPLACEMENT, regex with $1 groups, e.g. --rename '^model\.(.*)=$1' (repeatable, applied in order).
    #[arg(long, value_name = "PAT=REP")]
    pub rename: Vec<String>,
    /// Remove this prefix from tensor names that have it (applied before --rename).
    #[arg(long, value_name = "PREFIX")]
    pub strip_prefix: Option<String>,
    /// Add this prefix to every tensor name (applied after --rename).
    #[arg(long, value_name = "PREFIX")]
    pub add_prefix: Option<String>,
    /// Keep tensor names and layouts as they are: no llama.cpp names and Q/K layout when a known architecture (llama, mistral, qwen2, bert, distilbert, roberta, xlm-roberta) goes to GGUF, no Hugging Face names out of such a GGUF.
    #[arg(long)]
    pub keep_names: bool,
    /// Write out views that repeat their elements (a stride-0 `expand` saved by PyTorch) even when their full size is over the tensor memory budget (FERRY_MAX_TENSOR_BYTES, 4 GiB), streamed in bounded memory.
    #[arg(long)]
    pub materialize_views: bool,
    /// Quantize with this importance matrix (llama.cpp's imatrix GGUF, e.g. from `ferry calibrate`): each tensor it has an entry for, quantized to a k-quant or q4_0/q4_1/q5_0/q5_1, weighs its columns' rounding error by the calibration inputs' mean square (llama.cpp's kernels); q8_0 and tensors without an entry quantize as without it.
    #[arg(long, value_name = "FILE")]
    pub imatrix: Option<std::path::PathBuf>,
    /// safetensors output: write a tensor tied to another (one storage, two names, e.g. lm_head.weight and embed.weight) once and record the alias in ferry's metadata, instead of writing both names. Other readers (PyTorch load_state_dict(strict=True)) then miss the alias; a model folder whose config.json ties them drops the copy either way, as transformers does.
    #[arg(long)]
    pub dedupe_tied: bool,
}

impl TransformArgs {
    /// The library options these arguments describe.
    pub fn to_options(&self) -> Result<ConvertOptions> {
        let parse_rules = |v: &[String]| -> Result<Vec<DTypeRule>> {
            v.iter()
                .map(|r| r.parse().with_context(|| format!("in rule `{r}`")))
                .collect()
        };
        let dtype: Option<DType> = self.dtype.as_deref().map(str::parse).transpose()?;
        if let Some(d) = dtype {
            anyhow::ensure!(d.is_float(), "--dtype takes a float type (f32, f16, bf16, f64, f8e4m3), not {d}; use --quant for {d}");
        }
        let auto = self.is_auto();
        anyhow::ensure!(
            auto || (self.budget.is_none()
                && self.target_size.is_none()
                && self.target_bpw.is_none()
                && self.auto_types.is_empty()
                && self.auto_languages.is_empty()
                && !self.auto_no_imatrix),
            "--budget, --target-size, --target-bpw, --auto-types, --auto-languages and --auto-no-imatrix go with --quant auto"
        );
        anyhow::ensure!(
            !(self.auto_no_imatrix && self.imatrix.is_some()),
            "--auto-no-imatrix and --imatrix contradict each other: leave out one"
        );
        anyhow::ensure!(
            !auto || self.quant_rule.is_empty(),
            "--quant auto chooses every tensor's type; leave out --quant-rule (or choose by hand without auto)"
        );
        let quant: Option<DType> = match self.quant.as_deref() {
            Some("auto") | None => None,
            Some(q) => Some(q.parse()?),
        };
        if let Some(q) = quant {
            anyhow::ensure!(
                q.is_quantized(),
                "--quant takes a GGML type such as q8_0 or q4_k, not {q}; use --dtype for {q}"
            );
        }
        Ok(ConvertOptions {
            dtype,
            keep: parse_rules(&self.keep)?,
            quant,
            quant_rules: parse_rules(&self.quant_rule)?,
            renamer: Renamer {
                strip_prefix: self.strip_prefix.clone(),
                rules: self
                    .rename
                    .iter()
                    .map(|r| RenameRule::parse(r))
                    .collect::<Result<_, _>>()?,
                add_prefix: self.add_prefix.clone(),
            },
            keep_names: self.keep_names,
            materialize_views: self.materialize_views,
            dedupe_tied: self.dedupe_tied,
            imatrix: self
                .imatrix
                .as_deref()
                .map(|p| ferry_io::imatrix::Imatrix::read(p).map(std::sync::Arc::new))
                .transpose()?,
        })
    }

    /// Whether `--quant auto` was asked for.
    pub fn is_auto(&self) -> bool {
        self.quant.as_deref() == Some("auto")
    }

    /// The arguments as JSON, for the replayable manifest.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "dtype": self.dtype, "keep": self.keep, "quant": self.quant, "quant_rule": self.quant_rule,
            "rename": self.rename, "strip_prefix": self.strip_prefix, "add_prefix": self.add_prefix,
            "keep_names": self.keep_names, "materialize_views": self.materialize_views,
            "dedupe_tied": self.dedupe_tied, "imatrix": self.imatrix, "budget": self.budget,
            "target_size": self.target_size, "target_bpw": self.target_bpw, "auto_types": self.auto_types,
            "auto_languages": self.auto_languages, "auto_no_imatrix": self.auto_no_imatrix,
        })
    }
}

/// How output is written and reported; shared by the commands that write models.
#[derive(Args, Debug, Clone)]
pub struct WriteArgs {
    /// Split safetensors output into shards of at most this size (e.g. 2GB, 500MiB), with an index.json.
    #[arg(long, value_name = "SIZE")]
    pub shard_size: Option<String>,
    /// Show what would be written; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

impl WriteArgs {
    /// `--shard-size` in bytes.
    pub fn shard_bytes(&self) -> Result<Option<u64>> {
        self.shard_size
            .as_deref()
            .map(crate::units::parse_size)
            .transpose()
    }
}
