//! Importance matrices in llama.cpp's GGUF form (`llama-imatrix` writes it, `llama-quantize
//! --imatrix` reads it), and quantization weighted by one.
//!
//! The file: `general.type = "imatrix"`, `imatrix.datasets` (array of strings),
//! `imatrix.chunk_count` and `imatrix.chunk_size` (u32), and for every weight matrix `W`
//! (llama.cpp's name, `blk.0.attn_q.weight`) two f32 tensors: `W.in_sum2` (ggml `[columns,
//! matrices]`: the sum over tokens of each input column's square) and `W.counts` (`[1,
//! matrices]`: the tokens summed). llama.cpp divides one by the other: the mean of squared
//! inputs per column, the weight each column's rounding error gets when the matrix is
//! quantized. ferry adds its provenance under `ferry.imatrix.*` (languages, tokens per
//! language, alpha, seed, model); llama.cpp ignores keys it does not know.
//!
//! Reading goes through ferry's bounds-checked GGUF reader: a truncated or hostile file is an
//! error naming it, never a panic, and nothing is allocated beyond what the file holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::meta::{MetaValue, Metadata};
use crate::quant::{self, QuantError};
use crate::write::OutTensor;

/// `general.type` of an importance matrix.
pub const GENERAL_TYPE: &str = "imatrix";
/// llama.cpp's key: the text files the matrix was computed on.
pub const KEY_DATASETS: &str = "imatrix.datasets";
/// llama.cpp's key: how many chunks (sequences) were run.
pub const KEY_CHUNK_COUNT: &str = "imatrix.chunk_count";
/// llama.cpp's key: tokens per chunk (ferry: the most tokens one sequence may have).
pub const KEY_CHUNK_SIZE: &str = "imatrix.chunk_size";
/// ferry's key: the languages of the calibration text (array of strings).
pub const KEY_LANGUAGES: &str = "ferry.imatrix.languages";
/// ferry's key: tokens run per language, in [`KEY_LANGUAGES`] order (array of u64).
pub const KEY_LANGUAGE_TOKENS: &str = "ferry.imatrix.language_tokens";

const SUM2: &str = ".in_sum2";
const COUNTS: &str = ".counts";
const SUM: &str = ".in_sum";

/// A weight's `in_sum2` and `counts` tensors, in that order, each `None` until found.
type TensorPair<'a> = [Option<&'a crate::tensor::TensorEntry>; 2];

/// One weight matrix's statistics (several matrices for a mixture of experts' stacked
/// tensors, as llama.cpp stores them).
#[derive(Debug, Clone, PartialEq)]
pub struct ImatrixEntry {
    /// Sum over tokens of each input column's square, matrix after matrix (`in_sum2`).
    pub sum_sq: Vec<f32>,
    /// Tokens summed, one per matrix (`counts`).
    pub counts: Vec<f32>,
}

impl ImatrixEntry {
    /// Input columns per matrix.
    pub fn columns(&self) -> usize {
        self.sum_sq.len() / self.counts.len().max(1)
    }

    /// What quantization weighs each column by: the mean of its squared input (`in_sum2 /
    /// counts`, as llama-quantize computes it; a matrix never reached weighs every column 1).
    pub fn importance(&self) -> Vec<f32> {
        let cols = self.columns();
        self.sum_sq
            .chunks(cols.max(1))
            .zip(&self.counts)
            .flat_map(|(sums, &n)| sums.iter().map(move |&s| if n > 0.0 { s / n } else { 1.0 }))
            .collect()
    }
}

/// An importance matrix: per weight matrix, the statistics of its inputs, with where they
/// came from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Imatrix {
    /// The file it was read from (empty when built in memory).
    pub path: PathBuf,
    /// Entries by weight name (llama.cpp's names), sorted.
    pub entries: BTreeMap<String, ImatrixEntry>,
    /// `imatrix.datasets`.
    pub datasets: Vec<String>,
    /// `imatrix.chunk_count`.
    pub chunk_count: u32,
    /// `imatrix.chunk_size`.
    pub chunk_size: u32,
    /// Every other key of the file (`ferry.imatrix.*` provenance, ...), written back as given.
    pub extra: Metadata,
}

/// The f32 values of a tensor of `ck` (little-endian, any alignment).
fn f32_values(t: &crate::tensor::TensorEntry) -> Result<Vec<f32>> {
    let bytes = t.data()?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Refuses a file at `path` that does not start with GGUF's magic (llama.cpp's legacy `.dat`
/// form among them), with how to get a GGUF importance matrix instead.
fn check_gguf_magic(path: &Path) -> Result<()> {
    let mut head = [0u8; 4];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .map_err(|e| Error::io(path, e))?;
    if n < 4 || &head != b"GGUF" {
        return Err(Error::malformed(
            path,
            "not a GGUF importance matrix (llama.cpp's legacy .dat form is not read: \
             convert it with `llama-imatrix --in-file FILE.dat -o FILE.gguf`, or make one \
             with `ferry calibrate MODEL --out imatrix.gguf`)",
        ));
    }
    Ok(())
}

/// Refuses a GGUF whose `general.type` in `metadata` is set to anything but
/// [`GENERAL_TYPE`] (a model, say).
fn check_general_type(path: &Path, metadata: &Metadata) -> Result<()> {
    match metadata.get("general.type").and_then(MetaValue::as_str) {
        None | Some(GENERAL_TYPE) => Ok(()),
        Some(other) => Err(Error::malformed(
            path,
            format!(
                "is a GGUF `{other}` (general.type), not an importance matrix; make one \
                 with `ferry calibrate MODEL --out imatrix.gguf`"
            ),
        )),
    }
}

/// The `in_sum2` and `counts` tensors of each weight (in that order, either possibly
/// missing), by weight name. `.in_sum` tensors are skipped; any other tensor, or one that is
/// not f32, is an error.
fn pair_tensors<'a>(
    path: &Path,
    tensors: &'a [crate::tensor::TensorEntry],
) -> Result<BTreeMap<String, TensorPair<'a>>> {
    let mut parts: BTreeMap<String, TensorPair<'a>> = BTreeMap::new();
    for t in tensors {
        let (base, slot) = if let Some(b) = t.name.strip_suffix(SUM2) {
            (b, 0)
        } else if let Some(b) = t.name.strip_suffix(COUNTS) {
            (b, 1)
        } else if t.name.ends_with(SUM) {
            continue; // llama.cpp's newer per-column sums: not needed to quantize
        } else {
            return Err(Error::tensor(
                path,
                &t.name,
                "is not an importance-matrix tensor (`<weight>.in_sum2`, `<weight>.counts`); \
                 is this a model file rather than an imatrix?",
            ));
        };
        if t.dtype != DType::F32 {
            return Err(Error::tensor(
                path,
                &t.name,
                format!("is {}; importance-matrix tensors are f32", t.dtype),
            ));
        }
        parts.entry(base.to_string()).or_default()[slot] = Some(t);
    }
    Ok(parts)
}

/// The entry of weight `name` from its `in_sum2` and `counts` tensors: both present, the sums
/// whole matrices of the counts, every value finite and non-negative.
fn read_entry(path: &Path, name: &str, [sums, counts]: TensorPair<'_>) -> Result<ImatrixEntry> {
    let (Some(sums), Some(counts)) = (sums, counts) else {
        let (has, lacks) = if sums.is_some() {
            (SUM2, COUNTS)
        } else {
            (COUNTS, SUM2)
        };
        return Err(Error::tensor(
            path,
            format!("{name}{has}"),
            format!("has no `{name}{lacks}` beside it (truncated or corrupt imatrix)"),
        ));
    };
    let (sum_sq, counts) = (f32_values(sums)?, f32_values(counts)?);
    let tensor_err = |msg: String| Error::tensor(path, format!("{name}{SUM2}"), msg);
    if counts.is_empty() || sum_sq.is_empty() || sum_sq.len() % counts.len() != 0 {
        return Err(tensor_err(format!(
            "{} sums do not split into {} matrices (one count each)",
            sum_sq.len(),
            counts.len()
        )));
    }
    let invalid = |v: &[f32]| v.iter().position(|x| !x.is_finite() || *x < 0.0);
    if let Some(i) = invalid(&sum_sq) {
        return Err(tensor_err(format!(
            "value {} at {i} is not a finite non-negative sum of squares",
            sum_sq[i]
        )));
    }
    if let Some(i) = invalid(&counts) {
        return Err(Error::tensor(
            path,
            format!("{name}{COUNTS}"),
            format!(
                "count {} at {i} is not a finite non-negative number",
                counts[i]
            ),
        ));
    }
    Ok(ImatrixEntry { sum_sq, counts })
}

/// Removes [`KEY_DATASETS`] from `extra` and returns its strings (none when absent); any
/// other value is an error.
fn take_datasets(path: &Path, extra: &mut Metadata) -> Result<Vec<String>> {
    let bad = |msg: String| Error::malformed(path, msg);
    match extra.remove(KEY_DATASETS) {
        None => Ok(Vec::new()),
        Some(MetaValue::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad(format!("`{KEY_DATASETS}` is not an array of strings"))),
        Some(other) => Err(bad(format!(
            "`{KEY_DATASETS}` is {}, not an array of strings",
            other.display_short()
        ))),
    }
}

/// Removes `key` from `extra` and returns it as a u32 (0 when absent); a value that is not
/// one is an error.
fn take_u32(path: &Path, extra: &mut Metadata, key: &str) -> Result<u32> {
    match extra.remove(key) {
        None => Ok(0),
        Some(v) => v
            .as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| {
                Error::malformed(path, format!("`{key}` is {}, not a u32", v.display_short()))
            }),
    }
}

impl Imatrix {
    /// Reads llama.cpp's GGUF importance matrix at `path`. Errors name the file, and the
    /// tensor where there is one: not a GGUF (llama.cpp's legacy `.dat` form is not read), a
    /// GGUF of another kind (a model), tensors other than `<weight>.in_sum2`/`.counts`/
    /// `.in_sum`, sums without counts, non-f32 or non-finite or negative values, no entries.
    pub fn read(path: &Path) -> Result<Imatrix> {
        check_gguf_magic(path)?;
        let ck = crate::formats::gguf::open(path)?;
        check_general_type(path, &ck.metadata)?;
        let parts = pair_tensors(path, &ck.tensors)?;
        let mut entries = BTreeMap::new();
        for (name, pair) in parts {
            let entry = read_entry(path, &name, pair)?;
            entries.insert(name, entry);
        }
        if entries.is_empty() {
            return Err(Error::malformed(
                path,
                "holds no importance-matrix entries (`<weight>.in_sum2` with `<weight>.counts`)",
            ));
        }
        let mut extra = ck.metadata;
        extra.remove("ferry.gguf_version");
        extra.remove("general.type");
        let datasets = take_datasets(path, &mut extra)?;
        let chunk_count = take_u32(path, &mut extra, KEY_CHUNK_COUNT)?;
        let chunk_size = take_u32(path, &mut extra, KEY_CHUNK_SIZE)?;
        Ok(Imatrix {
            path: path.to_path_buf(),
            entries,
            datasets,
            chunk_count,
            chunk_size,
            extra,
        })
    }

    /// The metadata as written: llama.cpp's keys, then [`Imatrix::extra`].
    pub fn metadata(&self) -> Metadata {
        let mut m = self.extra.clone();
        m.insert(
            "general.type".into(),
            MetaValue::String(GENERAL_TYPE.into()),
        );
        m.insert(
            KEY_DATASETS.into(),
            MetaValue::Array(
                self.datasets
                    .iter()
                    .map(|d| MetaValue::String(d.clone()))
                    .collect(),
            ),
        );
        m.insert(KEY_CHUNK_COUNT.into(), MetaValue::U32(self.chunk_count));
        m.insert(KEY_CHUNK_SIZE.into(), MetaValue::U32(self.chunk_size));
        m
    }

    /// Writes the matrix as llama.cpp's GGUF form at `path` (atomically): entries in name
    /// order, each `in_sum2` then `counts`, as `llama-imatrix` orders them. The same matrix
    /// gives the same bytes.
    pub fn write(&self, path: &Path) -> Result<()> {
        for (name, e) in &self.entries {
            if e.counts.is_empty() || e.sum_sq.len() % e.counts.len() != 0 {
                return Err(Error::tensor(
                    path,
                    name,
                    format!(
                        "{} sums do not split into {} matrices",
                        e.sum_sq.len(),
                        e.counts.len()
                    ),
                ));
            }
        }
        let tensors: Vec<OutTensor<'_>> = self
            .entries
            .iter()
            .flat_map(|(name, e)| {
                let nmat = e.counts.len();
                let f32_bytes =
                    |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
                let (sums, counts) = (f32_bytes(&e.sum_sq), f32_bytes(&e.counts));
                [
                    OutTensor::new(
                        format!("{name}{SUM2}"),
                        DType::F32,
                        vec![nmat, e.columns()],
                        move || Ok(sums.clone().into()),
                    ),
                    OutTensor::new(
                        format!("{name}{COUNTS}"),
                        DType::F32,
                        vec![nmat, 1],
                        move || Ok(counts.clone().into()),
                    ),
                ]
            })
            .collect();
        crate::formats::gguf::write(path, &tensors, &self.metadata(), &mut |_, _| {})
    }

    /// How messages name the matrix: its file, or for one made in memory (`--quant auto`'s
    /// calibration) the text it was calibrated on.
    pub fn label(&self) -> String {
        if self.path.as_os_str().is_empty() {
            format!(
                "calibrated in memory on {}",
                self.datasets.first().map_or("its sample", String::as_str)
            )
        } else {
            self.path.display().to_string()
        }
    }

    /// The languages the matrix was calibrated on (`ferry.imatrix.languages`), if recorded.
    pub fn languages(&self) -> Vec<String> {
        match self.extra.get(KEY_LANGUAGES) {
            Some(MetaValue::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The importance vector for the 2-D weight `name` with `columns` input columns, `None`
    /// when the matrix has no entry for it. An entry of another width, or one holding several
    /// matrices (a mixture of experts'), is an error naming the tensor, the file and the fix.
    pub fn importance_for(&self, name: &str, columns: usize) -> Result<Option<Vec<f32>>> {
        let Some(e) = self.entries.get(name) else {
            return Ok(None);
        };
        let file = self.path.display();
        if e.counts.len() != 1 {
            return Err(Error::Invalid(format!(
                "{file}: entry `{name}` holds {} matrices (a mixture of experts'); ferry \
                 quantizes 2-D weights with one importance vector each",
                e.counts.len()
            )));
        }
        if e.columns() != columns {
            return Err(Error::Invalid(format!(
                "{file}: tensor `{name}` has {columns} input columns but the importance \
                 matrix's entry has {} values: the imatrix was made for another model (run \
                 `ferry calibrate` on this one)",
                e.columns()
            )));
        }
        Ok(Some(e.importance()))
    }
}

/// Whether quantizing to `dtype` can use an importance vector here: the k-quants (q2_k to
/// q6_k), with candle 0.11.1's ports of llama.cpp's weighted kernels, and q4_0, q4_1, q5_0 and
/// q5_1, with ferry's ([`quant::weighted`]; candle has none). q8_0 ignores the matrix, in
/// llama.cpp too.
pub fn supports(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::Q2K
            | DType::Q3K
            | DType::Q4K
            | DType::Q5K
            | DType::Q6K
            | DType::Q4_0
            | DType::Q4_1
            | DType::Q5_0
            | DType::Q5_1
    )
}

/// Rows handed to one parallel task: about 256 super-blocks' worth.
const ELEMS_PER_TASK: usize = 256 * 256;

/// Quantizes `data` (rows of `columns` f32 values) to `dtype` (see [`supports`]) with an
/// importance-weighted kernel, llama.cpp's `quantize_row_*_impl` with `quant_weights`: candle's
/// `from_float_imatrix` for the k-quants, [`quant::weighted`] for q4_0, q4_1, q5_0 and q5_1.
/// Column `j`'s error weighs `importance[j]` (zeros, columns no calibration token reached,
/// raised to a tiny floor first: a block of them quantizes as if unweighted); the error is
/// measured as [`quant::quantize_measured`] does. Parallel over whole rows (llama.cpp's weights
/// depend on the whole row); the output does not depend on the thread count.
pub fn quantize_measured(
    data: &[f32],
    columns: usize,
    dtype: DType,
    importance: &[f32],
) -> Result<(Vec<u8>, QuantError)> {
    use rayon::prelude::*;
    let ggml = dtype.to_ggml().filter(|_| supports(dtype)).ok_or_else(|| {
        Error::Invalid(format!(
            "{dtype} has no importance-weighted kernel (k-quants, q4_0, q4_1, q5_0 and q5_1 do)"
        ))
    })?;
    let block = dtype.block_elems();
    if columns == 0 || !columns.is_multiple_of(block) || !data.len().is_multiple_of(columns) {
        return Err(Error::Invalid(format!(
            "{} values are not whole rows of {columns} columns in {dtype} blocks of {block}",
            data.len()
        )));
    }
    if importance.len() != columns {
        return Err(Error::Invalid(format!(
            "{} importance values for rows of {columns}",
            importance.len()
        )));
    }
    if let Some(i) = importance.iter().position(|w| !w.is_finite() || *w < 0.0) {
        return Err(Error::Invalid(format!(
            "importance value {} of column {i} is not finite and non-negative",
            importance[i]
        )));
    }
    // candle's k-quant kernels index with unchecked arithmetic on non-finite input, and no
    // weighted kernel can encode it.
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!(
            "value {} at element {i} is not finite; {dtype} cannot encode it",
            data[i]
        )));
    }
    let importance = &floored(importance);
    let own = quant::weighted::kernel(dtype);
    let rows_per_task = (ELEMS_PER_TASK / columns).max(1);
    let row_bytes = columns / block * dtype.block_bytes();
    let mut out = vec![0u8; data.len() / columns * row_bytes];
    let sums = out
        .par_chunks_mut(rows_per_task * row_bytes)
        .zip(data.par_chunks(rows_per_task * columns))
        .map(|(dst, src)| {
            if let Some(kernel) = own {
                // Whole rows of `columns`, the importance vector's length: sizes checked above.
                kernel(src, importance, dst);
            } else {
                let mut q = ggml.cpu_zeros(src.len());
                // Whole rows: candle finds each block's column from its index within the chunk.
                q.from_float_imatrix(src, importance, columns);
                let n = q.storage_size_in_bytes();
                if n != dst.len() {
                    return Err(Error::Invalid(format!(
                        "candle produced {n} bytes for {} {dtype} values, expected {}",
                        src.len(),
                        dst.len()
                    )));
                }
                // SAFETY: `q` is a live Vec of plain-old-data blocks; `as_ptr` points at its
                // first byte and `storage_size_in_bytes` is its exact length in bytes.
                dst.copy_from_slice(unsafe { std::slice::from_raw_parts(q.as_ptr(), n) });
            }
            let back = quant::dequantize(dst, dtype, src.len())?;
            if let Some(i) = back.iter().position(|v| !v.is_finite()) {
                return Err(Error::Invalid(format!(
                    "importance-weighted {dtype} gave a non-finite value at element {i} of a \
                     task's rows (an importance vector of zeros over a whole block?)"
                )));
            }
            Ok(ErrorSums::of(src, &back))
        })
        .collect::<Result<Vec<ErrorSums>>>()?;
    let total = sums
        .into_iter()
        .fold(ErrorSums::default(), ErrorSums::merge);
    Ok((out, total.finish()))
}

/// `importance` with its zeros raised to a millionth of a millionth of its mean (all ones if
/// it is all zeros). A column no calibration token reached has importance 0, and a whole block
/// of them makes llama.cpp's weighted kernels divide 0 by 0 (the k-quants, which candle ports)
/// or zero the block (q4_0 and q5_0: scale 0); a tiny weight quantizes such a block as if
/// unweighted instead, and leaves every other block as llama.cpp would quantize it (the floor
/// is far below an f32 ulp of the other columns' terms, so the sums come out the same).
fn floored(importance: &[f32]) -> Vec<f32> {
    let mean =
        importance.iter().map(|&w| f64::from(w)).sum::<f64>() / importance.len().max(1) as f64;
    if mean <= 0.0 {
        return vec![1.0; importance.len()];
    }
    let floor = (mean * 1e-12).max(f64::from(f32::MIN_POSITIVE)) as f32;
    importance.iter().map(|&w| w.max(floor)).collect()
}

/// Running sums behind a [`QuantError`], per task, merged exactly (f64).
#[derive(Debug, Default, Clone, Copy)]
struct ErrorSums {
    sq: f64,
    dot: f64,
    na: f64,
    nb: f64,
    max_abs: f64,
    n: usize,
}

impl ErrorSums {
    fn of(a: &[f32], b: &[f32]) -> ErrorSums {
        let mut s = ErrorSums {
            n: a.len(),
            ..ErrorSums::default()
        };
        for (&x, &y) in a.iter().zip(b) {
            let (x, y) = (f64::from(x), f64::from(y));
            s.sq += (x - y) * (x - y);
            s.dot += x * y;
            s.na += x * x;
            s.nb += y * y;
            s.max_abs = s.max_abs.max((x - y).abs());
        }
        s
    }

    fn merge(self, o: ErrorSums) -> ErrorSums {
        ErrorSums {
            sq: self.sq + o.sq,
            dot: self.dot + o.dot,
            na: self.na + o.na,
            nb: self.nb + o.nb,
            max_abs: self.max_abs.max(o.max_abs),
            n: self.n + o.n,
        }
    }

    fn finish(self) -> QuantError {
        let cosine = if self.na == 0.0 && self.nb == 0.0 {
            1.0
        } else if self.na == 0.0 || self.nb == 0.0 {
            0.0
        } else {
            self.dot / (self.na.sqrt() * self.nb.sqrt())
        };
        QuantError {
            rmse: (self.sq / self.n.max(1) as f64).sqrt(),
            max_abs: self.max_abs,
            cosine,
        }
    }
}
