//! Signal processing on the host: DFT (forward and inverse, real or complex input, onesided),
//! STFT, MelWeightMatrix, and the windows HannWindow, HammingWindow and BlackmanWindow.

use candle_core::{DType, Tensor};

use super::math::Vals;
use super::{OpCx, OpFn};
use crate::exec::util::{arg, bail, ints_of, norm_axis, opt, R};
use crate::ir::Node;

pub(super) fn lookup(op: &str) -> Option<OpFn> {
    Some(match op {
        "DFT" => dft,
        "STFT" => stft,
        "MelWeightMatrix" => mel_weight_matrix,
        "HannWindow" | "HammingWindow" | "BlackmanWindow" => window,
        _ => return None,
    })
}

/// HannWindow, HammingWindow and BlackmanWindow of the length in input 0, `periodic`
/// (default 1) or symmetric, in `output_datatype` (default float).
fn window(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let size = ints_of(arg(&args, 0)?)?;
    let [size] = size.as_slice() else {
        bail!("size must hold one value");
    };
    let Ok(n) = usize::try_from(*size) else {
        bail!("negative window size {size}");
    };
    let dt = crate::exec::util::candle_dtype(node.attr_int("output_datatype", 1))?;
    cx.fits("its output", &[n], DType::F64)?;
    cx.fits("its output", &[n], dt)?;
    let periodic = node.attr_int("periodic", 1) != 0;
    let big_n = if periodic { n as f64 } else { n as f64 - 1.0 };
    let pi = std::f64::consts::PI;
    let op = node.op_type.as_str();
    let v: Vec<f64> = (0..n)
        .map(|i| {
            let i = i as f64;
            match op {
                "HannWindow" => (pi * i / big_n).sin().powi(2),
                "HammingWindow" => {
                    let alpha = 25.0 / 46.0;
                    alpha - (1.0 - alpha) * (2.0 * pi * i / big_n).cos()
                }
                _ => {
                    0.42 - 0.5 * (2.0 * pi * i / big_n).cos() + 0.08 * (4.0 * pi * i / big_n).cos()
                }
            }
        })
        .collect();
    Ok(vec![Tensor::from_vec(v, n, cx.device)?.to_dtype(dt)?])
}

/// DFT along an axis of `[..., 1 | 2]` (real or complex) signals, forward or `inverse`,
/// `onesided` (the first half of a forward transform; an inverse from one half to a real
/// signal), zero-padded or cut to `dft_length`. Opset 20 takes the axis as input 2 (default
/// -2), earlier opsets as an attribute (default 1). Computed directly in f64.
fn dft(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let r = x.rank();
    let c = x.dims().last().copied().unwrap_or(0);
    if r < 2 || !(c == 1 || c == 2) || !x.dtype().is_float() {
        bail!(
            "DFT needs float [..., 1 | 2] signals, not {:?} {:?}",
            x.dtype(),
            x.dims()
        );
    }
    let axis = if cx.opset >= 20 {
        match opt(&args, 2) {
            Some(t) => match ints_of(t)?.as_slice() {
                [a] => *a,
                other => bail!("axis must hold one value, not {other:?}"),
            },
            None => -2,
        }
    } else {
        node.attr_int("axis", 1)
    };
    let axis = norm_axis(axis, r)?;
    if axis == r - 1 {
        bail!("DFT axis {axis} is the complex dimension");
    }
    let inverse = node.attr_int("inverse", 0) != 0;
    let onesided = node.attr_int("onesided", 0) != 0;
    let len = x.dims()[axis];
    let n = match opt(&args, 1) {
        Some(t) => match ints_of(t)?.as_slice() {
            [l] if *l >= 1 => *l as usize,
            other => bail!("dft_length must be one positive value, not {other:?}"),
        },
        None if inverse && onesided => 2 * len.saturating_sub(1),
        None => len,
    };
    if n == 0 {
        bail!("DFT of length 0");
    }
    let (out_len, out_c) = match (inverse, onesided) {
        (false, true) => (n / 2 + 1, 2),
        (true, true) => (n, 1),
        _ => (n, 2),
    };
    let mut shape = x.dims().to_vec();
    shape[axis] = out_len;
    shape[r - 1] = out_c;
    cx.fits("its output as f64", &shape, DType::F64)?;
    cx.fits("its input as f64", x.dims(), DType::F64)?;
    let v: Vec<f64> = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let outer: usize = x.dims()[..axis].iter().product();
    let inner: usize = x.dims()[axis + 1..r - 1].iter().product();
    let at = |o: usize, j: usize, i: usize| -> (f64, f64) {
        if j >= len {
            return (0.0, 0.0);
        }
        let p = ((o * len + j) * inner + i) * c;
        (v[p], if c == 2 { v[p + 1] } else { 0.0 })
    };
    let tau = 2.0 * std::f64::consts::PI;
    let mut out = vec![0f64; shape.iter().product()];
    for o in 0..outer {
        for i in 0..inner {
            for k in 0..out_len {
                let (mut re, mut im) = (0.0, 0.0);
                if inverse && onesided {
                    // A real signal from the first n/2 + 1 bins of a Hermitian spectrum.
                    let half = n / 2;
                    for f in 0..=half {
                        let (a, b) = at(o, f, i);
                        let t = tau * (f * k % n) as f64 / n as f64;
                        if f == 0 || (n % 2 == 0 && f == half) {
                            re += a * t.cos();
                        } else {
                            re += 2.0 * (a * t.cos() - b * t.sin());
                        }
                    }
                    re /= n as f64;
                } else {
                    let sign = if inverse { 1.0 } else { -1.0 };
                    for j in 0..n.min(len) {
                        let (a, b) = at(o, j, i);
                        let t = sign * tau * (j * k % n) as f64 / n as f64;
                        re += a * t.cos() - b * t.sin();
                        im += a * t.sin() + b * t.cos();
                    }
                    if inverse {
                        re /= n as f64;
                        im /= n as f64;
                    }
                }
                let p = ((o * out_len + k) * inner + i) * out_c;
                out[p] = re;
                if out_c == 2 {
                    out[p + 1] = im;
                }
            }
        }
    }
    Ok(vec![Vals::F(out).tensor(&shape, x.dtype(), cx.device)?])
}

/// STFT of `[batch, length, 1 | 2]` signals: frames `frame_step` apart, each `frame_length`
/// long (default: the window's length, else the whole signal), weighted by `window` (default
/// ones) and transformed, the first half only when `onesided` (default 1). Output
/// `[batch, frames, bins, 2]`, computed directly in f64.
fn stft(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let &[batch, len, c] = x.dims() else {
        bail!(
            "STFT needs [batch, length, 1 | 2] signals, not {:?}",
            x.dims()
        );
    };
    if !(c == 1 || c == 2) || !x.dtype().is_float() {
        bail!(
            "STFT needs float real or complex signals, not {:?} {:?}",
            x.dtype(),
            x.dims()
        );
    }
    let one = |t: &Tensor, what: &str| -> R<i64> {
        match ints_of(t)?.as_slice() {
            [v] => Ok(*v),
            other => bail!("{what} must hold one value, not {other:?}"),
        }
    };
    let step = one(arg(&args, 1)?, "frame_step")?;
    let window: Option<Vec<f64>> = opt(&args, 2)
        .map(|w| w.to_dtype(DType::F64)?.flatten_all()?.to_vec1())
        .transpose()?;
    let n = match (opt(&args, 3), &window) {
        (Some(t), _) => one(t, "frame_length")?,
        (None, Some(w)) => w.len() as i64,
        (None, None) => len as i64,
    };
    let (Ok(step), Ok(n)) = (usize::try_from(step), usize::try_from(n)) else {
        bail!("negative frame_step {step} or frame_length {n}");
    };
    if step == 0 || n == 0 || n > len || window.as_ref().is_some_and(|w| w.len() != n) {
        bail!("frame_step {step}, frame_length {n} and the window do not fit length {len}");
    }
    let frames = 1 + (len - n) / step;
    let bins = if node.attr_int("onesided", 1) != 0 {
        n / 2 + 1
    } else {
        n
    };
    let shape = [batch, frames, bins, 2];
    cx.fits("its output as f64", &shape, DType::F64)?;
    cx.fits("its input as f64", x.dims(), DType::F64)?;
    let v: Vec<f64> = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let tau = 2.0 * std::f64::consts::PI;
    let mut out = Vec::with_capacity(shape.iter().product());
    for b in 0..batch {
        for f in 0..frames {
            for k in 0..bins {
                let (mut re, mut im) = (0.0, 0.0);
                for j in 0..n {
                    let p = (b * len + f * step + j) * c;
                    let w = window.as_ref().map_or(1.0, |w| w[j]);
                    let (a, bb) = (v[p] * w, if c == 2 { v[p + 1] * w } else { 0.0 });
                    let t = -tau * (j * k % n) as f64 / n as f64;
                    re += a * t.cos() - bb * t.sin();
                    im += a * t.sin() + bb * t.cos();
                }
                out.push(re);
                out.push(im);
            }
        }
    }
    Ok(vec![Vals::F(out).tensor(&shape, x.dtype(), cx.device)?])
}

/// MelWeightMatrix: `[dft_length / 2 + 1, num_mel_bins]` triangular filters spaced evenly on
/// the mel scale between the edge frequencies, as ONNX's reference computes them (mel edges
/// in f32, bins in f64), in `output_datatype` (default float).
fn mel_weight_matrix(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let int = |i: usize| -> R<i64> {
        match ints_of(arg(&args, i)?)?.as_slice() {
            [v] => Ok(*v),
            other => bail!("input {i} must hold one value, not {other:?}"),
        }
    };
    let float = |i: usize| -> R<f32> {
        let t = arg(&args, i)?;
        if t.elem_count() != 1 {
            bail!("input {i} must hold one value");
        }
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?[0])
    };
    let (mels, dft_length, rate) = (int(0)?, int(1)?, int(2)?);
    let (lo, hi) = (float(3)?, float(4)?);
    let (Ok(mels), Ok(dft)) = (usize::try_from(mels), usize::try_from(dft_length)) else {
        bail!("negative num_mel_bins {mels} or dft_length {dft_length}");
    };
    if rate <= 0 {
        bail!("sample_rate {rate} is not positive");
    }
    let bins = dft / 2 + 1;
    let dt = crate::exec::util::candle_dtype(node.attr_int("output_datatype", 1))?;
    cx.fits("its output as f64", &[bins, mels], DType::F64)?;
    cx.fits("its output", &[bins, mels], dt)?;
    let ln10 = std::f32::consts::LN_10;
    let lo_mel = 2595.0 * (lo / 700.0).ln_1p() / ln10;
    let hi_mel = 2595.0 * (hi / 700.0).ln_1p() / ln10;
    let step = (hi_mel - lo_mel) / (mels + 2) as f32;
    let edges: Vec<i64> = (0..mels + 2)
        .map(|i| {
            let mel = i as f64 * f64::from(step) + f64::from(lo_mel);
            let hz = 700.0 * (mel / 2595.0 * std::f64::consts::LN_10).exp_m1();
            (((dft as f64 + 1.0) * hz) / rate as f64).floor() as i64
        })
        .collect();
    if edges.iter().any(|&e| e < 0 || e as usize >= bins) {
        bail!("mel edges {edges:?} fall outside {bins} spectrogram bins");
    }
    let mut out = vec![0f64; bins * mels];
    for i in 0..mels {
        let (l, c, h) = (edges[i], edges[i + 1], edges[i + 2]);
        if c == l {
            out[c as usize * mels + i] = 1.0;
        } else {
            for j in l..=c {
                out[j as usize * mels + i] = (j - l) as f64 / (c - l) as f64;
            }
        }
        if h > c {
            for j in c..h {
                out[j as usize * mels + i] = (h - j) as f64 / (h - c) as f64;
            }
        }
    }
    Ok(vec![
        Tensor::from_vec(out, (bins, mels), cx.device)?.to_dtype(dt)?
    ])
}
