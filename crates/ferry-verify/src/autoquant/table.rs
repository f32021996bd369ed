//! The tensors a type is chosen for, and what each candidate type costs them: bytes, and the
//! rounding error weighted by each input column's mean square activation (the error a matrix
//! product sees, `E|ΔW x|²` for inputs with those second moments).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;
use ferry_io::convert::{self, Action, ConvertOptions, Plan, TargetFormat};
use ferry_io::imatrix::{self, Imatrix};
use ferry_io::{quant, Checkpoint, DType};
use serde::Serialize;

use crate::error::{Error, Result};

/// One candidate type for one tensor.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Candidate {
    /// The type.
    pub dtype: DType,
    /// Bytes the tensor takes in it.
    pub bytes: u64,
    /// Squared rounding error, each column weighted by its mean square input, as the
    /// predictor uses it: `rounding`, scaled by the type check (`plan`'s `correct_types`).
    pub error: f64,
    /// Squared rounding error, each column weighted by its mean square input, as measured.
    pub rounding: f64,
}

/// A tensor whose type is chosen.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Its name in the output (llama.cpp's).
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Index of its group in [`Table::groups`].
    pub group: usize,
    /// The candidate types it can take, cheapest first.
    pub options: Vec<Candidate>,
}

/// Every tensor whose type is chosen, with its candidates.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    /// The tensors.
    pub entries: Vec<Entry>,
    /// Group names: a kind of matrix over a band of blocks (`ffn_down[0-9]`), or one tensor.
    pub groups: Vec<String>,
    /// Bytes of the tensors no type is chosen for (norms and biases stay f32).
    pub fixed_bytes: u64,
    /// Elements of every tensor written.
    pub params: u64,
}

impl Table {
    /// Bytes when entry `i` takes option `choice[i]`, with the fixed tensors.
    pub fn bytes(&self, choice: &[usize]) -> u64 {
        self.fixed_bytes
            + self
                .entries
                .iter()
                .zip(choice)
                .map(|(e, &k)| e.options[k].bytes)
                .sum::<u64>()
    }
}

/// The group of the llama.cpp-named tensor `name` when blocks are cut into `bands` bands of
/// `layers`: `(kind, Some(band))` for `blk.N.KIND.weight`, `(name, None)` otherwise.
fn group_of(name: &str, layers: usize, bands: usize) -> String {
    let parts: Vec<&str> = name.splitn(3, '.').collect();
    if let [_, n, rest] = parts[..] {
        if let (true, Ok(n)) = (name.starts_with("blk."), n.parse::<usize>()) {
            let kind = rest.strip_suffix(".weight").unwrap_or(rest);
            let bands = bands.clamp(1, layers.max(1));
            let band = n * bands / layers.max(1);
            let first = (band * layers).div_ceil(bands);
            let last = ((band + 1) * layers).div_ceil(bands) - 1;
            return format!("{kind}[{first}-{last}]");
        }
    }
    name.strip_suffix(".weight").unwrap_or(name).to_string()
}

/// The value `data` (rows of `columns`) takes back after quantizing to `dtype` (weighted by
/// `importance` where the type has an importance-weighted kernel) and dequantizing; `f16`
/// rounds through half precision.
pub fn fake_quant(
    data: &[f32],
    columns: usize,
    dtype: DType,
    importance: Option<&[f32]>,
) -> Result<Vec<f32>> {
    if dtype == DType::F16 {
        let t = candle_core::Tensor::from_slice(data, data.len(), &Device::Cpu)?;
        return Ok(t
            .to_dtype(candle_core::DType::F16)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1()?);
    }
    let bytes = match importance.filter(|_| imatrix::supports(dtype)) {
        Some(w) => imatrix::quantize_measured(data, columns, dtype, w)?.0,
        None => quant::quantize(data, dtype)?,
    };
    Ok(quant::dequantize(&bytes, dtype, data.len())?)
}

/// Whether `dtype` can hold a tensor of `shape` (quantized types need whole blocks per row).
pub fn fits(shape: &[usize], dtype: DType) -> bool {
    dtype == DType::F16 || quant::can_quantize(shape, dtype).is_ok()
}

fn weighted_error(a: &[f32], b: &[f32], columns: usize, weights: Option<&[f32]>) -> f64 {
    let mut sum = 0.0;
    for (ra, rb) in a.chunks(columns).zip(b.chunks(columns)) {
        for (j, (&x, &y)) in ra.iter().zip(rb).enumerate() {
            let d = f64::from(x) - f64::from(y);
            sum += weights.map_or(1.0, |w| f64::from(w[j])) * d * d;
        }
    }
    sum
}

/// The table for the model at `path` written as a GGUF: every weight of two or more
/// dimensions that some candidate fits, in llama.cpp's names, grouped by kind over `bands`
/// bands of blocks. `quantize_with` weighs quantization (types with a weighted kernel) as
/// `--imatrix` would; `weigh_errors` weighs the measured errors by its columns' mean squares.
/// `progress(done, total)` counts tensors.
pub fn build(
    path: &Path,
    candidates: &[DType],
    bands: usize,
    quantize_with: Option<&Imatrix>,
    weigh_errors: Option<&Imatrix>,
    mut progress: impl FnMut(usize, usize),
) -> Result<Table> {
    let ck = Checkpoint::open(path)?;
    let (ck, _) = convert::prepare(ck, TargetFormat::Gguf, false)?;
    // A plan quantizing everything it can to the finest GGML type tells which tensors are
    // weights (quantizable) and which stay float.
    let base = Plan::new(
        &ck,
        TargetFormat::Gguf,
        &ConvertOptions {
            quant: Some(DType::Q8_0),
            ..ConvertOptions::default()
        },
    )?;
    let layers = block_count(&base);
    let parts = Partition::new(&base, candidates);
    if parts.chosen.is_empty() {
        return Err(Error::Options(format!(
            "{}: no weight matrix can take any of the candidate types",
            path.display()
        )));
    }
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    let mut entries = Vec::with_capacity(parts.chosen.len());
    let total = parts.chosen.len();
    for (i, (name, shape, fitting)) in parts.chosen.into_iter().enumerate() {
        progress(i, total);
        let options = measure(&ck, &name, &shape, fitting, quantize_with, weigh_errors)?;
        let g = group_of(&name, layers, bands);
        let next = groups.len();
        let group = *groups.entry(g).or_insert(next);
        entries.push(Entry {
            name,
            shape,
            group,
            options,
        });
    }
    progress(total, total);
    let mut names = vec![String::new(); groups.len()];
    for (g, i) in groups {
        names[i] = g;
    }
    Ok(Table {
        entries,
        groups: names,
        fixed_bytes: parts.fixed_bytes,
        params: parts.params,
    })
}

/// Blocks of the model `base` plans (one past the highest `blk.N`), 0 when it has none.
fn block_count(base: &Plan) -> usize {
    base.entries
        .iter()
        .filter_map(|e| {
            e.name
                .strip_prefix("blk.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |n| n + 1)
}

/// The tensors of a plan, parted into those a type is chosen for and those that stay as
/// planned.
struct Partition {
    /// Each tensor a type is chosen for: its name, shape and the candidates that fit it.
    chosen: Vec<(String, Vec<usize>, Vec<DType>)>,
    /// Bytes of the others, as planned.
    fixed_bytes: u64,
    /// Elements of every tensor written (tied copies left out).
    params: u64,
}

impl Partition {
    /// Parts the tensors of `base`: a weight it quantizes that some of `candidates` fit is
    /// chosen for.
    fn new(base: &Plan, candidates: &[DType]) -> Partition {
        let mut parts = Partition {
            chosen: Vec::new(),
            fixed_bytes: 0,
            params: 0,
        };
        for e in &base.entries {
            let n = ferry_io::tensor::numel(&e.shape).unwrap_or(0);
            if e.tied_to.is_some() {
                continue;
            }
            parts.params += n;
            let fitting: Vec<DType> = candidates
                .iter()
                .copied()
                .filter(|&d| fits(&e.shape, d))
                .collect();
            if e.action != Action::Quantize || fitting.is_empty() {
                parts.fixed_bytes += e.to.storage_bytes(n).unwrap_or(0);
                continue;
            }
            parts
                .chosen
                .push((e.name.clone(), e.shape.clone(), fitting));
        }
        parts
    }
}

/// What each of `fitting` costs tensor `name` of `ck` (of `shape`), cheapest first (the
/// larger error first among equal sizes).
fn measure(
    ck: &Checkpoint,
    name: &str,
    shape: &[usize],
    fitting: Vec<DType>,
    quantize_with: Option<&Imatrix>,
    weigh_errors: Option<&Imatrix>,
) -> Result<Vec<Candidate>> {
    let t = ck
        .get(name)
        .ok_or_else(|| Error::Options(format!("tensor `{name}` vanished from the plan")))?;
    let data: Vec<f32> = t
        .to_candle(&Device::Cpu)?
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    let columns = *shape.last().unwrap_or(&1);
    let q = importance(quantize_with, name, columns)?;
    let w = importance(weigh_errors, name, columns)?;
    let n = data.len() as u64;
    let mut options = Vec::with_capacity(fitting.len());
    for dtype in fitting {
        let back = fake_quant(&data, columns, dtype, q.as_deref())?;
        let rounding = weighted_error(&data, &back, columns, w.as_deref());
        options.push(Candidate {
            dtype,
            bytes: dtype.storage_bytes(n).unwrap_or(u64::MAX),
            error: rounding,
            rounding,
        });
    }
    options.sort_by(|a, b| a.bytes.cmp(&b.bytes).then(b.error.total_cmp(&a.error)));
    Ok(options)
}

/// The mean square input of each of the `columns` of tensor `name`, when `matrix` has them.
fn importance(matrix: Option<&Imatrix>, name: &str, columns: usize) -> Result<Option<Vec<f32>>> {
    Ok(matrix
        .map(|m| m.importance_for(name, columns))
        .transpose()?
        .flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_grouped_by_kind_and_band() {
        assert_eq!(group_of("blk.0.ffn_down.weight", 30, 3), "ffn_down[0-9]");
        assert_eq!(group_of("blk.29.attn_q.weight", 30, 3), "attn_q[20-29]");
        assert_eq!(group_of("blk.3.attn_q.weight", 6, 3), "attn_q[2-3]");
        assert_eq!(group_of("blk.4.attn_q.weight", 5, 2), "attn_q[3-4]");
        assert_eq!(group_of("blk.2.attn_q.weight", 5, 2), "attn_q[0-2]");
        assert_eq!(group_of("token_embd.weight", 30, 3), "token_embd");
    }

    #[test]
    fn fake_quantization_rounds_like_the_written_file() {
        let data: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let back = fake_quant(&data, 256, DType::Q4_0, None).unwrap();
        let file = quant::dequantize(
            &quant::quantize(&data, DType::Q4_0).unwrap(),
            DType::Q4_0,
            256,
        )
        .unwrap();
        assert_eq!(back, file);
        assert!(back != data);
        let half = fake_quant(&data, 256, DType::F16, None).unwrap();
        let err = |b: &[f32]| weighted_error(&data, b, 256, None);
        assert!(err(&half) < err(&back) / 100.0);
        let w: Vec<f32> = (0..256).map(|j| if j < 128 { 1.0 } else { 0.0 }).collect();
        assert!(weighted_error(&data, &back, 256, Some(&w)) < err(&back));
    }
}
