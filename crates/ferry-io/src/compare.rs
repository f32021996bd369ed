//! Numerical comparison of tensors and checkpoints: bit-exactness, max abs/rel error, RMSE,
//! cosine similarity, and the tolerances a conversion is expected to meet. Streams in chunks,
//! so comparing two large tensors never holds either fully in f64.

use serde::Serialize;

use crate::cast::decode_to_f64;
use crate::checkpoint::Checkpoint;
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::TensorEntry;

/// Elements compared per chunk (a multiple of every GGML block size).
const CHUNK: usize = 1 << 20;

/// An allowed difference: `|a - b| <= atol + rtol * |a|` elementwise, or for quantized
/// outputs a minimum cosine similarity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tolerance {
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// Minimum cosine similarity (used instead of atol/rtol when set).
    pub min_cosine: Option<f64>,
}

impl Tolerance {
    /// No difference allowed at all.
    pub const EXACT: Tolerance = Tolerance {
        atol: 0.0,
        rtol: 0.0,
        min_cosine: None,
    };

    /// What converting values from `from` to `to` may change: half a unit in the last place
    /// of `to` (relative), a subnormal's worth absolute, and for quantized types a minimum
    /// cosine similarity per type. Same type: exact.
    pub fn for_conversion(from: DType, to: DType) -> Tolerance {
        if from == to {
            return Tolerance::EXACT;
        }
        let (atol, rtol, min_cosine) = match to {
            DType::F64 => (0.0, 0.0, None),
            DType::F32 => (1e-45, 2f64.powi(-24), None),
            DType::F16 => (2f64.powi(-25), 2f64.powi(-11), None),
            DType::BF16 => (1e-40, 2f64.powi(-8), None),
            DType::F8E4M3 => (2f64.powi(-10), 2f64.powi(-4), None),
            DType::Q8_0 | DType::Q8_1 | DType::Q8K | DType::Q6K => (0.0, 0.0, Some(0.999)),
            DType::Q5_0 | DType::Q5_1 | DType::Q5K => (0.0, 0.0, Some(0.995)),
            DType::Q4_0 | DType::Q4_1 | DType::Q4K => (0.0, 0.0, Some(0.98)),
            DType::Q3K => (0.0, 0.0, Some(0.95)),
            DType::Q2K => (0.0, 0.0, Some(0.85)),
            _ => (0.0, 0.0, None),
        };
        // Coming from a quantized source, the output can only be as good as the source's own
        // dequantization, which ferry reproduces exactly.
        let (atol, rtol) = if from.is_quantized() && to.is_float() {
            let t = Tolerance::for_conversion(DType::F32, to);
            (t.atol, t.rtol)
        } else {
            (atol, rtol)
        };
        Tolerance {
            atol,
            rtol,
            min_cosine,
        }
    }
}

/// How two tensors compare.
#[derive(Debug, Clone, Serialize)]
pub struct TensorComparison {
    /// Name in the first checkpoint.
    pub name: String,
    /// Name in the second checkpoint, when it differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_name: Option<String>,
    /// dtypes `(a, b)`.
    pub dtypes: (DType, DType),
    /// Shapes `(a, b)`.
    pub shapes: (Vec<usize>, Vec<usize>),
    /// Same dtype, shape and bytes.
    pub bit_exact: bool,
    /// Largest `|a - b|` (0 when bit-exact; `None` when shapes differ).
    pub max_abs: Option<f64>,
    /// Largest `|a - b| / |a|` over elements with `a != 0`.
    pub max_rel: Option<f64>,
    /// Root mean square of `a - b`.
    pub rmse: Option<f64>,
    /// Cosine similarity of the flattened tensors (1 when both are all zero).
    pub cosine: Option<f64>,
    /// Elements where exactly one side is NaN, or infinities differ.
    pub nan_mismatches: u64,
    /// Elements outside the tolerance, if one was given.
    pub violations: Option<u64>,
    /// The tolerance applied, if any.
    pub tolerance: Option<Tolerance>,
    /// Whether the comparison passes: bit-exact, or within the tolerance.
    pub ok: bool,
}

#[derive(Default)]
struct Acc {
    max_abs: f64,
    max_rel: f64,
    sq: f64,
    dot: f64,
    na: f64,
    nb: f64,
    n: u64,
    nan_mismatch: u64,
    violations: u64,
}

impl Acc {
    fn add(&mut self, a: &[f64], b: &[f64], tol: Option<&Tolerance>) {
        for (&x, &y) in a.iter().zip(b) {
            self.n += 1;
            if x.is_nan() || y.is_nan() || x.is_infinite() || y.is_infinite() {
                let same = (x.is_nan() && y.is_nan()) || x == y;
                if !same {
                    self.nan_mismatch += 1;
                    self.violations += 1;
                }
                continue;
            }
            let d = (x - y).abs();
            self.max_abs = self.max_abs.max(d);
            if x != 0.0 {
                self.max_rel = self.max_rel.max(d / x.abs());
            }
            self.sq += d * d;
            self.dot += x * y;
            self.na += x * x;
            self.nb += y * y;
            if let Some(t) = tol {
                if t.min_cosine.is_none() && d > t.atol + t.rtol * x.abs() {
                    self.violations += 1;
                }
            }
        }
    }

    fn cosine(&self) -> f64 {
        if self.na == 0.0 && self.nb == 0.0 {
            1.0
        } else if self.na == 0.0 || self.nb == 0.0 {
            0.0
        } else {
            self.dot / (self.na.sqrt() * self.nb.sqrt())
        }
    }
}

/// Byte range of elements `[start, end)` for `dtype` (block-aligned for quantized types).
fn byte_range(dtype: DType, start: usize, end: usize) -> std::ops::Range<usize> {
    let be = dtype.block_elems();
    let bb = dtype.block_bytes();
    (start / be * bb)..(end.div_ceil(be) * bb)
}

/// Releases the mapped pages of tensors when dropped (see [`crate::Storage::release`]).
struct ReleaseOnDrop<'a>(&'a [&'a TensorEntry]);

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.iter().for_each(|t| t.storage.release());
    }
}

/// Compares two tensors element by element (after decoding both to f64), against `tol` when
/// given. Tensors of different shapes are reported, not compared.
pub fn compare_tensors(
    a: &TensorEntry,
    b: &TensorEntry,
    tol: Option<Tolerance>,
) -> Result<TensorComparison> {
    let mut c = TensorComparison {
        name: a.name.clone(),
        other_name: (a.name != b.name).then(|| b.name.clone()),
        dtypes: (a.dtype, b.dtype),
        shapes: (a.shape.clone(), b.shape.clone()),
        bit_exact: false,
        max_abs: None,
        max_rel: None,
        rmse: None,
        cosine: None,
        nan_mismatches: 0,
        violations: None,
        tolerance: tol,
        ok: false,
    };
    if a.shape != b.shape {
        return Ok(c);
    }
    let pair = [a, b];
    let _release = ReleaseOnDrop(&pair);
    let n = a.numel() as usize;
    let mut acc = Acc::default();
    let db = b.data()?;
    let mut same_bytes = a.dtype == b.dtype;
    if a.is_gathered_view() && !a.dtype.is_quantized() {
        // A view (possibly far larger than its storage) is streamed, never held whole.
        let elem = a.dtype.block_bytes();
        let mut start = 0usize;
        a.write_gathered(&mut |chunk| {
            let end = start + chunk.len() / elem;
            let rb = byte_range(b.dtype, start, end);
            same_bytes &= a.dtype == b.dtype && chunk == &db[rb.clone()];
            acc.add(
                &decode_to_f64(chunk, a.dtype)?,
                &decode_to_f64(&db[rb], b.dtype)?,
                tol.as_ref(),
            );
            start = end;
            Ok(())
        })?;
    } else {
        let da = a.data()?;
        same_bytes &= da == db;
        if !same_bytes {
            let mut start = 0;
            while start < n {
                let end = (start + CHUNK).min(n);
                let xa = decode_to_f64(&da[byte_range(a.dtype, start, end)], a.dtype)?;
                let xb = decode_to_f64(&db[byte_range(b.dtype, start, end)], b.dtype)?;
                acc.add(&xa, &xb, tol.as_ref());
                start = end;
            }
        }
    }
    if same_bytes {
        c.bit_exact = true;
        c.ok = true;
        c.max_abs = Some(0.0);
        c.max_rel = Some(0.0);
        c.rmse = Some(0.0);
        c.cosine = Some(1.0);
        c.violations = tol.map(|_| 0);
        return Ok(c);
    }
    c.max_abs = Some(acc.max_abs);
    c.max_rel = Some(acc.max_rel);
    c.rmse = Some(if acc.n == 0 {
        0.0
    } else {
        (acc.sq / acc.n as f64).sqrt()
    });
    c.cosine = Some(acc.cosine());
    c.nan_mismatches = acc.nan_mismatch;
    c.violations = tol.map(|_| acc.violations);
    c.ok = match tol {
        None => false,
        Some(t) => acc.violations == 0 && t.min_cosine.is_none_or(|m| acc.cosine() >= m),
    };
    Ok(c)
}

/// The result of comparing two checkpoints by tensor name.
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// Names only in the first checkpoint.
    pub only_in_a: Vec<String>,
    /// Names only in the second checkpoint.
    pub only_in_b: Vec<String>,
    /// Tensors present in both.
    pub tensors: Vec<TensorComparison>,
}

impl DiffReport {
    /// Whether the checkpoints hold the same names with bit-identical tensors.
    pub fn identical(&self) -> bool {
        self.only_in_a.is_empty()
            && self.only_in_b.is_empty()
            && self.tensors.iter().all(|t| t.bit_exact)
    }

    /// Whether every common tensor passed and no names are missing on either side.
    pub fn ok(&self) -> bool {
        self.only_in_a.is_empty() && self.only_in_b.is_empty() && self.tensors.iter().all(|t| t.ok)
    }
}

/// Compares every tensor `a` and `b` share by name, each against `tol` when given.
pub fn diff(a: &Checkpoint, b: &Checkpoint, tol: Option<Tolerance>) -> Result<DiffReport> {
    let mut tensors = Vec::new();
    let mut only_in_a = Vec::new();
    for ta in &a.tensors {
        match b.get(&ta.name) {
            Some(tb) => tensors.push(compare_tensors(ta, tb, tol)?),
            None => only_in_a.push(ta.name.clone()),
        }
    }
    let only_in_b = b
        .tensors
        .iter()
        .filter(|t| a.get(&t.name).is_none())
        .map(|t| t.name.clone())
        .collect();
    Ok(DiffReport {
        only_in_a,
        only_in_b,
        tensors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{Layout, Storage};
    use std::path::Path;
    use std::sync::Arc;

    fn f32_entry(name: &str, v: &[f32]) -> TensorEntry {
        TensorEntry {
            name: name.into(),
            dtype: DType::F32,
            shape: vec![v.len()],
            storage: Storage::owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            layout: Layout::Contiguous { offset: 0 },
            storage_key: None,
            file: Arc::from(Path::new("mem")),
        }
    }

    #[test]
    fn exact_close_and_far() {
        let a = f32_entry("a", &[1.0, -2.0, 0.5, f32::NAN]);
        let c = compare_tensors(&a, &a.clone(), Some(Tolerance::EXACT)).unwrap();
        assert!(c.bit_exact && c.ok);
        let b = f32_entry("a", &[1.0001, -2.0, 0.5, f32::NAN]);
        let tol = Tolerance {
            atol: 0.0,
            rtol: 1e-3,
            min_cosine: None,
        };
        let c = compare_tensors(&a, &b, Some(tol)).unwrap();
        assert!(!c.bit_exact && c.ok, "{c:?}");
        assert!((c.max_abs.unwrap() - 1e-4).abs() < 1e-6);
        let tight = Tolerance {
            atol: 0.0,
            rtol: 1e-6,
            min_cosine: None,
        };
        let c = compare_tensors(&a, &b, Some(tight)).unwrap();
        assert_eq!(c.violations, Some(1));
        assert!(!c.ok);
        let nan = f32_entry("a", &[1.0, -2.0, 0.5, 0.0]);
        assert_eq!(
            compare_tensors(&a, &nan, Some(tol)).unwrap().nan_mismatches,
            1
        );
    }

    #[test]
    fn f16_cast_meets_its_tolerance() {
        let v: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.731).collect();
        let a = f32_entry("w", &v);
        let bytes = crate::cast::cast_bytes(&a.data().unwrap(), DType::F32, DType::F16).unwrap();
        let mut b = a.clone();
        b.dtype = DType::F16;
        b.storage = Storage::owned(bytes);
        let c = compare_tensors(
            &a,
            &b,
            Some(Tolerance::for_conversion(DType::F32, DType::F16)),
        )
        .unwrap();
        assert!(c.ok, "{c:?}");
        let c = compare_tensors(
            &a,
            &b,
            Some(Tolerance::for_conversion(DType::F32, DType::F32)),
        )
        .unwrap();
        assert!(!c.ok);
    }
}
