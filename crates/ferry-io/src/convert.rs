//! Conversion planning and execution: which tensor becomes what (rename, cast, quantize,
//! dequantize, keep), then streaming the result into any writer one tensor at a time.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use regex::Regex;
use serde::Serialize;

use crate::arch::LayoutReport;
use crate::cast::{cast_bytes, decode_f32};
use crate::checkpoint::{Checkpoint, Format};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::formats::gguf::names::{Direction, Family};
use crate::imatrix::{self, Imatrix};
use crate::meta::Metadata;
use crate::quant::{self, QuantError};
use crate::rename::{RenameReport, Renamer};
use crate::tensor::TensorEntry;
use crate::write::{OutTensor, Progress};

/// Output container formats ferry writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetFormat {
    /// `.safetensors` (optionally sharded).
    Safetensors,
    /// GGUF v3.
    Gguf,
    /// NumPy `.npz`.
    Npz,
    /// PyTorch zip `.pth` loadable with `torch.load(weights_only=True)`.
    Pth,
}

impl TargetFormat {
    /// Guesses the target from an output file name's extension.
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "safetensors" => Some(TargetFormat::Safetensors),
            "gguf" => Some(TargetFormat::Gguf),
            "npz" => Some(TargetFormat::Npz),
            "pth" | "pt" | "bin" => Some(TargetFormat::Pth),
            _ => None,
        }
    }

    /// Whether the format can store `dtype` as it is.
    pub fn holds(self, dtype: DType) -> bool {
        match self {
            TargetFormat::Gguf => dtype.gguf_type_id().is_some(),
            TargetFormat::Safetensors => crate::formats::safetensors::dtype_name(dtype).is_some(),
            TargetFormat::Pth => !dtype.is_quantized() && dtype != DType::F8E4M3,
            TargetFormat::Npz => {
                !dtype.is_quantized() && !matches!(dtype, DType::BF16 | DType::F8E4M3)
            }
        }
    }

    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            TargetFormat::Safetensors => "safetensors",
            TargetFormat::Gguf => "gguf",
            TargetFormat::Npz => "npz",
            TargetFormat::Pth => "pth",
        }
    }
}

impl fmt::Display for TargetFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.extension())
    }
}

impl FromStr for TargetFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "safetensors" | "st" => Ok(TargetFormat::Safetensors),
            "gguf" => Ok(TargetFormat::Gguf),
            "npz" => Ok(TargetFormat::Npz),
            "pth" | "pt" | "torch" | "pytorch" => Ok(TargetFormat::Pth),
            _ => Err(Error::Invalid(format!(
                "unknown output format `{s}`; expected safetensors, gguf, npz or pth"
            ))),
        }
    }
}

/// A dtype chosen for the tensors whose names match a regex: `f32:.*norm.*`.
#[derive(Debug, Clone)]
pub struct DTypeRule {
    /// The dtype to use.
    pub dtype: DType,
    /// Which names it applies to (matched against the output name).
    pub pattern: Regex,
}

impl FromStr for DTypeRule {
    type Err = Error;
    /// Parses `DTYPE:REGEX`.
    fn from_str(s: &str) -> Result<Self> {
        let (d, pat) = s.split_once(':').ok_or_else(|| {
            Error::Invalid(format!(
                "rule `{s}` is not DTYPE:REGEX (e.g. f32:'.*norm.*')"
            ))
        })?;
        Ok(DTypeRule {
            dtype: d.parse()?,
            pattern: Regex::new(pat)
                .map_err(|e| Error::Invalid(format!("rule `{s}`: bad regex: {e}")))?,
        })
    }
}

/// What to do to the tensors of a checkpoint.
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// Float tensors become this type (integers and bools are never cast).
    pub dtype: Option<DType>,
    /// Per-tensor float types that override `dtype` (first match wins): `--keep f32:'.*norm.*'`.
    pub keep: Vec<DTypeRule>,
    /// Quantize float tensors of two or more dimensions to this GGML type.
    pub quant: Option<DType>,
    /// Per-tensor quantization overrides (first match wins); a float type here means "do not
    /// quantize, store as this float type".
    pub quant_rules: Vec<DTypeRule>,
    /// Renaming steps.
    pub renamer: Renamer,
    /// Keep tensor names and layouts as they are even where ferry knows the architecture
    /// (no llama.cpp names in a GGUF, no Hugging Face names out of one).
    pub keep_names: bool,
    /// Write out views that repeat their elements (a stride-0 `expand`) even when their full
    /// size is over the tensor budget ([`crate::budget::TENSOR`]), streamed in bounded memory.
    pub materialize_views: bool,
    /// In safetensors output, write a tensor tied to another (one storage, two names) once
    /// and record the alias in ferry's metadata, instead of writing every name. Off by
    /// default: other readers (`load_state_dict(strict=True)`) need every name. A model
    /// folder whose `config.json` ties them drops the copy either way, as transformers does.
    pub dedupe_tied: bool,
    /// An importance matrix (llama.cpp's, or `ferry calibrate`'s) to quantize with: a
    /// tensor it has an entry for (by output name) is quantized with its columns weighted by
    /// the entry, where the type has a weighted kernel ([`imatrix::supports`]); the others
    /// quantize as without it.
    pub imatrix: Option<Arc<Imatrix>>,
}

/// What happens to one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "op")]
pub enum Action {
    /// Bytes copied unchanged.
    Copy,
    /// Float cast.
    Cast,
    /// Float to GGML blocks.
    Quantize,
    /// GGML blocks to float.
    Dequantize,
}

/// What an importance matrix did for one quantized tensor that it has an entry for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImatrixUse {
    /// Quantized with the entry's column weights.
    Used,
    /// The tensor's type has no importance-weighted kernel (see [`imatrix::supports`]):
    /// quantized as without the matrix.
    NoKernel,
}

/// One output tensor of a plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlanEntry {
    /// Name in the source.
    pub source: String,
    /// Name in the output.
    pub name: String,
    /// Source dtype.
    pub from: DType,
    /// Output dtype.
    pub to: DType,
    /// Shape (unchanged by conversion).
    pub shape: Vec<usize>,
    /// The operation.
    pub action: Action,
    /// Output name of the tensor whose data this one shares, if tied.
    pub tied_to: Option<String>,
    /// Why the tensor was not quantized though quantization was asked for.
    pub kept_float: Option<String>,
    /// Why the tensor got another quantized type than the one asked for (llama.cpp's
    /// fallback for a k-quant whose super-blocks do not divide its rows).
    pub fallback: Option<String>,
    /// What the importance matrix did, when it has an entry for this quantized tensor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imatrix: Option<ImatrixUse>,
    #[serde(skip)]
    index: usize,
}

/// A conversion decided up front; tensor bytes are produced only while writing.
#[derive(Debug, Serialize)]
pub struct Plan {
    /// The target format.
    pub target: TargetFormat,
    /// Every output tensor, in source order.
    pub entries: Vec<PlanEntry>,
    /// What renaming did.
    pub rename: RenameReport,
    /// The architecture's names and layouts applied before planning ([`prepare`]), if any.
    pub layout: Option<LayoutReport>,
    /// Tensors left out because they are tied copies a model folder's `config.json` re-ties
    /// on load (`lm_head.weight` of a `tie_word_embeddings` model): `(name, tied to)`.
    pub dropped_tied: Vec<(String, String)>,
    /// The importance matrix quantization weighs columns by, if one was given.
    #[serde(skip)]
    pub imatrix: Option<Arc<Imatrix>>,
    /// Quantization error per quantized tensor, filled while writing.
    #[serde(skip)]
    quant_errors: Mutex<BTreeMap<String, QuantError>>,
}

impl Plan {
    /// Decides what happens to each tensor of `ck` when written as `target` with `opts`.
    pub fn new(ck: &Checkpoint, target: TargetFormat, opts: &ConvertOptions) -> Result<Plan> {
        // A GGUF tensor of a type ferry cannot read must not vanish silently from the output.
        crate::formats::gguf::check_supported(ck)?;
        let names: Vec<&str> = ck.tensors.iter().map(|t| t.name.as_str()).collect();
        // Rename errors (two names mapped to one) name the checkpoint they happened in.
        let rename = opts.renamer.apply(&names).map_err(|e| match e {
            Error::Invalid(m) => Error::Invalid(format!("{}: {m}", ck.path.display())),
            e => e,
        })?;
        let mut first_of_storage: HashMap<(&Path, &str), usize> = HashMap::new();
        let mut entries: Vec<PlanEntry> = Vec::with_capacity(ck.tensors.len());
        // Position in `entries` of each planned source tensor.
        let mut planned: HashMap<usize, usize> = HashMap::new();
        let mut dropped_tied = Vec::new();
        let folder_ties = ck.companion("config.json").is_some();
        for (i, (t, (_, out_name))) in ck.tensors.iter().zip(&rename.mapping).enumerate() {
            let Decision {
                to,
                action,
                kept_float,
                fallback,
            } = decide(t, out_name, target, opts)?;
            check_view(t, target, action, opts.materialize_views)?;
            let tied_to = t.storage_key.as_deref().and_then(|k| {
                let first = *first_of_storage.entry((t.file.as_ref(), k)).or_insert(i);
                let f = &ck.tensors[first];
                let same_view =
                    first != i && f.layout == t.layout && f.shape == t.shape && f.dtype == t.dtype;
                let e = &entries[*planned.get(&first)?];
                (same_view && e.to == to).then(|| e.name.clone())
            });
            // safetensors cannot share storage: a tied copy is written as a copy (every name
            // present), dropped for a model folder (transformers re-ties it from config.json),
            // or recorded as an alias with --dedupe-tied.
            let tied_to = match tied_to {
                Some(first) if target == TargetFormat::Safetensors && !opts.dedupe_tied => {
                    if folder_ties {
                        dropped_tied.push((out_name.clone(), first));
                        continue;
                    }
                    None
                }
                other => other,
            };
            planned.insert(i, entries.len());
            entries.push(PlanEntry {
                source: t.name.clone(),
                name: out_name.clone(),
                from: t.dtype,
                to,
                shape: t.shape.clone(),
                action,
                tied_to,
                kept_float,
                fallback,
                imatrix: None,
                index: i,
            });
        }
        if let Some(m) = &opts.imatrix {
            plan_imatrix(&mut entries, m)?;
        }
        Ok(Plan {
            target,
            entries,
            rename,
            layout: None,
            dropped_tied,
            imatrix: opts.imatrix.clone(),
            quant_errors: Mutex::new(BTreeMap::new()),
        })
    }

    /// The quantized tensors the importance matrix weighted, and those it has an entry for
    /// but whose type has no weighted kernel.
    pub fn imatrix_uses(&self) -> (Vec<&PlanEntry>, Vec<&PlanEntry>) {
        let with = |u: ImatrixUse| {
            self.entries
                .iter()
                .filter(|e| e.imatrix == Some(u))
                .collect::<Vec<_>>()
        };
        (with(ImatrixUse::Used), with(ImatrixUse::NoKernel))
    }

    /// Bytes the output tensors will take (tied tensors counted once).
    pub fn output_bytes(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.tied_to.is_none())
            .map(|e| {
                let n = crate::tensor::numel(&e.shape).unwrap_or(0);
                e.to.storage_bytes(n).unwrap_or(0)
            })
            .sum()
    }

    /// Tensors left in a float type though quantization was asked for, with the reason.
    pub fn kept_float(&self) -> Vec<(&str, &str)> {
        self.entries
            .iter()
            .filter_map(|e| e.kept_float.as_deref().map(|r| (e.name.as_str(), r)))
            .collect()
    }

    /// Tensors quantized to a fallback type, with the reason.
    pub fn fallbacks(&self) -> Vec<(&str, &str)> {
        self.entries
            .iter()
            .filter_map(|e| e.fallback.as_deref().map(|r| (e.name.as_str(), r)))
            .collect()
    }

    /// The quantized type most matrix elements are stored in (else the float type most of
    /// them have): what GGUF's `general.file_type` names.
    pub fn main_dtype(&self) -> Option<DType> {
        let mut bytes: BTreeMap<&str, (DType, u64)> = BTreeMap::new();
        for e in self.entries.iter().filter(|e| e.shape.len() >= 2) {
            let n = crate::tensor::numel(&e.shape).unwrap_or(0);
            let slot = bytes.entry(e.to.name()).or_insert((e.to, 0));
            slot.1 += n;
        }
        let quantized = bytes.values().filter(|(d, _)| d.is_quantized());
        quantized
            .max_by_key(|(_, n)| *n)
            .or_else(|| bytes.values().max_by_key(|(_, n)| *n))
            .map(|(d, _)| *d)
    }

    /// Quantization errors measured while writing, by output name.
    pub fn quant_errors(&self) -> BTreeMap<String, QuantError> {
        self.quant_errors
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// The output tensors, each producing its bytes on demand from `ck`.
    pub fn out_tensors<'a>(&'a self, ck: &'a Checkpoint) -> Vec<OutTensor<'a>> {
        self.entries
            .iter()
            .map(|e| {
                let src = &ck.tensors[e.index];
                let mut o = OutTensor::new(e.name.clone(), e.to, e.shape.clone(), move || {
                    self.produce(src, e)
                });
                o.tied_to = e.tied_to.clone();
                if src.is_gathered_view() && matches!(e.action, Action::Copy | Action::Cast) {
                    o.view = Some(src);
                }
                if e.action == Action::Copy {
                    o.file_extent = src
                        .file_extent()
                        .map(|(off, len)| (src.file.clone(), off, len));
                }
                o
            })
            .collect()
    }

    fn produce<'a>(&self, src: &'a TensorEntry, e: &PlanEntry) -> Result<Cow<'a, [u8]>> {
        let data = src.data()?;
        let terr = |err: Error| Error::tensor(src.file.as_ref(), &src.name, err.to_string());
        Ok(match e.action {
            Action::Copy => data,
            Action::Cast => Cow::Owned(cast_bytes(&data, e.from, e.to).map_err(terr)?),
            Action::Dequantize => {
                let f = quant::dequantize(&data, e.from, src.numel() as usize).map_err(terr)?;
                let bytes: &[u8] = bytemuck::cast_slice(&f);
                Cow::Owned(cast_bytes(bytes, DType::F32, e.to).map_err(terr)?)
            }
            Action::Quantize => {
                // f32 data already aligned in memory (mapped files usually are) is used in place.
                let f: Cow<'_, [f32]> = match bytemuck::try_cast_slice(&data) {
                    Ok(v) if e.from == DType::F32 => Cow::Borrowed(v),
                    _ => Cow::Owned(decode_f32(&data, e.from)),
                };
                let weights = match (e.imatrix, &self.imatrix) {
                    (Some(ImatrixUse::Used), Some(m)) => {
                        let cols = e.shape.last().copied().unwrap_or(1);
                        m.importance_for(&e.name, cols).map_err(terr)?
                    }
                    _ => None,
                };
                let (q, err) = match weights {
                    Some(w) => {
                        let cols = w.len();
                        imatrix::quantize_measured(&f, cols, e.to, &w).map_err(terr)?
                    }
                    None => quant::quantize_measured(&f, e.to).map_err(terr)?,
                };
                if let Ok(mut m) = self.quant_errors.lock() {
                    m.insert(e.name.clone(), err);
                }
                Cow::Owned(q)
            }
        })
    }
}

/// Marks the quantized entries the importance matrix `m` has an entry for (by output name),
/// checking each entry's width against the tensor's columns. Refuses a matrix that names no
/// tensor of the plan, and one given where nothing is quantized.
fn plan_imatrix(entries: &mut [PlanEntry], m: &Imatrix) -> Result<()> {
    let file = m.label();
    if !entries.iter().any(|e| e.action == Action::Quantize) {
        return Err(Error::Invalid(format!(
            "{file}: an importance matrix only applies to quantization, and this conversion \
             quantizes no tensor (add --quant q4_k or another k-quant)"
        )));
    }
    let mut matched = 0;
    for e in entries.iter_mut().filter(|e| e.action == Action::Quantize) {
        let cols = e.shape.last().copied().unwrap_or(1);
        if m.importance_for(&e.name, cols)?.is_none() {
            continue;
        }
        matched += 1;
        e.imatrix = Some(if imatrix::supports(e.to) {
            ImatrixUse::Used
        } else {
            ImatrixUse::NoKernel
        });
    }
    if matched == 0 {
        let theirs: Vec<&str> = m.entries.keys().take(3).map(String::as_str).collect();
        let ours: Vec<&str> = entries
            .iter()
            .filter(|e| e.action == Action::Quantize)
            .take(3)
            .map(|e| e.name.as_str())
            .collect();
        return Err(Error::Invalid(format!(
            "{file}: none of the importance matrix's {} entries ({}, ...) names a tensor this \
             conversion quantizes ({}, ...): was it made for another model? Its names are \
             llama.cpp's, which GGUF output of a known architecture uses (not with --keep-names)",
            m.entries.len(),
            theirs.join(", "),
            ours.join(", ")
        )));
    }
    Ok(())
}

fn first_match(rules: &[DTypeRule], name: &str) -> Option<DType> {
    rules
        .iter()
        .find(|r| r.pattern.is_match(name))
        .map(|r| r.dtype)
}

/// What happens to one tensor.
struct Decision {
    to: DType,
    action: Action,
    kept_float: Option<String>,
    fallback: Option<String>,
}

impl Decision {
    fn plain(to: DType, action: Action) -> Decision {
        Decision {
            to,
            action,
            kept_float: None,
            fallback: None,
        }
    }
}

/// Refuses a view whose written-out size is over the tensor budget unless it can be streamed
/// (safetensors or GGUF, copied or cast) and, for a view that repeats its elements, the user
/// asked for it to be materialized.
fn check_view(
    t: &TensorEntry,
    target: TargetFormat,
    action: Action,
    materialize: bool,
) -> Result<()> {
    let budget = crate::budget::TENSOR.bytes();
    if !t.is_gathered_view() || t.nbytes() <= budget {
        return Ok(());
    }
    let size = crate::units::human(t.nbytes());
    let limit = crate::units::human(budget);
    if let (Some(span), false) = (t.repeated_span(), materialize) {
        return Err(Error::tensor(
            t.file.as_ref(),
            &t.name,
            format!(
                "a view that repeats {span} stored element(s) as {:?}: {size} once written out, over the \
                 {limit} tensor budget. Pass --materialize-views to write it in full (streamed, memory \
                 stays bounded), or re-save it in PyTorch as the small tensor it expands from",
                t.shape
            ),
        ));
    }
    let streams = matches!(target, TargetFormat::Safetensors | TargetFormat::Gguf)
        && matches!(action, Action::Copy | Action::Cast);
    if streams {
        return Ok(());
    }
    Err(Error::tensor(
        t.file.as_ref(),
        &t.name,
        format!(
            "a strided view of {size}, over the {limit} tensor budget: only safetensors and GGUF \
             output without quantization stream it; {target} output holds one tensor in memory \
             (raise {}=BYTES if the machine has the memory)",
            crate::budget::TENSOR.env
        ),
    ))
}

/// The output dtype and action for one tensor, why it stayed float if quantization was asked
/// for but does not apply, and why it got a fallback type.
fn decide(
    t: &TensorEntry,
    name: &str,
    target: TargetFormat,
    opts: &ConvertOptions,
) -> Result<Decision> {
    let float_target = first_match(&opts.keep, name).or(opts.dtype);
    if t.dtype.is_quantized() {
        return Ok(match float_target {
            Some(d) => Decision::plain(d, Action::Dequantize),
            None if target.holds(t.dtype) => Decision::plain(t.dtype, Action::Copy),
            None => Decision::plain(DType::F32, Action::Dequantize),
        });
    }
    if !t.dtype.is_float() {
        return Ok(Decision::plain(t.dtype, Action::Copy));
    }
    let float_to = float_target.unwrap_or(t.dtype);
    let float_action = if float_to == t.dtype {
        Action::Copy
    } else {
        Action::Cast
    };
    let forced = first_match(&opts.quant_rules, name);
    let Some(q) = forced.or(opts.quant) else {
        return Ok(Decision::plain(float_to, float_action));
    };
    if !q.is_quantized() {
        let action = if q == t.dtype {
            Action::Copy
        } else {
            Action::Cast
        };
        return Ok(Decision::plain(q, action));
    }
    if !target.holds(q) {
        return Err(Error::Invalid(format!(
            "{target} cannot hold {q} tensors; quantized output needs --to gguf"
        )));
    }
    let reason = match quant::can_quantize(&t.shape, q) {
        Ok(()) => return Ok(Decision::plain(q, Action::Quantize)),
        Err(reason) => reason,
    };
    // A matrix whose rows do not fit the k-quant's super-blocks gets llama.cpp's fallback.
    if t.shape.len() >= 2 {
        if let Some(fb) = quant::k_quant_fallback(q) {
            if quant::can_quantize(&t.shape, fb).is_ok() {
                let row = t.shape[t.shape.len() - 1];
                return Ok(Decision {
                    to: fb,
                    action: Action::Quantize,
                    kept_float: None,
                    fallback: Some(format!(
                        "rows of {row} are not a multiple of {q}'s {}: llama.cpp's fallback {fb}",
                        q.block_elems()
                    )),
                });
            }
        }
    }
    Ok(Decision {
        to: float_to,
        action: float_action,
        kept_float: Some(reason),
        fallback: None,
    })
}

/// The checkpoint to plan from: with llama.cpp's tensor names and layouts when a known
/// architecture goes to GGUF, with Hugging Face's when a known GGUF goes anywhere else, and
/// as it is otherwise (or with `keep_names`).
pub fn prepare(
    ck: Checkpoint,
    target: TargetFormat,
    keep_names: bool,
) -> Result<(Checkpoint, Option<LayoutReport>)> {
    let direction = match (ck.format == Format::Gguf, target == TargetFormat::Gguf) {
        _ if keep_names => return Ok((ck, None)),
        (false, true) => Direction::ToGguf,
        (true, false) => Direction::ToHf,
        _ => return Ok((ck, None)),
    };
    match crate::arch::detect(&ck)? {
        Some(layout) => {
            let (out, report) = crate::arch::relayout(&ck, layout, direction)?;
            Ok((out, Some(report)))
        }
        None => Ok((ck, None)),
    }
}

/// Writes the plan's output to `path` in the plan's target format. `shard_bytes` splits
/// safetensors output into shards. Returns the files written.
pub fn write(
    plan: &Plan,
    ck: &Checkpoint,
    path: &Path,
    metadata: &Metadata,
    shard_bytes: Option<u64>,
    progress: Progress<'_>,
) -> Result<Vec<PathBuf>> {
    let outs = plan.out_tensors(ck);
    // Once a tensor is written, its source pages are released, so resident memory stays
    // bounded by the tensor in flight rather than growing to the size of the model.
    let sources: HashMap<&str, usize> = plan
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e.index))
        .collect();
    let mut on_written = |name: &str, bytes: u64| {
        if let Some(&i) = sources.get(name) {
            ck.tensors[i].storage.release();
        }
        progress(name, bytes);
    };
    let progress: Progress<'_> = &mut on_written;
    if shard_bytes.is_some() && plan.target != TargetFormat::Safetensors {
        return Err(Error::Invalid(
            "--shard-size applies to safetensors output only".into(),
        ));
    }
    match plan.target {
        TargetFormat::Safetensors => match shard_bytes {
            Some(n) => crate::formats::sharded::write(path, &outs, metadata, n, progress),
            None => crate::formats::safetensors::write(path, &outs, metadata, progress)
                .map(|_| vec![path.to_path_buf()]),
        },
        TargetFormat::Gguf => crate::formats::gguf::write(path, &outs, metadata, progress)
            .map(|_| vec![path.to_path_buf()]),
        TargetFormat::Npz => crate::formats::numpy::write_npz(path, &outs, metadata, progress)
            .map(|_| vec![path.to_path_buf()]),
        TargetFormat::Pth => crate::formats::pytorch::write(path, &outs, metadata, progress)
            .map(|_| vec![path.to_path_buf()]),
    }
}

/// The metadata to write with `ck` as the plan's target: the source's own, plus for GGUF the
/// llama.cpp-style `general.*`, architecture and `tokenizer.ggml.*` keys derived from a model
/// folder's `config.json` and `tokenizer.json` when they travel with the checkpoint, and
/// `general.file_type` from the plan's main weight type.
pub fn output_metadata(ck: &Checkpoint, plan: &Plan) -> Result<Metadata> {
    use crate::meta::MetaValue;
    let mut m = ck.metadata.clone();
    if plan.target != TargetFormat::Gguf {
        return Ok(m);
    }
    let (config, tokenizer) = (ck.companion("config.json"), ck.companion("tokenizer.json"));
    if config.is_some() || tokenizer.is_some() {
        let dir = ck.path.parent().and_then(|d| d.file_name());
        let name = dir
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        let derived = crate::formats::gguf::hf_metadata(
            config.map(PathBuf::as_path),
            tokenizer.map(PathBuf::as_path),
            &name,
        )?;
        for (k, v) in derived {
            m.entry(k).or_insert(v);
        }
    }
    if let Some(l) = plan
        .layout
        .as_ref()
        .filter(|l| l.direction == Direction::ToGguf)
    {
        crate::formats::gguf::hf::as_llama_cpp_arch(&mut m, l.layout.family);
        // The BERT family's keys convert_hf_to_gguf.py derives per model (DistilBERT's
        // hyper-parameter names, RoBERTa's shortened context, the token-type count).
        if let (Family::Bert, Some(cfg)) = (l.layout.family, config) {
            let text = std::fs::read(cfg).map_err(|e| Error::io(cfg, e))?;
            let v: serde_json::Value = serde_json::from_slice(&text)
                .map_err(|e| Error::malformed(cfg, format!("not valid JSON: {e}")))?;
            crate::arch::bert_gguf_metadata(&mut m, &l.layout, &v, ck);
        }
    }
    if let Some(ft) = plan.main_dtype().and_then(quant::gguf_file_type) {
        m.insert("general.file_type".into(), MetaValue::U32(ft));
    }
    if plan.entries.iter().any(|e| e.to.is_quantized()) {
        m.insert("general.quantization_version".into(), MetaValue::U32(2));
    }
    let used = plan.imatrix_uses().0.len();
    if let (Some(im), true) = (&plan.imatrix, used > 0) {
        imatrix_provenance(&mut m, im);
    }
    Ok(m)
}

/// The keys `llama-quantize --imatrix` writes into the model it quantizes
/// (`quantize.imatrix.file` where the matrix came from one, `.dataset`, `.entries_count`,
/// `.chunks_count`), and ferry's `quantize.imatrix.languages` when the matrix records them.
fn imatrix_provenance(m: &mut Metadata, im: &Imatrix) {
    use crate::meta::MetaValue;
    let file = im
        .path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A matrix made in memory (`--quant auto`'s calibration) has no file to name.
    if !file.is_empty() {
        m.insert("quantize.imatrix.file".into(), MetaValue::String(file));
    }
    // llama-quantize records the first dataset only.
    if let Some(d) = im.datasets.first() {
        m.insert(
            "quantize.imatrix.dataset".into(),
            MetaValue::String(d.clone()),
        );
    }
    m.insert(
        "quantize.imatrix.entries_count".into(),
        MetaValue::U32(u32::try_from(im.entries.len()).unwrap_or(u32::MAX)),
    );
    m.insert(
        "quantize.imatrix.chunks_count".into(),
        MetaValue::U32(im.chunk_count),
    );
    let langs = im.languages();
    if !langs.is_empty() {
        m.insert(
            "quantize.imatrix.languages".into(),
            MetaValue::Array(langs.into_iter().map(MetaValue::String).collect()),
        );
    }
}

/// For a known GGUF written back to Hugging Face names: a `config.json` derived from its
/// metadata, written into `dir` unless one is there already (transformers and ferry's runtime
/// need it to know the architecture). Returns the file written.
pub fn write_hf_config(ck: &Checkpoint, plan: &Plan, dir: &Path) -> Result<Option<PathBuf>> {
    let Some(l) = plan
        .layout
        .as_ref()
        .filter(|l| l.direction == Direction::ToHf)
    else {
        return Ok(None);
    };
    let path = dir.join("config.json");
    if path.exists() {
        return Ok(None);
    }
    let Some(cfg) = crate::arch::hf_config(ck, &l.layout) else {
        return Ok(None);
    };
    let text = serde_json::to_string_pretty(&cfg).map_err(|e| Error::Invalid(e.to_string()))?;
    crate::atomic::write_atomic(&path, |w| {
        std::io::Write::write_all(w, text.as_bytes()).map_err(|e| Error::io(&path, e))
    })?;
    Ok(Some(path))
}
