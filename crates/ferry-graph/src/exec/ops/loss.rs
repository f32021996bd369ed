//! Loss ops: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (with its optional
//! `log_prob` output), with class weights, `ignore_index` and the `none`/`sum`/`mean`
//! reductions, computed on the host in f64 as ONNX's reference implementation does.

use candle_core::{DType, Tensor};

use super::{OpCx, OpFn};
use crate::exec::util::{arg, bail, ints_of, opt, R};
use crate::ir::{Attr, Node};

pub(super) fn lookup(op: &str) -> Option<OpFn> {
    Some(match op {
        "NegativeLogLikelihoodLoss" | "SoftmaxCrossEntropyLoss" => loss,
        _ => return None,
    })
}

fn loss(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let target = arg(&args, 1)?;
    let dtype = x.dtype();
    if !dtype.is_float() {
        bail!("the scores must be floats, not {dtype:?}");
    }
    let dims = x.dims();
    if dims.len() < 2 {
        bail!("the scores {dims:?} need at least [N, C]");
    }
    let (n, c) = (dims[0], dims[1]);
    let d: usize = dims[2..].iter().product();
    let mut want = vec![n];
    want.extend(&dims[2..]);
    if target.dims() != want.as_slice() {
        bail!(
            "the target {:?} does not match the scores {dims:?}",
            target.dims()
        );
    }
    let softmax = node.op_type == "SoftmaxCrossEntropyLoss";
    let ignore = match node.attrs.get("ignore_index") {
        Some(Attr::Int(i)) => Some(*i),
        _ => None,
    };
    let reduction = node.attr_str("reduction").unwrap_or("mean");
    if !matches!(reduction, "none" | "sum" | "mean") {
        bail!("reduction `{reduction}` is not one of none, sum, mean");
    }
    let mut xs = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    if softmax {
        // log_softmax over the class axis.
        for ni in 0..n {
            for di in 0..d {
                let at = |ci: usize| (ni * c + ci) * d + di;
                let mx = (0..c)
                    .map(|ci| xs[at(ci)])
                    .fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = (0..c).map(|ci| (xs[at(ci)] - mx).exp()).sum();
                let ln = sum.ln();
                for ci in 0..c {
                    xs[at(ci)] = xs[at(ci)] - mx - ln;
                }
            }
        }
    }
    let t = ints_of(target)?;
    let weight = match opt(&args, 2) {
        Some(w) => {
            let w = w.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            if w.len() != c {
                bail!("{} weights for {c} classes", w.len());
            }
            Some(w)
        }
        None => None,
    };
    // The reference weighs (and averages by weight) when weights are given or an
    // ignore_index is (NegativeLogLikelihoodLoss: unless it is -1).
    let weighted = weight.is_some()
        || if softmax {
            ignore.is_some()
        } else {
            ignore != Some(-1)
        };
    let mut losses = vec![0f64; n * d];
    let mut weights = vec![1f64; n * d];
    for ni in 0..n {
        for di in 0..d {
            let k = ni * d + di;
            let ti = t[k];
            if Some(ti) == ignore {
                weights[k] = 0.0;
                continue;
            }
            if ti < 0 || ti as usize >= c {
                bail!("target {ti} is not a class index below {c}");
            }
            losses[k] = -xs[(ni * c + ti as usize) * d + di];
            if let Some(w) = &weight {
                weights[k] = w[ti as usize];
            }
        }
    }
    if weighted {
        for (l, w) in losses.iter_mut().zip(&weights) {
            *l *= w;
        }
    }
    let dev = x.device();
    let out = match reduction {
        "none" => Tensor::from_vec(losses, want.as_slice(), dev)?,
        r => {
            let total: f64 = losses.iter().sum();
            let v = if r == "sum" {
                total
            } else if weighted {
                total / weights.iter().sum::<f64>()
            } else {
                total / losses.len() as f64
            };
            Tensor::new(v, dev)?
        }
    };
    let mut outs = vec![out.to_dtype(dtype)?];
    if softmax {
        cx.fits("its log_prob output", dims, dtype)?;
        outs.push(Tensor::from_vec(xs, dims, dev)?.to_dtype(dtype)?);
    }
    Ok(outs)
}
