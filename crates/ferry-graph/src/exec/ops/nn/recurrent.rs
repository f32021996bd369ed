//! The recurrent RNN, LSTM and GRU (default activations), on the host.

use candle_core::{DType, Tensor};

use super::super::OpCx;
use crate::exec::util::{arg, bail, opt, R};
use crate::ir::{Attr, Node};

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// RNN, LSTM and GRU over the whole sequence, forward, reverse or bidirectional, with the
/// default activations, in f64. Outputs `Y`, `Y_h` (and LSTM's `Y_c`).
pub(super) fn recurrent(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let op = node.op_type.as_str();
    let (x, w, r) = (arg(&args, 0)?, arg(&args, 1)?, arg(&args, 2)?);
    let gates = match op {
        "RNN" => 1,
        "LSTM" => 4,
        _ => 3,
    };
    let batch_first = node.attr_int("layout", 0) != 0;
    let x3 = if batch_first {
        x.transpose(0, 1)?.contiguous()?
    } else {
        x.clone()
    };
    let (seq, batch, input) = x3.dims3()?;
    let (dirs, gh, wi) = w.dims3()?;
    let hidden = gh / gates;
    if gh % gates != 0 || wi != input || r.dims() != [dirs, gh, hidden] {
        bail!(
            "weights {:?} and {:?} do not fit input {:?}",
            w.dims(),
            r.dims(),
            x.dims()
        );
    }
    let direction = node.attr_str("direction").unwrap_or("forward");
    let want = if direction == "bidirectional" { 2 } else { 1 };
    if !matches!(direction, "forward" | "reverse" | "bidirectional") || dirs != want {
        bail!("direction `{direction}` does not match {dirs} weight directions");
    }
    let defaults: &[&str] = match op {
        "RNN" => &["Tanh"],
        "LSTM" => &["Sigmoid", "Tanh", "Tanh"],
        _ => &["Sigmoid", "Tanh"],
    };
    if let Some(Attr::Strings(acts)) = node.attrs.get("activations") {
        let per = defaults.len();
        if acts.len() != per * dirs
            || acts
                .iter()
                .enumerate()
                .any(|(i, a)| !a.eq_ignore_ascii_case(defaults[i % per]))
        {
            bail!("activations {acts:?} are not supported (only {defaults:?})");
        }
    }
    if node.attr_int("input_forget", 0) != 0 {
        bail!("input_forget is not supported");
    }
    let clip = match node.attrs.get("clip") {
        Some(Attr::Float(c)) => Some(*c as f64),
        _ => None,
    };
    if let Some(lens) = opt(&args, 4) {
        if crate::exec::util::ints_of(lens)?
            .iter()
            .any(|&l| l != seq as i64)
        {
            bail!("sequence_lens shorter than the sequence are not supported");
        }
    }
    let (h_at, c_at, p_at) = if op == "LSTM" { (5, 6, 7) } else { (5, 6, 6) };
    cx.fits("its output", &[seq, dirs, batch, hidden], DType::F64)?;
    let host = |t: &Tensor| -> R<Vec<f64>> {
        Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
    };
    // An optional [dirs, batch, hidden] state (batch first with layout 1), else zeros.
    let state = |i: usize| -> R<Vec<f64>> {
        match opt(&args, i) {
            Some(t) => {
                let t = if batch_first {
                    t.transpose(0, 1)?.contiguous()?
                } else {
                    t.clone()
                };
                if t.dims() != [dirs, batch, hidden] {
                    bail!(
                        "initial state {:?} is not [{dirs}, {batch}, {hidden}]",
                        t.dims()
                    );
                }
                host(&t)
            }
            None => Ok(vec![0.0; dirs * batch * hidden]),
        }
    };
    let xs = host(&x3)?;
    let (ws, rs) = (host(w)?, host(r)?);
    let bias = match opt(&args, 3) {
        Some(b) if b.dims() == [dirs, 2 * gh] => host(b)?,
        Some(b) => bail!("bias {:?} is not [{dirs}, {}]", b.dims(), 2 * gh),
        None => vec![0.0; dirs * 2 * gh],
    };
    let peep = match opt(&args, p_at).filter(|_| op == "LSTM") {
        Some(p) if p.dims() == [dirs, 3 * hidden] => host(p)?,
        Some(p) => bail!("peepholes {:?} are not [{dirs}, {}]", p.dims(), 3 * hidden),
        None => vec![0.0; dirs * 3 * hidden],
    };
    let (mut hs, mut cs) = (
        state(h_at)?,
        if op == "LSTM" {
            state(c_at)?
        } else {
            Vec::new()
        },
    );
    let linear_before_reset = node.attr_int("linear_before_reset", 0) != 0;
    let clip = |v: f64| clip.map_or(v, |c| v.clamp(-c, c));
    let mut y = vec![0f64; seq * dirs * batch * hidden];
    let mut g = vec![0f64; gh];
    let mut rh = vec![0f64; hidden];
    for d in 0..dirs {
        let (wd, rd) = (
            &ws[d * gh * input..][..gh * input],
            &rs[d * gh * hidden..][..gh * hidden],
        );
        let (wb, rb) = (&bias[d * 2 * gh..][..gh], &bias[d * 2 * gh + gh..][..gh]);
        let pd = &peep[d * 3 * hidden..][..3 * hidden];
        let reverse = direction == "reverse" || d == 1;
        for step in 0..seq {
            let t = if reverse { seq - 1 - step } else { step };
            for b in 0..batch {
                let xt = &xs[(t * batch + b) * input..][..input];
                let h = &mut hs[(d * batch + b) * hidden..][..hidden];
                let dot = |m: &[f64], row: usize, v: &[f64]| -> f64 {
                    m[row * v.len()..][..v.len()]
                        .iter()
                        .zip(v)
                        .map(|(a, b)| a * b)
                        .sum()
                };
                for (j, gj) in g.iter_mut().enumerate() {
                    *gj = dot(wd, j, xt) + wb[j];
                }
                match op {
                    "RNN" => {
                        let prev = h.to_vec();
                        for j in 0..hidden {
                            h[j] = clip(g[j] + dot(rd, j, &prev) + rb[j]).tanh();
                        }
                    }
                    "LSTM" => {
                        let c = &mut cs[(d * batch + b) * hidden..][..hidden];
                        let prev = h.to_vec();
                        for j in 0..gh {
                            g[j] += dot(rd, j, &prev) + rb[j];
                        }
                        for j in 0..hidden {
                            let i = sigmoid(clip(g[j] + pd[j] * c[j]));
                            let f = sigmoid(clip(g[2 * hidden + j] + pd[2 * hidden + j] * c[j]));
                            let cc = clip(g[3 * hidden + j]).tanh();
                            c[j] = f * c[j] + i * cc;
                            let o = sigmoid(clip(g[hidden + j] + pd[hidden + j] * c[j]));
                            h[j] = o * c[j].tanh();
                        }
                    }
                    _ => {
                        let prev = h.to_vec();
                        for j in 0..2 * hidden {
                            g[j] = sigmoid(clip(g[j] + dot(rd, j, &prev) + rb[j]));
                        }
                        for j in 0..hidden {
                            let row = 2 * hidden + j;
                            let (z, rg) = (g[j], g[hidden + j]);
                            let cand = if linear_before_reset {
                                g[row] + rg * (dot(rd, row, &prev) + rb[row])
                            } else {
                                for (k, v) in rh.iter_mut().enumerate() {
                                    *v = g[hidden + k] * prev[k];
                                }
                                g[row] + dot(rd, row, &rh) + rb[row]
                            };
                            h[j] = (1.0 - z) * clip(cand).tanh() + z * prev[j];
                        }
                    }
                }
                y[((t * dirs + d) * batch + b) * hidden..][..hidden].copy_from_slice(h);
            }
        }
    }
    let dev = x.device();
    let mut yt = Tensor::from_vec(y, (seq, dirs, batch, hidden), dev)?;
    let mut ht = Tensor::from_vec(hs, (dirs, batch, hidden), dev)?;
    let mut outs = Vec::new();
    if batch_first {
        yt = yt.permute((2, 0, 1, 3))?.contiguous()?;
        ht = ht.transpose(0, 1)?.contiguous()?;
    }
    outs.push(yt.to_dtype(x.dtype())?);
    outs.push(ht.to_dtype(x.dtype())?);
    if op == "LSTM" {
        let mut ct = Tensor::from_vec(cs, (dirs, batch, hidden), dev)?;
        if batch_first {
            ct = ct.transpose(0, 1)?.contiguous()?;
        }
        outs.push(ct.to_dtype(x.dtype())?);
    }
    Ok(outs)
}
