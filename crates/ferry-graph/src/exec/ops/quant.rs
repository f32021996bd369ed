//! Quantization ops on 8- and 16-bit integers (and dequantizing float8 e4m3fn):
//! QuantizeLinear and DequantizeLinear (per-tensor, per-axis and blocked scales),
//! DynamicQuantizeLinear, MatMulInteger and QLinearMatMul, computed on the host as ONNX's
//! reference implementation does.
//!
//! ferry holds int8 and int16 both as i16 (and uint16 as i32): QuantizeLinear reads which one
//! the graph declares for its zero point (`OpCx::in_types`), and the narrow types (int4, int2,
//! float8 e5m2, float4 e2m1...) the same way ([`Narrow`]).

use candle_core::{DType, Tensor};

use super::{OpCx, OpFn};
use crate::exec::util::candle_dtype;
use crate::exec::util::{arg, bail, norm_axis, opt, R};
use crate::ir::{round_e4m3fn, Narrow, Node};

pub(super) fn lookup(op: &str) -> Option<OpFn> {
    Some(match op {
        "QuantizeLinear" => quantize,
        "DequantizeLinear" => dequantize,
        "DynamicQuantizeLinear" => dynamic_quantize,
        "MatMulInteger" => matmul_integer,
        "QLinearMatMul" => qlinear_matmul,
        _ => return None,
    })
}

/// A scale or zero point broadcast to `x`'s shape, as f64 values: one value for the whole
/// tensor, one per index of `axis`, or (with `block`) one per `block` indices of `axis`.
fn per_element(p: &Tensor, dims: &[usize], axis: i64, block: usize) -> R<Vec<f64>> {
    // (candle's f8e4m3 to f64 conversion does not return; f32 holds every f8e4m3 exactly.)
    let p64 = if p.dtype() == DType::F8E4M3 {
        p.to_dtype(DType::F32)?.to_dtype(DType::F64)?
    } else {
        p.to_dtype(DType::F64)?
    };
    let full = if p.elem_count() == 1 && p.rank() <= 1 {
        p64.reshape(())?.broadcast_as(dims)?
    } else if block == 0 {
        let axis = norm_axis(axis, dims.len())?;
        if p.rank() != 1 || p.elem_count() != dims[axis] {
            bail!(
                "a per-axis parameter {:?} does not match axis {axis} of {dims:?}",
                p.dims()
            );
        }
        let mut shape = vec![1; dims.len()];
        shape[axis] = dims[axis];
        p64.reshape(shape)?.broadcast_as(dims)?
    } else {
        let axis = norm_axis(axis, dims.len())?;
        let mut want = dims.to_vec();
        want[axis] = dims[axis].div_ceil(block);
        if p.dims() != want.as_slice() {
            bail!(
                "a blocked parameter {:?} does not match {dims:?} in blocks of {block}",
                p.dims()
            );
        }
        let idx: Vec<u32> = (0..dims[axis]).map(|i| (i / block) as u32).collect();
        let idx = Tensor::from_vec(idx, dims[axis], p.device())?;
        p64.index_select(&idx, axis)?
    };
    Ok(full.contiguous()?.flatten_all()?.to_vec1::<f64>()?)
}

/// The `axis` (checked where a parameter is per axis) and `block_size` attributes.
fn axis_block(node: &Node) -> R<(i64, usize)> {
    let block = node.attr_int("block_size", 0);
    if block < 0 {
        bail!("block_size {block} is negative");
    }
    Ok((node.attr_int("axis", 1), block as usize))
}

/// What QuantizeLinear makes: integers saturated to a range, or floats rounded to a small
/// float type, held as a candle dtype.
enum Target {
    Int(f64, f64, DType),
    Float(Narrow),
    E4M3Fn,
}

/// The target of a quantized ONNX element type code.
fn quant_type(code: i32) -> R<Target> {
    Ok(match code {
        2 => Target::Int(0.0, 255.0, DType::U8),
        3 => Target::Int(-128.0, 127.0, DType::I16),
        4 => Target::Int(0.0, 65535.0, DType::I32),
        5 => Target::Int(-32768.0, 32767.0, DType::I16),
        17 => Target::E4M3Fn,
        _ => match Narrow::from_onnx(code) {
            Some(n) => match n.int_range() {
                Some((lo, hi)) => Target::Int(lo as f64, hi as f64, candle_dtype(code.into())?),
                None if n != Narrow::F8E8M0 => Target::Float(n),
                None => bail!("quantizing to {} is not supported", n.name()),
            },
            None => bail!("quantizing to element type {code} is not supported"),
        },
    })
}

/// The element type code of a zero point the graph does not declare, from how it is held.
fn held_code(z: &Tensor) -> R<i32> {
    Ok(match z.dtype() {
        DType::U8 => 2,
        DType::I32 => 4,
        DType::F8E4M3 => 17,
        DType::I16 => bail!(
            "the zero point is int8 or int16 (ferry holds both as i16) and the graph does not \
             say which; set output_dtype"
        ),
        d => bail!("a {d:?} zero point is not supported"),
    })
}

fn quantize(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let scale = arg(&args, 1)?;
    let zp = opt(&args, 2);
    let (axis, block) = axis_block(node)?;
    let attr = node.attr_int("output_dtype", 0) as i32;
    let zp_code = match zp {
        Some(z) => Some(match cx.in_type(2) {
            Some(c) => c,
            None => held_code(z)?,
        }),
        None => None,
    };
    let code = match (attr, zp_code) {
        (0, Some(z)) => z,
        (0, None) => 2,
        (a, Some(z)) if a != z => {
            bail!("output_dtype {a} does not match the zero point's element type {z}")
        }
        (a, _) => a,
    };
    let target = quant_type(code)?;
    let dims = x.dims();
    cx.fits("its broadcast parameters", dims, DType::F64)?;
    let s = per_element(scale, dims, axis, block)?;
    let z = match zp {
        Some(z) => per_element(z, dims, axis, block)?,
        None => vec![0.0; s.len()],
    };
    let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let saturate = node.attr_int("saturate", 1) != 0;
    let scaled = xs.iter().zip(s.iter().zip(&z));
    let out = match target {
        Target::Int(lo, hi, dtype) => {
            let q: Vec<f64> = scaled
                .map(|(&v, (&s, &z))| {
                    let r = f64::from((v / s as f32).round_ties_even());
                    (r + z).clamp(lo, hi)
                })
                .collect();
            Tensor::from_vec(q, dims, x.device())?.to_dtype(dtype)?
        }
        // float8 ignores the zero point (it must be 0); float4 adds it.
        Target::Float(n) => {
            let q: Vec<f32> = scaled
                .map(|(&v, (&s, &z))| {
                    let y = f64::from(v / s as f32);
                    let y = if n == Narrow::F4E2M1 { y + z } else { y };
                    n.quantize(y, saturate) as f32
                })
                .collect();
            Tensor::from_vec(q, dims, x.device())?
        }
        Target::E4M3Fn => {
            let q: Vec<f32> = scaled
                .map(|(&v, (&s, _))| round_e4m3fn(f64::from(v / s as f32), saturate) as f32)
                .collect();
            Tensor::from_vec(q, dims, x.device())?.to_dtype(DType::F8E4M3)?
        }
    };
    Ok(vec![out])
}

fn dequantize(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let scale = arg(&args, 1)?;
    if !scale.dtype().is_float() {
        bail!("the scale must be a float, not {:?}", scale.dtype());
    }
    // The narrow float types (float8 e5m2, float4 e2m1...) are held as f32.
    let held_narrow =
        x.dtype() == DType::F32 && cx.in_type(0).and_then(Narrow::from_onnx).is_some();
    let quantized = matches!(
        x.dtype(),
        DType::U8 | DType::I16 | DType::I32 | DType::F8E4M3
    );
    if !quantized && !held_narrow {
        bail!("dequantizing {:?} is not supported", x.dtype());
    }
    let (axis, block) = axis_block(node)?;
    let dims = x.dims();
    cx.fits("its broadcast parameters", dims, DType::F64)?;
    let s = per_element(scale, dims, axis, block)?;
    let z = match opt(&args, 2) {
        Some(z) => per_element(z, dims, axis, block)?,
        None => vec![0.0; s.len()],
    };
    let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let y: Vec<f32> = xs
        .iter()
        .zip(s.iter().zip(&z))
        .map(|(&v, (&s, &z))| (f64::from(v) - z) as f32 * s as f32)
        .collect();
    let out = match node.attr_int("output_dtype", 0) {
        0 => scale.dtype(),
        c => crate::exec::util::candle_dtype(c)?,
    };
    Ok(vec![Tensor::from_vec(y, dims, x.device())?.to_dtype(out)?])
}

fn dynamic_quantize(_: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    if !x.dtype().is_float() {
        bail!("needs a float input, not {:?}", x.dtype());
    }
    let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mx = xs.iter().copied().fold(0f32, f32::max);
    let mn = xs.iter().copied().fold(0f32, f32::min);
    let scale = if mx == mn { 1.0 } else { mx - mn } / 255.0;
    let zp = (0.0 - mn / scale).clamp(0.0, 255.0).round_ties_even();
    let q: Vec<u8> = xs
        .iter()
        .map(|&v| ((v / scale).round_ties_even() + zp).clamp(0.0, 255.0) as u8)
        .collect();
    let dev = x.device();
    Ok(vec![
        Tensor::from_vec(q, x.dims(), dev)?,
        Tensor::new(scale, dev)?.to_dtype(x.dtype())?,
        Tensor::new(zp as u8, dev)?,
    ])
}

/// `t - zero_point` in f64 (exact for the 8- and 16-bit integers it is used on). The zero point
/// is one value, or 1-D with one value per index of `axis` (when given), or (without `axis`)
/// of any shape that broadcasts against `t`.
pub(super) fn centered(t: &Tensor, zp: Option<&Tensor>, axis: Option<usize>) -> R<Tensor> {
    let t = t.to_dtype(DType::F64)?;
    let Some(z) = zp else {
        return Ok(t);
    };
    let z = z.to_dtype(DType::F64)?;
    let z = match axis {
        _ if z.elem_count() == 1 => z.reshape(())?,
        Some(axis) if z.rank() == 1 && axis < t.rank() && z.elem_count() == t.dims()[axis] => {
            let mut shape = vec![1; t.rank()];
            shape[axis] = z.elem_count();
            z.reshape(shape)?
        }
        Some(axis) => bail!(
            "zero point {:?} is neither one value nor one per index of axis {axis} of {:?}",
            z.dims(),
            t.dims()
        ),
        None => z,
    };
    Ok(t.broadcast_sub(&z)?)
}

/// `(a - a_zero) @ (b - b_zero)` in f64 (exact for 8- and 16-bit operands).
fn int_matmul(
    cx: &OpCx,
    a: &Tensor,
    az: Option<&Tensor>,
    b: &Tensor,
    bz: Option<&Tensor>,
) -> R<Tensor> {
    if a.dtype().is_float() || b.dtype().is_float() {
        bail!("integer matmul needs integer operands");
    }
    if a.rank() < 2 || b.rank() < 2 {
        bail!(
            "operands {:?} and {:?} must be at least 2-D",
            a.dims(),
            b.dims()
        );
    }
    let (m, n) = (a.dims()[a.rank() - 2], b.dims()[b.rank() - 1]);
    let batch =
        crate::exec::util::broadcast_shape(&a.dims()[..a.rank() - 2], &b.dims()[..b.rank() - 2])?;
    let mut out = batch;
    out.extend([m, n]);
    cx.fits("its output", &out, DType::F64)?;
    // A 1-D zero point of the first operand is one per row.
    let a = centered(a, az, Some(a.rank().saturating_sub(2)))?;
    let b = centered(b, bz, None)?;
    Ok(a.broadcast_matmul(&b)?)
}

fn matmul_integer(_: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let c = int_matmul(
        cx,
        arg(&args, 0)?,
        opt(&args, 2),
        arg(&args, 1)?,
        opt(&args, 3),
    )?;
    Ok(vec![c.to_dtype(DType::I32)?])
}

fn qlinear_matmul(_: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let (a, a_scale, a_zp) = (arg(&args, 0)?, arg(&args, 1)?, arg(&args, 2)?);
    let (b, b_scale, b_zp) = (arg(&args, 3)?, arg(&args, 4)?, arg(&args, 5)?);
    let (y_scale, y_zp) = (arg(&args, 6)?, arg(&args, 7)?);
    let c = int_matmul(cx, a, Some(a_zp), b, Some(b_zp))?;
    // The scale factor in the scales' own type, as the reference computes it.
    let factor = a_scale
        .broadcast_mul(b_scale)?
        .broadcast_div(y_scale)?
        .to_dtype(DType::F64)?;
    // Its quantized types are 8-bit: an undeclared i16 zero point is int8.
    let code = match (cx.in_type(7), y_zp.dtype()) {
        (Some(c), _) => c,
        (None, DType::I16) => 3,
        (None, _) => held_code(y_zp)?,
    };
    let Target::Int(lo, hi, _) = quant_type(code)? else {
        bail!("an output of element type {code} is not supported");
    };
    let d = c
        .broadcast_mul(&factor)?
        .broadcast_add(&y_zp.to_dtype(DType::F64)?)?;
    let dims = d.dims().to_vec();
    let q: Vec<f64> = d
        .flatten_all()?
        .to_vec1::<f64>()?
        .into_iter()
        .map(|v| v.round_ties_even().clamp(lo, hi))
        .collect();
    Ok(vec![
        Tensor::from_vec(q, dims, a.device())?.to_dtype(y_zp.dtype())?
    ])
}
