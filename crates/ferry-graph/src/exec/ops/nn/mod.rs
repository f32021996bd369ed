//! Convolutional and recurrent network ops, one module per family: [`conv`], [`pool`],
//! [`sample`] (resizing and geometry) and [`recurrent`]; here the lookup and the spatial
//! helpers (padding, kernels, index unravelling) they share.

mod conv;
mod pool;
mod recurrent;
mod sample;

use candle_core::Tensor;

use super::{OpCx, OpFn};
use crate::exec::util::{bail, R};
use crate::ir::Node;
use conv::{causal_conv, conv, conv_integer, conv_transpose, deform_conv};
use pool::{global_pool, max_unpool, pool};
use recurrent::recurrent;
use sample::{affine_grid, col2im, grid_sample, resize, roi_align};

/// The row-major multi-index of `flat` in `dims`, written to `out` (same length).
fn unravel(mut flat: usize, dims: &[usize], out: &mut [usize]) {
    for (o, &d) in out.iter_mut().zip(dims).rev() {
        *o = flat % d;
        flat /= d;
    }
}

pub(super) fn lookup(op: &str) -> Option<OpFn> {
    Some(match op {
        "Conv" => conv,
        "ConvInteger" | "QLinearConv" => conv_integer,
        "ConvTranspose" => conv_transpose,
        "CausalConvWithState" => causal_conv,
        "DeformConv" => deform_conv,
        "Resize" | "Upsample" => resize,
        "GridSample" => grid_sample,
        "RoiAlign" => roi_align,
        "AffineGrid" => affine_grid,
        "Col2Im" => col2im,
        "RNN" | "LSTM" | "GRU" => recurrent,
        "MaxPool" | "AveragePool" | "LpPool" => pool,
        "GlobalAveragePool" | "GlobalMaxPool" => global_pool,
        "MaxUnpool" => max_unpool,
        _ => return None,
    })
}

/// Spatial padding `[begin..., end...]` for `spatial` dims, resolving `auto_pad`. The kernel
/// (dilated) must fit the input; sizes are computed with overflow checks.
fn pads(
    node: &Node,
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dil: &[usize],
) -> R<Vec<(usize, usize)>> {
    let n = kernel.len();
    let auto = node.attr_str("auto_pad").unwrap_or("NOTSET");
    let eff = effective_kernel(kernel, dil)?;
    let p = match auto {
        "SAME_UPPER" | "SAME_LOWER" => (0..n)
            .map(|i| {
                let out = input[i].div_ceil(strides[i]);
                // (out - 1) * stride < input; a saturated total fails `padded` below.
                let total = (out.saturating_sub(1) * strides[i])
                    .saturating_add(eff[i])
                    .saturating_sub(input[i]);
                let small = total / 2;
                if auto == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                }
            })
            .collect(),
        "VALID" => vec![(0, 0); n],
        _ => match node.attr_ints("pads") {
            Some(p) if p.len() == 2 * n => (0..n)
                .map(|i| (p[i].max(0) as usize, p[i + n].max(0) as usize))
                .collect(),
            Some(p) => bail!("pads {p:?} do not match {n} spatial dimensions"),
            None => vec![(0, 0); n],
        },
    };
    for i in 0..n {
        if padded(input[i], p[i])? < eff[i] {
            bail!(
                "the kernel {kernel:?} (dilations {dil:?}) does not fit the input {input:?} padded by {p:?}"
            );
        }
    }
    Ok(p)
}

/// The extent of each dilated kernel dimension, `(k - 1) * dilation + 1`.
fn effective_kernel(kernel: &[usize], dil: &[usize]) -> R<Vec<usize>> {
    kernel
        .iter()
        .zip(dil)
        .map(|(&k, &d)| {
            k.saturating_sub(1)
                .checked_mul(d)
                .and_then(|e| e.checked_add(1))
                .ok_or_else(|| {
                    candle_core::Error::Msg(format!(
                        "kernel {kernel:?} with dilations {dil:?} overflows"
                    ))
                    .into()
                })
        })
        .collect()
}

/// `len` padded by `(begin, end)`.
fn padded(len: usize, (l, r): (usize, usize)) -> R<usize> {
    match len.checked_add(l).and_then(|n| n.checked_add(r)) {
        Some(n) => Ok(n),
        None => bail!("a dimension of {len} padded by ({l}, {r}) overflows"),
    }
}

/// The shape of `x` with its spatial dims (from dim 2) padded by `p`.
fn padded_shape(x: &Tensor, p: &[(usize, usize)]) -> R<Vec<usize>> {
    let mut dims = x.dims().to_vec();
    for (i, &q) in p.iter().enumerate() {
        dims[i + 2] = padded(dims[i + 2], q)?;
    }
    Ok(dims)
}

/// An attribute of one positive value per spatial dimension (`default` for each when absent).
fn usizes(node: &Node, name: &str, n: usize, default: usize) -> R<Vec<usize>> {
    match node.attr_ints(name) {
        Some(v) if v.len() == n => Ok(v.iter().map(|&x| x.max(1) as usize).collect()),
        Some(v) => {
            bail!("`{name}` {v:?} does not have one value per spatial dimension ({n})")
        }
        None => Ok(vec![default; n]),
    }
}

fn uniform(v: &[usize], what: &str) -> R<usize> {
    match v.first() {
        Some(&f) if v.iter().all(|&x| x == f) => Ok(f),
        None => Ok(1),
        _ => bail!("different {what} per dimension ({v:?}) are not supported"),
    }
}

/// Pads spatial dims (from dim 2) with `value`; the padded tensor must fit the budget.
fn pad_spatial(cx: &OpCx, x: &Tensor, p: &[(usize, usize)], value: f64) -> R<Tensor> {
    cx.fits("its padded input", &padded_shape(x, p)?, x.dtype())?;
    let mut x = x.clone();
    for (i, &(l, r)) in p.iter().enumerate() {
        if l == 0 && r == 0 {
            continue;
        }
        let d = i + 2;
        x = if value == 0.0 {
            x.pad_with_zeros(d, l, r)?
        } else {
            let mut dims = x.dims().to_vec();
            let mut parts = Vec::new();
            if l > 0 {
                dims[d] = l;
                parts.push((Tensor::ones(dims.as_slice(), x.dtype(), x.device())? * value)?);
            }
            parts.push(x.clone());
            if r > 0 {
                dims[d] = r;
                parts.push((Tensor::ones(dims.as_slice(), x.dtype(), x.device())? * value)?);
            }
            Tensor::cat(&parts, d)?
        };
    }
    Ok(x)
}

/// An optional attribute of one integer per spatial dimension (`default` for each when absent).
fn ints_per_dim(node: &Node, name: &str, n: usize, default: i64) -> R<Vec<i64>> {
    match node.attr_ints(name) {
        Some(v) if v.len() == n => Ok(v.to_vec()),
        Some(v) => bail!("`{name}` {v:?} does not have one value per spatial dimension ({n})"),
        None => Ok(vec![default; n]),
    }
}
