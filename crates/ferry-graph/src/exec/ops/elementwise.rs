//! Element-wise ops with NumPy broadcasting: arithmetic, comparisons, logic, activations,
//! Cast, CastLike, Where, Clip, Identity and Dropout (identity at inference; in training mode
//! NumPy's legacy Mersenne Twister draws the mask, as ONNX's reference does).

use candle_core::{DType, Tensor};

use super::{OpCx, OpFn};
use crate::exec::scalar_f64;
use crate::exec::util::{arg, bail, broadcast_shape, candle_dtype, opt, R};
use crate::ir::{Narrow, Node};

pub(super) fn lookup(op: &str) -> Option<OpFn> {
    Some(match op {
        "Add" | "Sub" | "Mul" | "Div" | "Equal" | "Less" | "Greater" | "LessOrEqual"
        | "GreaterOrEqual" | "And" | "Or" | "Xor" => binary,
        "Max" | "Min" | "Sum" | "Mean" => variadic,
        "Pow" => pow,
        "Sqrt" | "Erf" | "Tanh" | "Exp" | "Log" | "Neg" | "Abs" | "Relu" | "Sigmoid"
        | "Reciprocal" | "Floor" | "Ceil" | "Round" | "Sin" | "Cos" | "Sign" | "Not"
        | "Softplus" | "LeakyRelu" | "HardSigmoid" => unary,
        "Cast" => cast,
        "CastLike" => cast_like,
        "Where" => where_op,
        "Clip" => clip,
        "Identity" => identity,
        "Dropout" => dropout,
        _ => return None,
    })
}

/// Brings `b` to `a`'s dtype (ONNX requires equal types; this tolerates folded constants).
fn same_dtype(a: &Tensor, b: &Tensor) -> R<Tensor> {
    if a.dtype() == b.dtype() {
        Ok(b.clone())
    } else {
        Ok(b.to_dtype(a.dtype())?)
    }
}

/// The broadcast shape of `a` and `b`, checked against the budget as `dtype`.
fn broadcast_fits(cx: &OpCx, a: &Tensor, b: &Tensor, dtype: DType) -> R<Vec<usize>> {
    let shape = broadcast_shape(a.dims(), b.dims())?;
    cx.fits("its output", &shape, dtype)?;
    Ok(shape)
}

fn binary(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let a = arg(&args, 0)?;
    let b = same_dtype(a, arg(&args, 1)?)?;
    let compares = matches!(
        node.op_type.as_str(),
        "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "Xor"
    );
    broadcast_fits(cx, a, &b, if compares { DType::U8 } else { a.dtype() })?;
    let out = match node.op_type.as_str() {
        "Add" => a.broadcast_add(&b)?,
        "Sub" => a.broadcast_sub(&b)?,
        "Mul" => a.broadcast_mul(&b)?,
        "Div" => a.broadcast_div(&b)?,
        "Equal" => a.broadcast_eq(&b)?,
        "Less" => a.broadcast_lt(&b)?,
        "Greater" => a.broadcast_gt(&b)?,
        "LessOrEqual" => a.broadcast_le(&b)?,
        "GreaterOrEqual" => a.broadcast_ge(&b)?,
        "And" => a.broadcast_mul(&b)?.ne(0u8)?,
        "Or" => a.broadcast_add(&b)?.ne(0u8)?,
        "Xor" => a.broadcast_ne(&b)?,
        other => bail!("{other} is not a binary op"),
    };
    Ok(vec![out])
}

fn variadic(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let n = args.iter().flatten().count();
    let mut it = args.into_iter().flatten();
    let Some(mut acc) = it.next() else {
        bail!("needs an input");
    };
    for t in it {
        let t = same_dtype(&acc, &t)?;
        broadcast_fits(cx, &acc, &t, acc.dtype())?;
        acc = match node.op_type.as_str() {
            "Max" => acc.broadcast_maximum(&t)?,
            "Min" => acc.broadcast_minimum(&t)?,
            _ => acc.broadcast_add(&t)?,
        };
    }
    if node.op_type == "Mean" {
        acc = (acc / n as f64)?;
    }
    Ok(vec![acc])
}

fn pow(_: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let y = arg(&args, 1)?;
    let shape = broadcast_fits(cx, x, y, x.dtype())?;
    if y.elem_count() == 1 && x.dtype().is_float() {
        let e = scalar_f64(y)?;
        let out = if e == 2.0 {
            x.sqr()?
        } else if e == 1.0 {
            x.clone()
        } else if e == 0.5 {
            x.sqrt()?
        } else if e == 3.0 {
            (x.sqr()? * x)?
        } else {
            x.powf(e)?
        };
        return Ok(vec![out.broadcast_as(shape)?.contiguous()?]);
    }
    // General case on the host: exact `powf` semantics (negative bases included).
    cx.fits("its operands as f64", &shape, DType::F64)?;
    let xs = x
        .to_dtype(DType::F64)?
        .broadcast_as(shape.as_slice())?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let ys = y
        .to_dtype(DType::F64)?
        .broadcast_as(shape.as_slice())?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let v: Vec<f64> = xs.iter().zip(&ys).map(|(a, b)| a.powf(*b)).collect();
    Ok(vec![
        Tensor::from_vec(v, shape, x.device())?.to_dtype(x.dtype())?
    ])
}

fn unary(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let out = match node.op_type.as_str() {
        "Sqrt" => x.sqrt()?,
        "Erf" => x.erf()?,
        "Tanh" => x.tanh()?,
        "Exp" => x.exp()?,
        "Log" => x.log()?,
        "Neg" if x.dtype().is_int() => x.affine(-1.0, 0.0)?,
        "Neg" => x.neg()?,
        "Abs" => x.abs()?,
        "Relu" => x.relu()?,
        "Sigmoid" => (x.neg()?.exp()? + 1.0)?.recip()?,
        "Reciprocal" => x.recip()?,
        "Floor" => x.floor()?,
        "Ceil" => x.ceil()?,
        // ONNX rounds halves to even; candle's `round` rounds them away from zero.
        "Round" => {
            cx.fits("its values as f64", x.dims(), DType::F64)?;
            let v: Vec<f64> = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            let r: Vec<f64> = v.iter().map(|a| a.round_ties_even()).collect();
            Tensor::from_vec(r, x.shape(), x.device())?.to_dtype(x.dtype())?
        }
        "Sin" => x.sin()?,
        "Cos" => x.cos()?,
        "Sign" => x.sign()?,
        "Not" => x.eq(0u8)?,
        "Softplus" => (x.exp()? + 1.0)?.log()?,
        "LeakyRelu" => {
            let alpha = node.attr_float("alpha", 0.01) as f64;
            let neg = (x.minimum(0f64)? * alpha)?;
            (x.relu()? + neg)?
        }
        "HardSigmoid" => {
            let alpha = node.attr_float("alpha", 0.2) as f64;
            let beta = node.attr_float("beta", 0.5) as f64;
            x.affine(alpha, beta)?.clamp(0f64, 1f64)?
        }
        other => bail!("{other} is not a unary op"),
    };
    Ok(vec![out])
}

fn cast(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    Ok(vec![cast_to(node, cx, x, node.attr_int("to", 1) as i32)?])
}

/// Cast to the type the graph declares for input 1; where it does not say, to the dtype that
/// holds input 1 (a u8 target then casts as uint8: bool and uint8 share it).
fn cast_like(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    if let Some(code) = cx.in_type(1) {
        return Ok(vec![cast_to(node, cx, x, code)?]);
    }
    let dt = arg(&args, 1)?.dtype();
    cx.fits("its output", x.dims(), dt)?;
    Ok(vec![convert(node, x, dt)?])
}

/// `x` cast to the ONNX element type `to`.
fn cast_to(node: &Node, cx: &OpCx, x: &Tensor, to: i32) -> R<Tensor> {
    if to == 9 {
        return Ok(x.ne(0f64)?);
    }
    if let Some(n) = Narrow::from_onnx(to) {
        return to_narrow(node, cx, x, n);
    }
    let dt = match to {
        17 => DType::F8E4M3,
        _ => candle_dtype(to.into())?,
    };
    cx.fits("its output", x.dims(), dt)?;
    convert(node, x, dt)
}

/// `x` as `dt`. To float8 e4m3fn with the `saturate` attribute 0, values past its range
/// (above 464 in magnitude, infinities included) become NaN instead of ±448.
fn convert(node: &Node, x: &Tensor, dt: DType) -> R<Tensor> {
    if dt != DType::F8E4M3 || node.attr_int("saturate", 1) != 0 || !x.dtype().is_float() {
        return Ok(x.to_dtype(dt)?);
    }
    let x = x.to_dtype(DType::F32)?;
    let over = x.abs()?.gt(464f64)?;
    let nan = Tensor::full(f32::NAN, x.shape(), x.device())?;
    Ok(over.where_cond(&nan, &x)?.to_dtype(dt)?)
}

/// `x` cast to a type ferry holds wider, each value rounded and saturated as
/// [`Narrow::cast`] says (attributes `saturate`, default 1, and `round_mode`, default `up`).
fn to_narrow(node: &Node, cx: &OpCx, x: &Tensor, n: Narrow) -> R<Tensor> {
    let held = candle_dtype(n.onnx().into())?;
    cx.fits("its output", x.dims(), DType::F64)?;
    let saturate = node.attr_int("saturate", 1) != 0;
    let mode = node.attr_str("round_mode").unwrap_or("up");
    // (candle's f8e4m3 to f64 conversion does not return; f32 holds every f8e4m3 exactly.)
    let x = match x.dtype() {
        DType::F8E4M3 => x.to_dtype(DType::F32)?,
        _ => x.clone(),
    };
    let values: Vec<f64> = x
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?
        .into_iter()
        .map(|v| n.cast(v, saturate, mode))
        .collect();
    Ok(Tensor::from_vec(values, x.dims(), x.device())?.to_dtype(held)?)
}

fn where_op(_: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let c = arg(&args, 0)?;
    let a = arg(&args, 1)?;
    let b = same_dtype(a, arg(&args, 2)?)?;
    let shape = broadcast_shape(&broadcast_shape(c.dims(), a.dims())?, b.dims())?;
    cx.fits("its output", &shape, a.dtype())?;
    let c = c.broadcast_as(shape.as_slice())?.contiguous()?;
    let out = c.where_cond(
        &a.broadcast_as(shape.as_slice())?.contiguous()?,
        &b.broadcast_as(shape.as_slice())?.contiguous()?,
    )?;
    Ok(vec![out])
}

fn clip(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let (lo, hi) = if cx.opset >= 11 {
        (
            opt(&args, 1).map(scalar_f64).transpose()?,
            opt(&args, 2).map(scalar_f64).transpose()?,
        )
    } else {
        (
            node.attrs
                .get("min")
                .map(|_| node.attr_float("min", f32::MIN) as f64),
            node.attrs
                .get("max")
                .map(|_| node.attr_float("max", f32::MAX) as f64),
        )
    };
    let mut out = x.clone();
    if let Some(lo) = lo {
        out = out.maximum(lo)?;
    }
    if let Some(hi) = hi {
        out = out.minimum(hi)?;
    }
    Ok(vec![out])
}

fn identity(_: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    Ok(vec![arg(&args, 0)?.clone()])
}

/// Dropout: the input (and an all-true mask) unless opset 12+ inputs ask for training mode
/// with a ratio above 0; then each element is kept when a uniform draw in `[0, 1)` is at
/// least the ratio and scaled by `1 / (1 - ratio)`. Draws come from NumPy's legacy
/// `RandomState(seed)` (`seed` attribute, default 0) in row-major order.
fn dropout(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?.clone();
    let training = cx.opset >= 12 && opt(&args, 2).map(scalar_f64).transpose()? == Some(1.0);
    let ratio = match opt(&args, 1) {
        Some(r) if cx.opset >= 12 => scalar_f64(r)? as f32,
        _ => node.attr_float("ratio", 0.5),
    };
    let with_mask = node.outputs.len() > 1 && !node.outputs[1].is_empty();
    if !training || ratio == 0.0 {
        let mut out = vec![x.clone()];
        if with_mask {
            out.push(Tensor::ones(x.dims(), DType::U8, x.device())?);
        }
        return Ok(out);
    }
    if !(0.0..1.0).contains(&ratio) || !x.dtype().is_float() {
        bail!("training Dropout needs a float input and a ratio in [0, 1), not {ratio}");
    }
    cx.fits("its mask as f64", x.dims(), DType::F64)?;
    let Ok(seed) = u32::try_from(node.attr_int("seed", 0)) else {
        bail!("seed {} is outside 0..2^32", node.attr_int("seed", 0));
    };
    let mut rng = Mt19937::new(seed);
    let keep: Vec<u8> = (0..x.elem_count())
        .map(|_| u8::from(rng.next_f64() >= f64::from(ratio)))
        .collect();
    let mask = Tensor::from_vec(keep, x.dims(), x.device())?;
    let scale = 1.0 / (1.0 - ratio);
    let y = x
        .mul(&mask.to_dtype(x.dtype())?)?
        .affine(f64::from(scale), 0.0)?;
    let mut out = vec![y];
    if with_mask {
        out.push(mask);
    }
    Ok(out)
}

/// MT19937 seeded as NumPy's legacy `RandomState(seed)`, drawing doubles as its
/// `random_sample` does (53 bits from two 32-bit outputs).
struct Mt19937 {
    state: [u32; 624],
    pos: usize,
}

impl Mt19937 {
    fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            let p = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(p ^ (p >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { state, pos: 624 }
    }

    fn next_u32(&mut self) -> u32 {
        if self.pos >= 624 {
            for i in 0..624 {
                let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
                let mut v = self.state[(i + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    v ^= 0x9908_b0df;
                }
                self.state[i] = v;
            }
            self.pos = 0;
        }
        let mut y = self.state[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    fn next_f64(&mut self) -> f64 {
        let a = f64::from(self.next_u32() >> 5);
        let b = f64::from(self.next_u32() >> 6);
        (a * 67_108_864.0 + b) / 9_007_199_254_740_992.0
    }
}
