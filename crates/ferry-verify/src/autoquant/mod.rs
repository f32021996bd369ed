//! `--quant auto`: a GGML type per weight tensor, chosen to meet a per-language budget with
//! the smallest file, or to give the worst language the smallest distance within a size.
//!
//! 1. **Errors** ([`table`]): every weight matrix is rounded to every candidate type that
//!    fits it and its squared error weighted by each input column's mean square activation is
//!    recorded with the type's bytes. The weights are the given importance matrix, or else a
//!    calibration of the model on the language-balanced sample, which then also quantizes, as
//!    `--imatrix` would (unless [`AutoOptions::quantize_with_calibration`] is off): measured on
//!    SmolLM2-135M at uniform q4_k's size (q5_1 among the candidates), the worst held-out
//!    language's KLD is 19.5% under uniform q4_k's quantized without it and 59.0% under with
//!    it; 36.4% under with it and neither q4_1 nor q5_1, which hold this model's Q4_1 grid
//!    exactly (docs/benchmarks.md).
//! 2. **Sensitivity** ([`measure`]): matrices are grouped by kind over bands of blocks
//!    (`ffn_down[0-9]`, `attn_v[10-19]`, `token_embd`); for each group alone rounded to q4_0,
//!    the model runs on calibration text in every language (the UDHR *training* articles, one
//!    text of up to 64 tokens per language, not the held-out probes `ferry verify` judges) and
//!    each language's mean KL divergence from the original (decoders; `1 - cosine` of pooled
//!    embeddings for encoders) is measured. Divided by the group's weighted error, that is the
//!    group's cost per unit of error in each language.
//! 3. **Type check**: for each candidate type, every tensor it fits is rounded to it at once
//!    and measured; the median over languages of measured/predicted scales that type's errors.
//!    A coarse type (q2_k) hurts more than its weighted error says, and errors compound
//!    across blocks; a per-group linear model alone misses both (measured on SmolLM2-135M: 2-5x
//!    under-predicted, and a choice worse than uniform q4_k).
//! 4. **Choice** ([`choose`]): a language's predicted distance is the sum over groups of cost
//!    times (scaled) error (KL divergence is quadratic in a small perturbation, as is the
//!    weighted squared error, so both add up); the greedy rule buys the most worst-language
//!    reduction per byte.
//! 5. **Check**: the chosen assignment is run whole on the calibration text and measured. With
//!    a budget, a language the measurement puts outside its bound gets its bound tightened by
//!    the measured/predicted ratio and the choice is made again (at most [`ROUNDS`] times).
//!
//! Memory: the model once for the reference and once per measurement (sequentially), the
//! reference outputs (decoders: texts x tokens x vocabulary x 4 bytes, 47 x 64 x 49,152 x 4 =
//! 0.6 GB for SmolLM2; encoders: one pooled vector per text), and one tensor with its rounded
//! copies while the table is built.

pub mod choose;
pub mod measure;
mod plan;
pub mod table;

pub use plan::plan;

use std::collections::HashMap;
use std::sync::Arc;

use ferry_io::convert::DTypeRule;
use ferry_io::imatrix::Imatrix;
use ferry_io::DType;
use ferry_runtime::Tokenizer;
use serde::Serialize;

use crate::calibrate::CalibrateOptions;
use crate::error::{Error, Result};
use crate::preset::Budget;
use crate::probes::Probe;
use choose::Predictor;
use measure::{Distances, Text};
use table::Table;

/// Refinements of the choice after measuring it (budget goals).
pub const ROUNDS: usize = 3;

/// The GGML types chosen from unless told: every type ferry quantizes to from 4 bits up (a
/// tensor takes those whose blocks divide its rows) and f16. q2_k and q3_k are left out: the
/// linear model under-predicts what they do in a mixture (measured on SmolLM2-135M: with them,
/// the choice at uniform q4_k's size put ten `ffn_down` matrices in q2_k, was measured 1.7-4.2x
/// worse than predicted, and was worse than uniform q4_k: worst language +67%, median +66%);
/// `--auto-types` adds them back.
pub const DEFAULT_CANDIDATES: [DType; 9] = [
    DType::Q4_0,
    DType::Q4_1,
    DType::Q4K,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q5K,
    DType::Q6K,
    DType::Q8_0,
    DType::F16,
];

/// The type each group is rounded to alone to measure its sensitivity (its 32-element blocks
/// fit every row a GGML type fits).
pub const PROBE_TYPE: DType = DType::Q4_0;

/// A size to stay within.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Size {
    /// Bytes of tensor data.
    Bytes(u64),
    /// Bits per weight over every tensor.
    Bpw(f64),
}

/// What the choice must achieve: with a size, the smallest worst-language distance within it
/// (a budget is then only judged); with a budget alone, the smallest file with every language
/// within it.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    /// Bounds every language must meet.
    pub budget: Option<Budget>,
    /// The size to stay within.
    pub size: Option<Size>,
}

/// How to choose.
#[derive(Debug, Clone)]
pub struct AutoOptions {
    /// The goal.
    pub goal: Goal,
    /// The types to choose from.
    pub candidates: Vec<DType>,
    /// Bands of blocks per kind of matrix (a group each).
    pub bands: usize,
    /// Calibration texts per language.
    pub texts_per_language: usize,
    /// Tokens per text.
    pub max_tokens: usize,
    /// Only these languages (all when empty).
    pub languages: Vec<String>,
    /// Quantize with this importance matrix (`--imatrix`); also weighs the errors.
    pub imatrix: Option<Arc<Imatrix>>,
    /// Without `imatrix`: the calibration whose column statistics weigh the errors.
    pub calibration: CalibrateOptions,
    /// Without `imatrix`: also quantize with that calibration, as with `--imatrix` (the
    /// default); false quantizes without an importance matrix.
    pub quantize_with_calibration: bool,
}

impl AutoOptions {
    /// Defaults for `goal`: every candidate, 3 bands, one text of 64 tokens per language, a
    /// calibration of 4,096 tokens that also quantizes.
    pub fn new(goal: Goal) -> AutoOptions {
        AutoOptions {
            goal,
            candidates: DEFAULT_CANDIDATES.to_vec(),
            bands: 3,
            texts_per_language: 1,
            max_tokens: 64,
            languages: Vec::new(),
            imatrix: None,
            calibration: CalibrateOptions {
                tokens: 4096,
                ..CalibrateOptions::default()
            },
            quantize_with_calibration: true,
        }
    }
}

/// One tensor's chosen type.
#[derive(Debug, Clone, Serialize)]
pub struct Choice {
    /// Its name in the output.
    pub name: String,
    /// Its group.
    pub group: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// The chosen type.
    pub dtype: DType,
    /// Bytes in that type.
    pub bytes: u64,
    /// Its squared rounding error in that type, each column weighted by its mean square input
    /// (rounded as the file holds it: with the plan's importance matrix, if any), before the
    /// type check's scaling.
    pub error: f64,
}

/// One group's measured sensitivity.
#[derive(Debug, Clone, Serialize)]
pub struct GroupSensitivity {
    /// The group.
    pub group: String,
    /// Tensors in it.
    pub tensors: usize,
    /// Per language, the distance with only this group rounded to [`PROBE_TYPE`].
    pub distance: Vec<f64>,
}

/// One language's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct LanguageOutcome {
    /// The language.
    pub lang: String,
    /// Its bound on the distance (budget goals).
    pub bound: Option<f64>,
    /// Predicted distance.
    pub predicted: f64,
    /// Measured distance (the whole assignment run on the calibration text).
    pub measured: f64,
    /// Measured same top-1 share (decoders).
    pub top1: f64,
}

/// What `--quant auto` chose, and why.
#[derive(Debug, Clone, Serialize)]
pub struct AutoPlan {
    /// The model.
    pub model: String,
    /// The goal.
    pub goal: Goal,
    /// `mean KLD` (decoders) or `1 - cosine` (encoders).
    pub metric: String,
    /// Where the errors' column weights came from.
    pub weights_from: String,
    /// The importance matrix the candidates were rounded with, and the file must be written
    /// with (`--imatrix`'s, or the calibration's); `None`: quantized without one. In JSON,
    /// `quantized_with_imatrix`: whether there is one.
    #[serde(
        rename = "quantized_with_imatrix",
        serialize_with = "serialize_is_some"
    )]
    pub imatrix: Option<Arc<Imatrix>>,
    /// Tensor data bytes (chosen types and the tensors that stay float).
    pub bytes: u64,
    /// Bits per weight over every tensor.
    pub bpw: f64,
    /// Tensors per type.
    pub types: Vec<(DType, usize)>,
    /// Per tensor.
    pub tensors: Vec<Choice>,
    /// Per group.
    pub groups: Vec<GroupSensitivity>,
    /// Per language.
    pub languages: Vec<LanguageOutcome>,
    /// Choices made (1 + refinements).
    pub rounds: usize,
    /// Per type, measured/predicted distance (median over languages) with every tensor it
    /// fits rounded to it: the factor its errors were scaled by before choosing.
    pub type_factors: Vec<(DType, f64)>,
    /// Whether every language's measured distance (and same top-1) is within the budget; true
    /// without one.
    pub ok: bool,
    /// Seconds spent.
    pub seconds: f64,
}

impl AutoPlan {
    /// The per-tensor rules that make a conversion write this choice (exact names).
    pub fn rules(&self) -> Vec<DTypeRule> {
        self.tensors
            .iter()
            .map(|c| DTypeRule {
                dtype: c.dtype,
                pattern: regex_exact(&c.name),
            })
            .collect()
    }

    /// The quantized type holding the most bytes (`general.file_type`).
    pub fn main_type(&self) -> DType {
        let mut by: HashMap<DType, u64> = HashMap::new();
        for c in self.tensors.iter().filter(|c| c.dtype.is_quantized()) {
            *by.entry(c.dtype).or_default() += c.bytes;
        }
        by.into_iter()
            .max_by_key(|&(d, b)| (b, d.name()))
            .map_or(DType::Q8_0, |(d, _)| d)
    }

    /// The language with the largest measured distance.
    pub fn worst(&self) -> Option<&LanguageOutcome> {
        self.languages
            .iter()
            .max_by(|a, b| a.measured.total_cmp(&b.measured))
    }
}

/// An option as whether it holds something (the matrix itself stays out of the JSON).
fn serialize_is_some<T, S: serde::Serializer>(
    v: &Option<T>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_bool(v.is_some())
}

fn regex_exact(name: &str) -> regex::Regex {
    // An escaped literal is always a valid pattern.
    regex::Regex::new(&format!("^{}$", regex::escape(name)))
        .unwrap_or_else(|_| unreachable!("escaped literal"))
}

/// What the planner reports while it works: a stage name, done, total.
pub type Progress<'a> = &'a mut dyn FnMut(&str, usize, usize);

/// The sensitivity texts: the first `texts_per_language` of each language in `all` that
/// tokenize to something, cut at `max_tokens` tokens.
fn texts(
    all: &[Probe],
    tokenizer: &Tokenizer,
    opts: &AutoOptions,
) -> Result<(Vec<String>, Vec<Text>)> {
    let mut langs: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let mut taken: HashMap<String, usize> = HashMap::new();
    for p in all {
        let n = taken.entry(p.lang.clone()).or_default();
        if *n >= opts.texts_per_language {
            continue;
        }
        let ids = tokenizer.encode(&p.text, Some(opts.max_tokens))?;
        if ids.is_empty() {
            continue;
        }
        *n += 1;
        let lang = match langs.iter().position(|l| *l == p.lang) {
            Some(i) => i,
            None => {
                langs.push(p.lang.clone());
                langs.len() - 1
            }
        };
        out.push(Text { lang, ids });
    }
    Ok((langs, out))
}

/// Per-language bounds on the distance a budget implies. A same top-1 bound becomes a bound
/// on the KL divergence through each language's measured relation `1 - top1 ~ a sqrt(KLD)`
/// (fitted on the group measurements).
fn bounds(budget: &Budget, decoder: bool, groups: &[Distances], langs: usize) -> Result<Vec<f64>> {
    let mut out = vec![f64::INFINITY; langs];
    if decoder {
        if let Some(k) = budget.kld {
            out.iter_mut().for_each(|b| *b = k);
        }
        if let Some(t) = budget.top1 {
            for (l, b) in out.iter_mut().enumerate() {
                let (mut xy, mut xx) = (0.0, 0.0);
                for g in groups {
                    let x = g.value[l].max(0.0).sqrt();
                    xy += x * (1.0 - g.top1[l]);
                    xx += x * x;
                }
                if xy > 0.0 {
                    let a = xy / xx;
                    *b = b.min(((1.0 - t) / a).powi(2));
                }
            }
        }
    } else if let Some(c) = budget.cosine {
        out.iter_mut().for_each(|b| *b = 1.0 - c);
    }
    if out.iter().any(|b| !b.is_finite()) {
        return Err(Error::Options(format!(
            "budget `{budget}` bounds nothing a {} is judged by ({})",
            if decoder { "decoder" } else { "encoder" },
            if decoder { "kld<=X, top1>=Y" } else { "cos>=X" }
        )));
    }
    Ok(out)
}

fn top1_missed(goal: &Goal, d: &Distances, l: usize) -> bool {
    goal.budget
        .as_ref()
        .and_then(|b| b.top1)
        .is_some_and(|t| d.top1[l] < t)
}

fn assignment_of(table: &Table, choice: &[usize]) -> HashMap<String, DType> {
    table
        .entries
        .iter()
        .zip(choice)
        .map(|(e, &k)| (e.name.clone(), e.options[k].dtype))
        .collect()
}

/// Why no choice meets the goal: the smallest possible size, or the best predicted
/// worst-language distance.
fn unreachable_goal(
    table: &Table,
    p: &Predictor,
    goal: &Goal,
    limit: Option<u64>,
    langs: &[String],
    decoder: bool,
) -> Error {
    let metric = if decoder { "mean KLD" } else { "1 - cosine" };
    match (limit, &goal.budget) {
        (Some(_), _) | (None, None) => {
            let least = table.bytes(&vec![0; table.entries.len()]);
            Error::Options(format!(
                "no choice of types fits in {n} bytes of tensor data: the cheapest candidates \
                 take {least} bytes (raise --target-size/--target-bpw or add smaller types)",
                n = limit.unwrap_or(0)
            ))
        }
        (None, Some(b)) => {
            let best: Vec<usize> = table
                .entries
                .iter()
                .map(|e| {
                    (0..e.options.len())
                        .min_by(|&x, &y| e.options[x].error.total_cmp(&e.options[y].error))
                        .unwrap_or(0)
                })
                .collect();
            let d = p.predict(table, &best);
            let (l, v) = d
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or((0, 0.0), |(l, v)| (l, *v));
            Error::Options(format!(
                "budget `{b}` is out of reach with these candidate types: even the finest give \
                 `{}` a predicted {metric} of {v:.4} (loosen the budget or add f16/q8_0)",
                langs.get(l).map_or("?", String::as_str)
            ))
        }
    }
}
