//! Element-wise math that candle lacks, computed on the host in f64 or i64 and returned in the
//! input's dtype: Mod, BitShift, BitwiseAnd/Or/Xor/Not, IsNaN, IsInf, Acos, Asin, Atan, Tan,
//! Sinh, Cosh, Asinh, Acosh, Atanh, the activations Elu, Selu, Celu, HardSwish, Mish,
//! Softsign, ThresholdedRelu, Shrink, Swish, SwiGLU and PRelu, the running CumSum and CumProd,
//! Einsum, Det and BitCast.
//! Also [`Vals`], the host values the other host-side ops share.

use candle_core::{DType, Device, Tensor};

use super::indexing::{each_index, strides, take};
use super::{OpCx, OpFn};
use crate::exec::util::{arg, bail, broadcast_shape, ints_of, norm_axis, R};
use crate::ir::{Narrow, Node};

pub(super) fn lookup(op: &str) -> Option<OpFn> {
    Some(match op {
        "Mod" | "BitShift" | "BitwiseAnd" | "BitwiseOr" | "BitwiseXor" | "PRelu" => binary,
        "BitwiseNot" => bitwise_not,
        "IsNaN" | "IsInf" => is_special,
        "Acos" | "Asin" | "Atan" | "Tan" | "Sinh" | "Cosh" | "Asinh" | "Acosh" | "Atanh"
        | "Elu" | "Selu" | "Celu" | "HardSwish" | "Mish" | "Softsign" | "ThresholdedRelu"
        | "Shrink" | "Swish" => float_unary,
        "CumSum" | "CumProd" => cumulative,
        "SwiGLU" => swiglu,
        "Einsum" => einsum,
        "Det" => det,
        "BitCast" => bit_cast,
        _ => return None,
    })
}

/// A tensor's values on the host, flattened in row-major order: f64 for float dtypes, i64 for
/// integer ones. Both hold every candle dtype ferry uses exactly, so a round trip through
/// [`Vals::of`] and [`Vals::tensor`] loses nothing.
#[derive(Clone)]
pub(super) enum Vals {
    /// Values of a float tensor.
    F(Vec<f64>),
    /// Values of an integer (or bool) tensor.
    I(Vec<i64>),
}

impl Vals {
    /// The values of `t` (any layout).
    pub(super) fn of(t: &Tensor) -> R<Vals> {
        Ok(if t.dtype().is_float() {
            Vals::F(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
        } else {
            Vals::I(t.to_dtype(DType::I64)?.flatten_all()?.to_vec1()?)
        })
    }

    /// The values at `map` (each index below [`Vals::len`]).
    pub(super) fn pick(&self, map: &[usize]) -> Vals {
        match self {
            Vals::F(v) => Vals::F(map.iter().map(|&i| v[i]).collect()),
            Vals::I(v) => Vals::I(map.iter().map(|&i| v[i]).collect()),
        }
    }

    /// A tensor of `shape` and `dtype` holding the values.
    pub(super) fn tensor(self, shape: &[usize], dtype: DType, dev: &Device) -> R<Tensor> {
        let t = match self {
            Vals::F(v) => Tensor::from_vec(v, shape, dev)?,
            Vals::I(v) => Tensor::from_vec(v, shape, dev)?,
        };
        Ok(t.to_dtype(dtype)?)
    }
}

/// `a` and `b` (converted to `a`'s dtype) broadcast together, as host values.
fn broadcast_vals(cx: &OpCx, a: &Tensor, b: &Tensor) -> R<(Vec<usize>, Vals, Vals)> {
    let shape = broadcast_shape(a.dims(), b.dims())?;
    cx.fits("its operands as 64-bit values", &shape, DType::F64)?;
    let b = b.to_dtype(a.dtype())?;
    let va = Vals::of(&a.broadcast_as(shape.as_slice())?)?;
    let vb = Vals::of(&b.broadcast_as(shape.as_slice())?)?;
    Ok((shape, va, vb))
}

/// Bits in a value and whether it is signed: from the element type the graph declares, else
/// from the dtype that holds it (uint16 is held as i32 and uint64 as i64: undeclared, those
/// count as their holders).
fn int_width(dt: DType, declared: Option<i32>) -> (u32, bool) {
    if let Some((lo, hi)) = declared
        .and_then(Narrow::from_onnx)
        .and_then(Narrow::int_range)
    {
        return ((hi - lo + 1).ilog2(), lo < 0);
    }
    match (declared, dt) {
        (Some(2), _) | (None, DType::U8) => (8, false),
        (Some(3), _) => (8, true),
        (Some(4), _) => (16, false),
        (Some(5), _) | (None, DType::I16) => (16, true),
        (Some(6), _) | (None, DType::I32) => (32, true),
        (Some(12), _) | (None, DType::U32) => (32, false),
        (Some(13), _) => (64, false),
        _ => (64, true),
    }
}

/// `v` wrapped to `width` bits, signed or not.
fn wrap(v: i64, width: u32, signed: bool) -> i64 {
    if width >= 64 {
        return v;
    }
    let bits = (v as u64) & ((1u64 << width) - 1);
    if signed && bits >> (width - 1) & 1 == 1 {
        (bits | !((1u64 << width) - 1)) as i64
    } else {
        bits as i64
    }
}

/// ONNX BitShift on one pair: shifts of `width` bits or more (or negative) give 0, or -1 for
/// a negative value shifted right; left shifts wrap at `width` bits.
fn shift(a: i64, b: i64, left: bool, width: u32, signed: bool) -> i64 {
    let mask = if width == 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    };
    if b < 0 || b >= i64::from(width) {
        return if !left && signed && a < 0 { -1 } else { 0 };
    }
    let bits = (a as u64) & mask;
    if left {
        wrap((bits << b) as i64, width, signed)
    } else if signed {
        a >> b
    } else {
        (bits >> b) as i64
    }
}

/// NumPy's `mod` of floats: the sign of the divisor.
fn py_fmod(a: f64, b: f64) -> f64 {
    let m = a % b;
    if b == 0.0 || m.is_nan() {
        m
    } else if m == 0.0 {
        0f64.copysign(b)
    } else if (b < 0.0) != (m < 0.0) {
        m + b
    } else {
        m
    }
}

fn binary(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let a = arg(&args, 0)?;
    let b = arg(&args, 1)?;
    let (shape, va, vb) = broadcast_vals(cx, a, b)?;
    let op = node.op_type.as_str();
    if op == "PRelu" && shape != a.dims() {
        bail!("slope {:?} does not broadcast to {:?}", b.dims(), a.dims());
    }
    let out = match (va, vb) {
        (Vals::F(x), Vals::F(y)) => {
            let f: fn(f64, f64) -> f64 = match op {
                "Mod" if node.attr_int("fmod", 0) != 0 => |a, b| a % b,
                "Mod" => py_fmod,
                "PRelu" => |x, s| if x < 0.0 { s * x } else { x },
                _ => bail!("{op} needs integer inputs, not {:?}", a.dtype()),
            };
            Vals::F(x.iter().zip(&y).map(|(&a, &b)| f(a, b)).collect())
        }
        (Vals::I(x), Vals::I(y)) => {
            let (width, signed) = int_width(a.dtype(), cx.in_type(0));
            let mut out = Vec::with_capacity(x.len());
            for (&p, &q) in x.iter().zip(&y) {
                out.push(match op {
                    "Mod" => {
                        if q == 0 {
                            bail!("integer Mod by zero");
                        }
                        let m = p.wrapping_rem(q);
                        if node.attr_int("fmod", 0) == 0 && m != 0 && (m < 0) != (q < 0) {
                            m + q
                        } else {
                            m
                        }
                    }
                    "BitShift" => match node.attr_str("direction") {
                        Some("LEFT") => shift(p, q, true, width, signed),
                        Some("RIGHT") => shift(p, q, false, width, signed),
                        d => bail!("BitShift direction {d:?} is not LEFT or RIGHT"),
                    },
                    "BitwiseAnd" => p & q,
                    "BitwiseOr" => p | q,
                    "BitwiseXor" => p ^ q,
                    _ => {
                        if p < 0 {
                            p.wrapping_mul(q)
                        } else {
                            p
                        }
                    }
                });
            }
            Vals::I(out)
        }
        _ => bail!("mixed float and integer operands"),
    };
    Ok(vec![out.tensor(&shape, a.dtype(), cx.device)?])
}

fn bitwise_not(_: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    cx.fits("its values as i64", x.dims(), DType::I64)?;
    let Vals::I(v) = Vals::of(x)? else {
        bail!("BitwiseNot needs an integer input, not {:?}", x.dtype());
    };
    let (width, signed) = int_width(x.dtype(), cx.in_type(0));
    let v = Vals::I(v.into_iter().map(|a| wrap(!a, width, signed)).collect());
    Ok(vec![v.tensor(x.dims(), x.dtype(), cx.device)?])
}

fn is_special(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    cx.fits("its values as f64", x.dims(), DType::F64)?;
    let v: Vec<f64> = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let pos = node.attr_int("detect_positive", 1) != 0;
    let neg = node.attr_int("detect_negative", 1) != 0;
    let nan = node.op_type == "IsNaN";
    let out: Vec<u8> = v
        .iter()
        .map(|&a| {
            u8::from(if nan {
                a.is_nan()
            } else {
                a.is_infinite() && if a > 0.0 { pos } else { neg }
            })
        })
        .collect();
    Ok(vec![Tensor::from_vec(out, x.dims(), cx.device)?])
}

fn float_unary(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    if !x.dtype().is_float() {
        bail!("{} needs a float input, not {:?}", node.op_type, x.dtype());
    }
    cx.fits("its values as f64", x.dims(), DType::F64)?;
    let attr = |name: &str, default: f32| f64::from(node.attr_float(name, default));
    let f: Box<dyn Fn(f64) -> f64> = match node.op_type.as_str() {
        "Acos" => Box::new(f64::acos),
        "Asin" => Box::new(f64::asin),
        "Atan" => Box::new(f64::atan),
        "Tan" => Box::new(f64::tan),
        "Sinh" => Box::new(f64::sinh),
        "Cosh" => Box::new(f64::cosh),
        "Asinh" => Box::new(f64::asinh),
        "Acosh" => Box::new(f64::acosh),
        "Atanh" => Box::new(f64::atanh),
        "Elu" => {
            let alpha = attr("alpha", 1.0);
            Box::new(move |x| if x < 0.0 { alpha * x.exp_m1() } else { x })
        }
        "Selu" => {
            let alpha = attr("alpha", 1.673_263_2);
            let gamma = attr("gamma", 1.050_701);
            Box::new(move |x| {
                if x <= 0.0 {
                    gamma * (alpha * x.exp() - alpha)
                } else {
                    gamma * x
                }
            })
        }
        "Celu" => {
            let alpha = attr("alpha", 1.0);
            Box::new(move |x| x.max(0.0) + (alpha * (x / alpha).exp_m1()).min(0.0))
        }
        "HardSwish" => Box::new(|x| x * (x / 6.0 + 0.5).clamp(0.0, 1.0)),
        "Mish" => Box::new(|x| x * x.exp().ln_1p().tanh()),
        "Softsign" => Box::new(|x| x / (1.0 + x.abs())),
        "ThresholdedRelu" => {
            let alpha = attr("alpha", 1.0);
            Box::new(move |x| if x > alpha { x } else { 0.0 })
        }
        "Shrink" => {
            let bias = attr("bias", 0.0);
            let lambd = attr("lambd", 0.5);
            Box::new(move |x| {
                if x < -lambd {
                    x + bias
                } else if x > lambd {
                    x - bias
                } else {
                    0.0
                }
            })
        }
        "Swish" => {
            let alpha = attr("alpha", 1.0);
            Box::new(move |x| x / (1.0 + (-alpha * x).exp()))
        }
        other => bail!("{other} is not a float unary op"),
    };
    let v: Vec<f64> = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let v = Vals::F(v.into_iter().map(f).collect());
    Ok(vec![v.tensor(x.dims(), x.dtype(), cx.device)?])
}

/// SwiGLU: `Swish_alpha(A) * B` for `A` and `B` of the same shape (no broadcasting).
fn swiglu(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let a = arg(&args, 0)?;
    let b = arg(&args, 1)?;
    if a.dims() != b.dims() || !a.dtype().is_float() {
        bail!(
            "SwiGLU needs float A and B of one shape, not {:?} and {:?}",
            a.dims(),
            b.dims()
        );
    }
    let (_, Vals::F(x), Vals::F(y)) = broadcast_vals(cx, a, b)? else {
        bail!("SwiGLU needs float inputs");
    };
    let alpha = f64::from(node.attr_float("alpha", 1.0));
    let v = x
        .iter()
        .zip(&y)
        .map(|(&x, &y)| x / (1.0 + (-alpha * x).exp()) * y)
        .collect();
    Ok(vec![Vals::F(v).tensor(a.dims(), a.dtype(), cx.device)?])
}

/// CumSum and CumProd along the axis in input 1, with `exclusive` and `reverse`.
fn cumulative(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let axis = arg(&args, 1)?;
    if axis.elem_count() != 1 {
        bail!("axis must hold one value, not {:?}", axis.dims());
    }
    let axis = norm_axis(ints_of(axis)?[0], x.rank())?;
    cx.fits("its values as 64-bit values", x.dims(), DType::F64)?;
    let exclusive = node.attr_int("exclusive", 0) != 0;
    let reverse = node.attr_int("reverse", 0) != 0;
    let prod = node.op_type == "CumProd";
    let n = x.dims()[axis];
    let inner: usize = x.dims()[axis + 1..].iter().product();
    let outer: usize = x.dims()[..axis].iter().product();
    let dims = (outer, n, inner);
    let flags = (exclusive, reverse);
    let out = match Vals::of(x)? {
        Vals::F(mut v) => {
            if prod {
                scan(&mut v, dims, flags, 1.0, |a, b| a * b);
            } else {
                scan(&mut v, dims, flags, 0.0, |a, b| a + b);
            }
            Vals::F(v)
        }
        Vals::I(mut v) => {
            if prod {
                scan(&mut v, dims, flags, 1, i64::wrapping_mul);
            } else {
                scan(&mut v, dims, flags, 0, i64::wrapping_add);
            }
            Vals::I(v)
        }
    };
    Ok(vec![out.tensor(x.dims(), x.dtype(), cx.device)?])
}

/// Runs a scan with `f` from `init` over every line of `v` (viewed as `[outer, n, inner]`)
/// along its middle axis, backwards when `reverse`, each value replaced by the result before
/// it when `exclusive`.
fn scan<T: Copy>(
    v: &mut [T],
    (outer, n, inner): (usize, usize, usize),
    (exclusive, reverse): (bool, bool),
    init: T,
    f: impl Fn(T, T) -> T,
) {
    for o in 0..outer {
        for i in 0..inner {
            let mut acc = init;
            for k in 0..n {
                let k = if reverse { n - 1 - k } else { k };
                let at = (o * n + k) * inner + i;
                let cur = v[at];
                if exclusive {
                    v[at] = acc;
                    acc = f(acc, cur);
                } else {
                    acc = f(acc, cur);
                    v[at] = acc;
                }
            }
        }
    }
}

/// One Einsum operand's labels: letters, and `...` spelled as `None` (its dims).
fn parse_term(term: &str) -> R<Vec<Option<char>>> {
    let mut out = Vec::new();
    let mut rest = term;
    while let Some(c) = rest.chars().next() {
        if let Some(r) = rest.strip_prefix("...") {
            if out.contains(&None) {
                bail!("`{term}` has more than one ellipsis");
            }
            out.push(None);
            rest = r;
        } else if c.is_ascii_alphabetic() {
            out.push(Some(c));
            rest = &rest[1..];
        } else {
            bail!("unexpected `{c}` in einsum term `{term}`");
        }
    }
    Ok(out)
}

/// Label of the `k`-th ellipsis dim (of `e`, counted from the left): outside ASCII, so it
/// never meets a letter.
fn ellipsis_label(k: usize) -> char {
    char::from_u32(0x100 + k as u32).unwrap_or('\u{100}')
}

/// Einsum: each operand's repeated labels become its diagonal, the operands are lined up on
/// all labels and multiplied (broadcasting), and the labels missing from the output summed.
/// Computed in f32 (f64 for f64 inputs) and returned in the first input's dtype.
fn einsum(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let eq: String = node
        .attr_str("equation")
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let xs: Vec<&Tensor> = args.iter().flatten().collect();
    let Some(first) = xs.first() else {
        bail!("Einsum needs an input");
    };
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    let terms: Vec<Vec<Option<char>>> = lhs.split(',').map(parse_term).collect::<R<_>>()?;
    if terms.len() != xs.len() {
        bail!(
            "equation `{eq}` has {} operands for {} inputs",
            terms.len(),
            xs.len()
        );
    }
    // Expand each ellipsis into labels, right-aligned across operands.
    let mut widths = Vec::with_capacity(xs.len());
    for (t, x) in terms.iter().zip(&xs) {
        let letters = t.iter().flatten().count();
        let e = if t.contains(&None) {
            x.rank().checked_sub(letters)
        } else {
            (x.rank() == letters).then_some(0)
        };
        let Some(e) = e else {
            bail!("operand {:?} does not fit its einsum term", x.dims());
        };
        widths.push(e);
    }
    let ell = widths.iter().copied().max().unwrap_or(0);
    let mut labels: Vec<Vec<char>> = Vec::with_capacity(xs.len());
    for (t, &e) in terms.iter().zip(&widths) {
        let mut lab = Vec::with_capacity(t.len() + e);
        for l in t {
            match l {
                Some(c) => lab.push(*c),
                None => lab.extend((ell - e..ell).map(ellipsis_label)),
            }
        }
        labels.push(lab);
    }
    let ell_labels: Vec<char> = (0..ell).map(ellipsis_label).collect();
    let out_labels: Vec<char> = match rhs {
        Some(r) => {
            let mut v = Vec::new();
            for l in parse_term(r)? {
                match l {
                    Some(c) => v.push(c),
                    None => v.extend(&ell_labels),
                }
            }
            v
        }
        None => {
            let mut once: Vec<char> = labels
                .iter()
                .flatten()
                .copied()
                .filter(|c| c.is_ascii_alphabetic())
                .collect();
            once.sort_unstable();
            let mut single = Vec::new();
            for c in &once {
                if once.iter().filter(|d| *d == c).count() == 1 {
                    single.push(*c);
                }
            }
            ell_labels.iter().copied().chain(single).collect()
        }
    };
    // All labels: the output's first, then the summed ones.
    let mut all = out_labels.clone();
    for &c in labels.iter().flatten() {
        if !all.contains(&c) {
            all.push(c);
        }
    }
    let mut size = vec![1usize; all.len()];
    for (lab, x) in labels.iter().zip(&xs) {
        for (&c, &d) in lab.iter().zip(x.dims()) {
            let s = &mut size[all.iter().position(|&a| a == c).unwrap_or(0)];
            if *s != d && *s != 1 && d != 1 {
                bail!("label `{c}` has sizes {} and {d}", *s);
            }
            if d != 1 {
                *s = d;
            }
        }
    }
    if out_labels
        .iter()
        .enumerate()
        .any(|(i, c)| out_labels[..i].contains(c))
        || out_labels
            .iter()
            .any(|c| !labels.iter().flatten().any(|d| d == c))
    {
        bail!("output labels of `{eq}` repeat or name no input label");
    }
    let work = if first.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    cx.fits("its product of all operands", &size, work)?;
    let mut prod: Option<Tensor> = None;
    for (lab, x) in labels.iter().zip(&xs) {
        let x = x.to_dtype(work)?;
        // Distinct labels in order of first appearance, and the diagonal over repeats.
        let mut uniq: Vec<char> = Vec::new();
        for &c in lab {
            if !uniq.contains(&c) {
                uniq.push(c);
            }
        }
        let x = if uniq.len() < lab.len() {
            let st = strides(x.dims());
            if lab
                .iter()
                .zip(x.dims())
                .any(|(c, &d)| lab.iter().zip(x.dims()).any(|(e, &f)| e == c && f != d))
            {
                bail!("a repeated label of `{eq}` spans dims of different sizes");
            }
            let dims: Vec<usize> = uniq
                .iter()
                .map(|c| x.dims()[lab.iter().position(|d| d == c).unwrap_or(0)])
                .collect();
            let mut map = Vec::with_capacity(dims.iter().product());
            each_index(&dims, |_, p| {
                let mut off = 0;
                for (i, c) in lab.iter().enumerate() {
                    off += p[uniq.iter().position(|u| u == c).unwrap_or(0)] * st[i];
                }
                map.push(off as i64);
                Ok(())
            })?;
            take(&x, map, &dims)?
        } else {
            x
        };
        // Onto the global label order, with size-1 dims for labels the operand lacks.
        let perm: Vec<usize> = all
            .iter()
            .filter_map(|c| uniq.iter().position(|u| u == c))
            .collect();
        let shape: Vec<usize> = all
            .iter()
            .map(|c| uniq.iter().position(|u| u == c).map_or(1, |i| x.dims()[i]))
            .collect();
        let x = x.permute(perm)?.contiguous()?.reshape(shape)?;
        prod = Some(match prod {
            Some(p) => p.broadcast_mul(&x)?,
            None => x,
        });
    }
    let Some(mut y) = prod else {
        bail!("Einsum needs an input");
    };
    let out_dims: Vec<usize> = size[..out_labels.len()].to_vec();
    let summed: Vec<usize> = (out_labels.len()..all.len()).collect();
    if !summed.is_empty() {
        y = y.sum_keepdim(summed)?;
    }
    let y = y.broadcast_as(
        size.iter()
            .enumerate()
            .map(|(i, &s)| if i < out_labels.len() { s } else { 1 })
            .collect::<Vec<_>>(),
    )?;
    Ok(vec![y
        .contiguous()?
        .reshape(out_dims)?
        .to_dtype(first.dtype())?])
}

/// The determinant of each `[M, M]` matrix in the last two dims, by LU with partial pivoting
/// in f64.
fn det(_: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let r = x.rank();
    if r < 2 || x.dims()[r - 1] != x.dims()[r - 2] || !x.dtype().is_float() {
        bail!(
            "Det needs float square matrices, not {:?} {:?}",
            x.dtype(),
            x.dims()
        );
    }
    cx.fits("its values as f64", x.dims(), DType::F64)?;
    let m = x.dims()[r - 1];
    let v: Vec<f64> = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let batch = &x.dims()[..r - 2];
    let count: usize = batch.iter().product();
    let mut out = Vec::with_capacity(count);
    for b in 0..count {
        let mut a = v[b * m * m..(b + 1) * m * m].to_vec();
        let mut d = 1.0;
        for c in 0..m {
            let p = (c..m)
                .max_by(|&i, &j| a[i * m + c].abs().total_cmp(&a[j * m + c].abs()))
                .unwrap_or(c);
            if a[p * m + c] == 0.0 {
                d = 0.0;
                break;
            }
            if p != c {
                for k in 0..m {
                    a.swap(p * m + k, c * m + k);
                }
                d = -d;
            }
            d *= a[c * m + c];
            for i in c + 1..m {
                let f = a[i * m + c] / a[c * m + c];
                for k in c..m {
                    a[i * m + k] -= f * a[c * m + k];
                }
            }
        }
        out.push(d);
    }
    Ok(vec![Vals::F(out).tensor(batch, x.dtype(), cx.device)?])
}

/// Bytes in one value of ONNX element type `code`, for the types BitCast takes.
fn onnx_width(code: i64) -> Option<usize> {
    Some(match code {
        2 | 3 | 9 => 1,
        4 | 5 | 10 | 16 => 2,
        1 | 6 | 12 => 4,
        7 | 11 | 13 => 8,
        _ => return None,
    })
}

/// BitCast to the element type `to` of the same width: the bits kept, read as the new type.
/// Narrow integers are held widened (int8 as i16, uint16 as i32), so an integer input's
/// width is the narrowest its holder allows for `to`.
fn bit_cast(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    use half::{bf16, f16};
    let x = arg(&args, 0)?;
    let to = node.attr_int("to", 0);
    let Some(w) = onnx_width(to) else {
        bail!("BitCast to element type {to} is not supported");
    };
    let widths: &[usize] = match x.dtype() {
        DType::U8 => &[1],
        DType::I16 => &[1, 2],
        DType::I32 => &[2, 4],
        DType::U32 | DType::F32 => &[4],
        DType::F16 | DType::BF16 => &[2],
        _ => &[8],
    };
    if !widths.contains(&w) {
        bail!(
            "BitCast of {:?} to element type {to} changes the width",
            x.dtype()
        );
    }
    cx.fits("its bits as u64", x.dims(), DType::F64)?;
    let flat = x.flatten_all()?;
    let bits: Vec<u64> = match x.dtype() {
        DType::F16 => flat
            .to_vec1::<f16>()?
            .iter()
            .map(|v| u64::from(v.to_bits()))
            .collect(),
        DType::BF16 => flat
            .to_vec1::<bf16>()?
            .iter()
            .map(|v| u64::from(v.to_bits()))
            .collect(),
        DType::F32 => flat
            .to_vec1::<f32>()?
            .iter()
            .map(|v| u64::from(v.to_bits()))
            .collect(),
        DType::F64 => flat.to_vec1::<f64>()?.iter().map(|v| v.to_bits()).collect(),
        _ => ints_of(&flat)?.into_iter().map(|v| v as u64).collect(),
    };
    let (dims, dev) = (x.dims(), cx.device);
    let out = match to {
        1 => Tensor::from_vec(
            bits.iter().map(|&b| f32::from_bits(b as u32)).collect(),
            dims,
            dev,
        )?,
        11 => Tensor::from_vec(bits.iter().map(|&b| f64::from_bits(b)).collect(), dims, dev)?,
        10 => Tensor::from_vec(
            bits.iter().map(|&b| f16::from_bits(b as u16)).collect(),
            dims,
            dev,
        )?,
        16 => Tensor::from_vec(
            bits.iter().map(|&b| bf16::from_bits(b as u16)).collect(),
            dims,
            dev,
        )?,
        _ => {
            let f: fn(u64) -> i64 = match to {
                2 | 9 => |b| i64::from(b as u8),
                3 => |b| i64::from(b as u8 as i8),
                4 => |b| i64::from(b as u16),
                5 => |b| i64::from(b as u16 as i16),
                6 => |b| i64::from(b as u32 as i32),
                12 => |b| i64::from(b as u32),
                _ => |b| b as i64,
            };
            let v: Vec<i64> = bits.iter().map(|&b| f(b)).collect();
            Tensor::from_vec(v, dims, dev)?.to_dtype(crate::exec::util::candle_dtype(to)?)?
        }
    };
    Ok(vec![out])
}
