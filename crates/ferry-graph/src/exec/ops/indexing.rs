//! Ops that select or place elements by computed positions: GatherElements, ScatterElements
//! (and its older name Scatter), ScatterND, TensorScatter, OneHot, NonZero, Compress, TopK,
//! Unique, ReverseSequence, NonMaxSuppression, TfIdfVectorizer (integer pools), Trilu,
//! EyeLike.
//! Positions are worked out on the host; values move with `index_select`, which keeps the
//! dtype, or as [`Vals`] where they are combined.

use candle_core::{DType, Tensor};

use super::math::Vals;
use super::{OpCx, OpFn};
use crate::exec::util::{arg, bail, candle_dtype, ints_of, norm_axis, opt, R};
use crate::ir::{Attr, Node};

pub(super) fn lookup(op: &str) -> Option<OpFn> {
    Some(match op {
        "GatherElements" => gather_elements,
        "ScatterElements" | "Scatter" => scatter_elements,
        "ScatterND" => scatter_nd,
        "OneHot" => one_hot,
        "NonZero" => non_zero,
        "Compress" => compress,
        "TopK" => top_k,
        "Trilu" => trilu,
        "EyeLike" => eye_like,
        "TensorScatter" => tensor_scatter,
        "ReverseSequence" => reverse_sequence,
        "Unique" => unique,
        "NonMaxSuppression" => non_max_suppression,
        "TfIdfVectorizer" => tf_idf,
        _ => return None,
    })
}

/// Row-major strides of `dims`, in elements.
pub(super) fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// Calls `f` with each flat position of `dims` and its multi-index, in row-major order.
pub(super) fn each_index(dims: &[usize], mut f: impl FnMut(usize, &[usize]) -> R<()>) -> R<()> {
    let n: usize = dims.iter().product();
    let mut idx = vec![0; dims.len()];
    for flat in 0..n {
        f(flat, &idx)?;
        for d in (0..dims.len()).rev() {
            idx[d] += 1;
            if idx[d] < dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(())
}

/// An index into a dimension of size `d`, negative counting from the end.
fn fix(v: i64, d: usize, axis: usize) -> R<usize> {
    let n = d as i64;
    if v < -n || v >= n {
        bail!("index {v} is out of range for dimension {axis} of size {d}");
    }
    Ok(if v < 0 { v + n } else { v } as usize)
}

/// The elements of `data` (row-major) at flat positions `map`, shaped `shape`.
pub(super) fn take(data: &Tensor, map: Vec<i64>, shape: &[usize]) -> R<Tensor> {
    let n = map.len();
    let ids = Tensor::from_vec(map, n, data.device())?;
    Ok(data
        .flatten_all()?
        .contiguous()?
        .index_select(&ids, 0)?
        .reshape(shape)?)
}

/// For each element of `indices` (same rank as `data`), the flat position in `data` that it
/// names along `axis` (other coordinates its own).
fn positions_along(data: &[usize], indices: &Tensor, axis: usize) -> R<Vec<usize>> {
    let id = indices.dims();
    if id.len() != data.len() {
        bail!("indices {id:?} and data {data:?} differ in rank");
    }
    if (0..id.len()).any(|d| d != axis && id[d] > data[d]) {
        bail!("indices {id:?} do not fit data {data:?} outside axis {axis}");
    }
    let iv = ints_of(indices)?;
    let st = strides(data);
    let mut out = Vec::with_capacity(iv.len());
    each_index(id, |flat, p| {
        let mut off = 0;
        for d in 0..p.len() {
            let c = if d == axis {
                fix(iv[flat], data[d], d)?
            } else {
                p[d]
            };
            off += c * st[d];
        }
        out.push(off);
        Ok(())
    })?;
    Ok(out)
}

fn gather_elements(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let data = arg(&args, 0)?;
    let idx = arg(&args, 1)?;
    let axis = norm_axis(node.attr_int("axis", 0), data.rank())?;
    cx.fits("its output", idx.dims(), data.dtype())?;
    cx.fits("its indices as i64", idx.dims(), DType::I64)?;
    let map = positions_along(data.dims(), idx, axis)?;
    let map = map.into_iter().map(|v| v as i64).collect();
    Ok(vec![take(data, map, idx.dims())?])
}

/// `data` with `upd`'s element `j` written at `t` for each `(t, j)` of `pairs`, `upd` cast to
/// `data`'s type.
fn scattered(
    node: &Node,
    cx: &OpCx,
    data: &Tensor,
    upd: &Tensor,
    pairs: &[(usize, usize)],
) -> R<Vec<Tensor>> {
    let mut out = Vals::of(data)?;
    scatter_into(
        node,
        &mut out,
        &Vals::of(&upd.to_dtype(data.dtype())?)?,
        pairs,
    )?;
    Ok(vec![out.tensor(data.dims(), data.dtype(), cx.device)?])
}

/// Writes `upd[j]` to `out[t]` for each pair `(t, j)` in order, combined with what is there
/// by the `reduction` attribute (`none`, `add`, `mul`, `max`, `min`).
fn scatter_into(node: &Node, out: &mut Vals, upd: &Vals, pairs: &[(usize, usize)]) -> R<()> {
    let red = node.attr_str("reduction").unwrap_or("none");
    /// The combining rule for one element type.
    fn apply<T: Copy + PartialOrd>(
        out: &mut [T],
        upd: &[T],
        pairs: &[(usize, usize)],
        red: &str,
        add: fn(T, T) -> T,
        mul: fn(T, T) -> T,
    ) -> R<()> {
        let f: Box<dyn Fn(T, T) -> T> = match red {
            "none" => Box::new(|_, b| b),
            "add" => Box::new(add),
            "mul" => Box::new(mul),
            "max" => Box::new(|a, b| if b > a { b } else { a }),
            "min" => Box::new(|a, b| if b < a { b } else { a }),
            other => bail!("unknown reduction `{other}`"),
        };
        for &(t, j) in pairs {
            out[t] = f(out[t], upd[j]);
        }
        Ok(())
    }
    match (out, upd) {
        (Vals::F(o), Vals::F(u)) => apply(o, u, pairs, red, |a, b| a + b, |a, b| a * b),
        (Vals::I(o), Vals::I(u)) => apply(o, u, pairs, red, i64::wrapping_add, i64::wrapping_mul),
        _ => bail!("data and updates differ in kind"),
    }
}

fn scatter_elements(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let data = arg(&args, 0)?;
    let idx = arg(&args, 1)?;
    let upd = arg(&args, 2)?;
    if idx.dims() != upd.dims() {
        bail!(
            "indices {:?} and updates {:?} differ in shape",
            idx.dims(),
            upd.dims()
        );
    }
    let axis = norm_axis(node.attr_int("axis", 0), data.rank())?;
    cx.fits("its values as 64-bit values", data.dims(), DType::F64)?;
    cx.fits("its updates as 64-bit values", upd.dims(), DType::F64)?;
    let targets = positions_along(data.dims(), idx, axis)?;
    let pairs: Vec<(usize, usize)> = targets
        .into_iter()
        .enumerate()
        .map(|(j, t)| (t, j))
        .collect();
    scattered(node, cx, data, upd, &pairs)
}

fn scatter_nd(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let data = arg(&args, 0)?;
    let idx = arg(&args, 1)?;
    let upd = arg(&args, 2)?;
    let (dd, id) = (data.dims(), idx.dims());
    let Some(&k) = id.last() else {
        bail!("indices must have rank 1 or more");
    };
    let mut want: Vec<usize> = id[..id.len() - 1].to_vec();
    want.extend_from_slice(dd.get(k..).unwrap_or_default());
    if k > dd.len() || upd.dims() != want {
        bail!(
            "updates {:?} do not fit data {dd:?} and indices {id:?}",
            upd.dims()
        );
    }
    cx.fits("its values as 64-bit values", dd, DType::F64)?;
    cx.fits("its updates as 64-bit values", upd.dims(), DType::F64)?;
    let iv = ints_of(idx)?;
    let st = strides(dd);
    let inner: usize = dd[k..].iter().product();
    let mut pairs = Vec::with_capacity(upd.elem_count());
    for (t, tuple) in iv.chunks_exact(k.max(1)).enumerate() {
        let mut base = 0;
        for (j, &v) in tuple.iter().enumerate().take(k) {
            base += fix(v, dd[j], j)? * st[j];
        }
        pairs.extend((0..inner).map(|e| (base + e, t * inner + e)));
    }
    if k == 0 {
        // Each (empty) tuple names the whole of `data`.
        pairs = (0..upd.elem_count())
            .map(|j| (j % inner.max(1), j))
            .collect();
    }
    scattered(node, cx, data, upd, &pairs)
}

fn one_hot(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let idx = arg(&args, 0)?;
    let depth = ints_of(arg(&args, 1)?)?;
    let values = arg(&args, 2)?;
    if depth.len() != 1 || values.elem_count() != 2 {
        bail!("depth must hold one value and values two");
    }
    let Ok(depth) = usize::try_from(depth[0]) else {
        bail!("negative depth {}", depth[0]);
    };
    let rank = idx.rank();
    let axis = norm_axis(node.attr_int("axis", -1), rank + 1)?;
    let mut shape = idx.dims().to_vec();
    shape.insert(axis, depth);
    cx.fits("its output", &shape, values.dtype())?;
    cx.fits("its positions as i64", &shape, DType::I64)?;
    let iv = ints_of(idx)?;
    let outer: usize = idx.dims()[..axis].iter().product();
    let inner: usize = idx.dims()[axis..].iter().product();
    let d = depth as i64;
    let mut map = Vec::with_capacity(outer * depth * inner);
    for o in 0..outer {
        for k in 0..d {
            for i in 0..inner {
                let v = iv[o * inner + i];
                let v = if v < 0 { v + d } else { v };
                map.push(i64::from(v == k));
            }
        }
    }
    Ok(vec![take(values, map, &shape)?])
}

fn non_zero(_: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    cx.fits("its values as 64-bit values", x.dims(), DType::F64)?;
    let dims: Vec<usize> = if x.rank() == 0 {
        vec![1]
    } else {
        x.dims().to_vec()
    };
    let hits: Vec<bool> = match Vals::of(x)? {
        Vals::F(v) => v.iter().map(|&a| a != 0.0).collect(),
        Vals::I(v) => v.iter().map(|&a| a != 0).collect(),
    };
    let nnz = hits.iter().filter(|&&h| h).count();
    let mut out = vec![0i64; dims.len() * nnz];
    let mut j = 0;
    each_index(&dims, |flat, p| {
        if hits[flat] {
            for (d, &c) in p.iter().enumerate() {
                out[d * nnz + j] = c as i64;
            }
            j += 1;
        }
        Ok(())
    })?;
    Ok(vec![Tensor::from_vec(out, (dims.len(), nnz), cx.device)?])
}

fn compress(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let cond = ints_of(arg(&args, 1)?)?;
    let (x, axis) = match node.attrs.get("axis") {
        Some(_) => (x.clone(), norm_axis(node.attr_int("axis", 0), x.rank())?),
        None => (x.flatten_all()?, 0),
    };
    let d = x.dims()[axis];
    if cond.len() > d {
        bail!(
            "condition has {} values for a dimension of size {d}",
            cond.len()
        );
    }
    let ids: Vec<i64> = (0..cond.len() as i64)
        .filter(|&i| cond[i as usize] != 0)
        .collect();
    let n = ids.len();
    let ids = Tensor::from_vec(ids, n, x.device())?;
    Ok(vec![x.contiguous()?.index_select(&ids, axis)?])
}

fn top_k(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let k = match opt(&args, 1) {
        Some(t) => ints_of(t)?,
        None => vec![node.attr_int("k", -1)],
    };
    let axis = norm_axis(node.attr_int("axis", -1), x.rank())?;
    let n = x.dims()[axis];
    let k = match k.as_slice() {
        [k] if *k >= 0 && *k as u64 <= n as u64 => *k as usize,
        _ => bail!("k {k:?} is not one value in 0..={n}"),
    };
    let largest = node.attr_int("largest", 1) != 0;
    cx.fits("its values as 64-bit values", x.dims(), DType::F64)?;
    let mut shape = x.dims().to_vec();
    shape[axis] = k;
    let outer: usize = x.dims()[..axis].iter().product();
    let inner: usize = x.dims()[axis + 1..].iter().product();
    let vals = Vals::of(x)?;
    let cmp = |a: usize, b: usize| {
        let o = match &vals {
            Vals::F(v) => v[a].partial_cmp(&v[b]).unwrap_or(std::cmp::Ordering::Equal),
            Vals::I(v) => v[a].cmp(&v[b]),
        };
        if largest {
            o.reverse()
        } else {
            o
        }
    };
    let mut picked = vec![0usize; outer * k * inner];
    let mut line: Vec<usize> = Vec::with_capacity(n);
    for o in 0..outer {
        for i in 0..inner {
            line.clear();
            line.extend((0..n).map(|j| (o * n + j) * inner + i));
            // Stable: equal values keep the lower index first.
            line.sort_by(|&a, &b| cmp(a, b));
            for (j, &at) in line.iter().take(k).enumerate() {
                picked[(o * k + j) * inner + i] = at;
            }
        }
    }
    let index: Vec<i64> = picked
        .iter()
        .map(|&at| ((at / inner) % n.max(1)) as i64)
        .collect();
    let values = vals.pick(&picked).tensor(&shape, x.dtype(), cx.device)?;
    Ok(vec![values, Tensor::from_vec(index, shape, cx.device)?])
}

fn trilu(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    if x.rank() < 2 {
        bail!("Trilu needs rank 2 or more, not {}", x.rank());
    }
    let k = match opt(&args, 1) {
        Some(t) => match ints_of(t)?.as_slice() {
            [k] => *k,
            other => bail!("k must hold one value, not {other:?}"),
        },
        None => 0,
    };
    let upper = node.attr_int("upper", 1) != 0;
    let (n, m) = (x.dims()[x.rank() - 2], x.dims()[x.rank() - 1]);
    cx.fits("its mask", &[n, m], DType::U8)?;
    let mut mask = Vec::with_capacity(n * m);
    for i in 0..n as i64 {
        for j in 0..m as i64 {
            let d = j.saturating_sub(i);
            mask.push(u8::from(if upper { d >= k } else { d <= k }));
        }
    }
    let mask = Tensor::from_vec(mask, (n, m), cx.device)?
        .broadcast_as(x.dims())?
        .contiguous()?;
    Ok(vec![mask.where_cond(x, &x.zeros_like()?)?])
}

fn eye_like(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let &[n, m] = x.dims() else {
        bail!("EyeLike needs a 2-D input, not {:?}", x.dims());
    };
    let dt = match node.attrs.get("dtype") {
        Some(_) => candle_dtype(node.attr_int("dtype", 1))?,
        None => x.dtype(),
    };
    let k = node.attr_int("k", 0);
    cx.fits("its values as f64", &[n, m], DType::F64)?;
    let mut v = vec![0f64; n * m];
    for (i, row) in v.chunks_exact_mut(m.max(1)).enumerate().take(n) {
        let j = i as i64 + k;
        if (0..m as i64).contains(&j) {
            row[j as usize] = 1.0;
        }
    }
    Ok(vec![Tensor::from_vec(v, (n, m), cx.device)?.to_dtype(dt)?])
}

/// TensorScatter: `update` written into a copy of `past_cache` along `axis` (default -2) from
/// each batch's `write_indices` entry (default 0), wrapping around in `circular` mode.
fn tensor_scatter(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let past = arg(&args, 0)?;
    let upd = arg(&args, 1)?.to_dtype(past.dtype())?;
    let (pd, ud) = (past.dims(), upd.dims());
    let axis = norm_axis(node.attr_int("axis", -2), past.rank())?;
    let circular = match node.attr_str("mode").unwrap_or("linear") {
        "linear" => false,
        "circular" => true,
        m => bail!("unknown mode `{m}`"),
    };
    let fits = ud.len() == pd.len()
        && axis > 0
        && (0..pd.len()).all(|d| {
            if d == axis {
                ud[d] <= pd[d]
            } else {
                ud[d] == pd[d]
            }
        });
    if !fits {
        bail!("update {ud:?} does not fit cache {pd:?} on axis {axis}");
    }
    let starts = match opt(&args, 2) {
        Some(t) => ints_of(t)?,
        None => vec![0; pd[0]],
    };
    if starts.len() != pd[0] {
        bail!("{} write indices for batch {}", starts.len(), pd[0]);
    }
    cx.fits("its positions as i64", pd, DType::I64)?;
    let (max, seq) = (pd[axis], ud[axis]);
    let inner: usize = pd[axis + 1..].iter().product();
    let prefix: usize = pd[..axis].iter().product();
    let per_batch = prefix / pd[0].max(1);
    let total = past.elem_count();
    let mut map: Vec<i64> = (0..total as i64).collect();
    for p in 0..prefix {
        let w = starts[p / per_batch.max(1)];
        for s in 0..seq {
            let mut c = w + s as i64;
            if circular && max > 0 {
                c = c.rem_euclid(max as i64);
            }
            let c = fix_write(c, max)?;
            for e in 0..inner {
                map[(p * max + c) * inner + e] = (total + (p * seq + s) * inner + e) as i64;
            }
        }
    }
    let all = Tensor::cat(&[&past.flatten_all()?, &upd.flatten_all()?], 0)?;
    Ok(vec![take(&all, map, pd)?])
}

/// A write position `c` checked against the cache length `max`.
fn fix_write(c: i64, max: usize) -> R<usize> {
    match usize::try_from(c) {
        Ok(c) if c < max => Ok(c),
        _ => bail!("write position {c} is outside the cache length {max}"),
    }
}

/// ReverseSequence: along `time_axis` (default 0), the first `sequence_lens[b]` elements of
/// each batch `b` (on `batch_axis`, default 1) reversed.
fn reverse_sequence(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let lens = ints_of(arg(&args, 1)?)?;
    let ba = norm_axis(node.attr_int("batch_axis", 1), x.rank())?;
    let ta = norm_axis(node.attr_int("time_axis", 0), x.rank())?;
    if ba == ta || ba > 1 || ta > 1 {
        bail!("batch_axis and time_axis must be 0 and 1");
    }
    let dims = x.dims();
    let lens: Vec<usize> = lens
        .iter()
        .map(|&l| match usize::try_from(l) {
            Ok(l) if l <= dims[ta] => Ok(l),
            _ => bail!("sequence length {l} is outside 0..={}", dims[ta]),
        })
        .collect::<R<_>>()?;
    if lens.len() != dims[ba] {
        bail!("{} sequence lengths for batch {}", lens.len(), dims[ba]);
    }
    cx.fits("its positions as i64", dims, DType::I64)?;
    let st = strides(dims);
    let mut map = Vec::with_capacity(x.elem_count());
    each_index(dims, |flat, p| {
        let (t, l) = (p[ta], lens[p[ba]]);
        let src = if t < l {
            flat - t * st[ta] + (l - 1 - t) * st[ta]
        } else {
            flat
        };
        map.push(src as i64);
        Ok(())
    })?;
    Ok(vec![take(x, map, dims)?])
}

/// Unique: the distinct elements (or slices along `axis`), sorted (default) or in order of
/// first appearance, with the first index of each, the inverse indices and the counts.
fn unique(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let (x, axis) = match node.attrs.get("axis") {
        Some(_) => (x.clone(), norm_axis(node.attr_int("axis", 0), x.rank())?),
        None => (x.flatten_all()?, 0),
    };
    cx.fits("its values as 64-bit values", x.dims(), DType::F64)?;
    let n = x.dims()[axis];
    let outer: usize = x.dims()[..axis].iter().product();
    let inner: usize = x.dims()[axis + 1..].iter().product();
    let vals = Vals::of(&x)?;
    // Slice `i` is the values at (o, i, e) for all o and e, compared in that order.
    let cmp = |a: usize, b: usize| {
        for o in 0..outer {
            for e in 0..inner {
                let (p, q) = ((o * n + a) * inner + e, (o * n + b) * inner + e);
                let ord = match &vals {
                    Vals::F(v) => v[p].partial_cmp(&v[q]).unwrap_or(std::cmp::Ordering::Equal),
                    Vals::I(v) => v[p].cmp(&v[q]),
                };
                if ord.is_ne() {
                    return ord;
                }
            }
        }
        std::cmp::Ordering::Equal
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| cmp(a, b));
    // Groups of equal slices, in sorted order: (first index, count).
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut inverse = vec![0usize; n];
    for (k, &i) in order.iter().enumerate() {
        if k == 0 || cmp(order[k - 1], i).is_ne() {
            groups.push((i, 0));
        }
        let g = groups.len() - 1;
        groups[g].1 += 1;
        inverse[i] = g;
    }
    if node.attr_int("sorted", 1) == 0 {
        let mut by_first: Vec<usize> = (0..groups.len()).collect();
        by_first.sort_by_key(|&g| groups[g].0);
        let mut rank = vec![0; groups.len()];
        for (r, &g) in by_first.iter().enumerate() {
            rank[g] = r;
        }
        groups = by_first.iter().map(|&g| groups[g]).collect();
        for v in &mut inverse {
            *v = rank[*v];
        }
    }
    let u = groups.len();
    let first: Vec<i64> = groups.iter().map(|g| g.0 as i64).collect();
    let ids = Tensor::from_vec(first.clone(), u, x.device())?;
    let y = x.contiguous()?.index_select(&ids, axis)?;
    let inverse: Vec<i64> = inverse.into_iter().map(|v| v as i64).collect();
    let counts: Vec<i64> = groups.iter().map(|g| g.1 as i64).collect();
    let dev = x.device();
    Ok(vec![
        y,
        Tensor::from_vec(first, u, dev)?,
        Tensor::from_vec(inverse, n, dev)?,
        Tensor::from_vec(counts, u, dev)?,
    ])
}

/// Whether boxes `a` and `b` (`[y1, x1, y2, x2]` corners, or `[x, y, w, h]` centres when
/// `centre`) overlap by more than `iou` (intersection over union), in f32 as ONNX's reference.
fn suppresses(a: &[f32], b: &[f32], centre: bool, iou: f32) -> bool {
    let span = |p: f32, q: f32| if p >= q { (q, p) } else { (p, q) };
    let (ax, ay, bx, by) = if centre {
        let half = |c: f32, s: f32| (c - s / 2.0, c + s / 2.0);
        (
            half(a[0], a[2]),
            half(a[1], a[3]),
            half(b[0], b[2]),
            half(b[1], b[3]),
        )
    } else {
        (
            span(a[1], a[3]),
            span(a[0], a[2]),
            span(b[1], b[3]),
            span(b[0], b[2]),
        )
    };
    let (ix0, ix1) = (ax.0.max(bx.0), ax.1.min(bx.1));
    let (iy0, iy1) = (ay.0.max(by.0), ay.1.min(by.1));
    if ix1 <= ix0 || iy1 <= iy0 {
        return false;
    }
    let inter = (ix1 - ix0) * (iy1 - iy0);
    let area_a = (ax.1 - ax.0) * (ay.1 - ay.0);
    let area_b = (bx.1 - bx.0) * (by.1 - by.0);
    let union = area_a + area_b - inter;
    if inter <= 0.0 || area_a <= 0.0 || area_b <= 0.0 || union <= 0.0 {
        return false;
    }
    inter / union > iou
}

/// NonMaxSuppression: per batch and class, boxes by falling score (ties: lower index first),
/// above `score_threshold` when given, each kept unless it overlaps a kept one by more than
/// `iou_threshold`, at most `max_output_boxes_per_class` (default 0). Output
/// `[selected, 3]` rows of (batch, class, box).
fn non_max_suppression(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let boxes = arg(&args, 0)?;
    let scores = arg(&args, 1)?;
    let (&[b, n, 4], &[sb, c, sn]) = (boxes.dims(), scores.dims()) else {
        bail!(
            "boxes {:?} and scores {:?} are not [B, N, 4] and [B, C, N]",
            boxes.dims(),
            scores.dims()
        );
    };
    if sb != b || sn != n {
        bail!(
            "boxes {:?} and scores {:?} disagree",
            boxes.dims(),
            scores.dims()
        );
    }
    let first_f32 = |i: usize| -> R<Option<f32>> {
        match opt(&args, i) {
            Some(t) if t.elem_count() > 0 => Ok(Some(
                t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?[0],
            )),
            _ => Ok(None),
        }
    };
    let max_out = match opt(&args, 2) {
        Some(t) if t.elem_count() > 0 => ints_of(t)?[0].max(0) as usize,
        _ => 0,
    };
    let iou = first_f32(3)?.unwrap_or(0.0);
    let threshold = first_f32(4)?;
    let centre = node.attr_int("center_point_box", 0) != 0;
    cx.fits("its boxes as f32", boxes.dims(), DType::F32)?;
    cx.fits("its scores as f32", scores.dims(), DType::F32)?;
    let bv: Vec<f32> = boxes.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let sv: Vec<f32> = scores.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let mut out: Vec<i64> = Vec::new();
    for bi in 0..b {
        let bx = |i: usize| &bv[(bi * n + i) * 4..(bi * n + i) * 4 + 4];
        for ci in 0..c {
            let sc = &sv[(bi * c + ci) * n..(bi * c + ci + 1) * n];
            let mut cand: Vec<usize> = (0..n)
                .filter(|&i| threshold.is_none_or(|t| sc[i] > t))
                .collect();
            cand.sort_by(|&p, &q| {
                sc[q]
                    .partial_cmp(&sc[p])
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            let mut kept: Vec<usize> = Vec::new();
            for i in cand {
                if kept.len() >= max_out {
                    break;
                }
                if kept.iter().all(|&k| !suppresses(bx(i), bx(k), centre, iou)) {
                    kept.push(i);
                    out.extend([bi as i64, ci as i64, i as i64]);
                }
            }
        }
    }
    let rows = out.len() / 3;
    Ok(vec![Tensor::from_vec(out, (rows, 3), cx.device)?])
}

/// TfIdfVectorizer over integer n-gram pools: per row of `[C]` or `[B, C]` input, the
/// n-grams of `pool_int64s` (sizes `min_gram_length..=max_gram_length`, items up to
/// `max_skip_count` apart) counted into their `ngram_indexes` columns, then weighted by
/// `mode` (`TF`, `IDF`, `TFIDF`) and `weights`, as f32.
fn tf_idf(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    use std::collections::{HashMap, HashSet};
    let x = arg(&args, 0)?;
    let ints = |name: &str| node.attr_ints(name).unwrap_or_default();
    let (counts, indexes, pool) = (
        ints("ngram_counts"),
        ints("ngram_indexes"),
        ints("pool_int64s"),
    );
    let weights: &[f32] = match node.attrs.get("weights") {
        Some(Attr::Floats(w)) => w,
        _ => &[],
    };
    let min = node.attr_int("min_gram_length", 1).max(1) as usize;
    let max = node.attr_int("max_gram_length", 1).max(0) as usize;
    let skips = node.attr_int("max_skip_count", 0).max(0) as usize;
    let mode = node.attr_str("mode").unwrap_or("TF");
    if !matches!(mode, "TF" | "IDF" | "TFIDF") {
        bail!("unknown mode `{mode}`");
    }
    let Some(width) = indexes.iter().max().map(|&m| m + 1) else {
        bail!("TfIdfVectorizer needs ngram_indexes");
    };
    let width = usize::try_from(width)
        .map_err(|_| candle_core::Error::Msg("negative ngram index".into()))?;
    if indexes.iter().any(|&i| i < 0) || (!weights.is_empty() && weights.len() < width) {
        bail!("ngram_indexes and weights do not fit {width} columns");
    }
    // Each n-gram of the pool (by size, from `ngram_counts`) and every prefix of one.
    let mut full: HashMap<&[i64], usize> = HashMap::new();
    let mut prefixes: HashSet<&[i64]> = HashSet::new();
    let mut id = 0usize;
    for (i, &start) in counts.iter().enumerate() {
        let size = i + 1;
        let end = counts.get(i + 1).copied().unwrap_or(pool.len() as i64);
        let (Ok(start), Ok(end)) = (usize::try_from(start), usize::try_from(end)) else {
            bail!("negative ngram_counts {counts:?}");
        };
        if start > end || end > pool.len() {
            bail!(
                "ngram_counts {counts:?} do not fit a pool of {}",
                pool.len()
            );
        }
        for gram in pool[start..end].chunks_exact(size) {
            if (min..=max).contains(&size) {
                if id >= indexes.len() {
                    bail!("more n-grams than ngram_indexes");
                }
                full.insert(gram, indexes[id] as usize);
                prefixes.extend((1..=size).map(|k| &gram[..k]));
            }
            id += 1;
        }
    }
    let (rows, c, shape) = match x.dims() {
        [] => (1, 1, vec![width]),
        &[c] => (1, c, vec![width]),
        &[b, c] => (b, c, vec![b, width]),
        d => bail!("TfIdfVectorizer needs [C] or [B, C] input, not {d:?}"),
    };
    cx.fits("its output", &shape, DType::F64)?;
    let xv = ints_of(x)?;
    let mut freq = vec![0u64; rows * width];
    for r in 0..rows {
        let row = &xv[r * c..(r + 1) * c];
        let mut start_size = min;
        for skip in 1..=skips + 1 {
            for s in 0..c {
                if s + skip * (start_size - 1) >= c {
                    break;
                }
                let mut gram = Vec::with_capacity(max);
                let (mut item, mut size) = (s, 1);
                while size <= max && item < c {
                    gram.push(row[item]);
                    if !prefixes.contains(gram.as_slice()) {
                        break;
                    }
                    if size >= start_size {
                        if let Some(&col) = full.get(gram.as_slice()) {
                            freq[r * width + col] += 1;
                        }
                    }
                    size += 1;
                    item += skip;
                }
            }
            if start_size == 1 {
                start_size += 1;
                if start_size > max {
                    break;
                }
            }
        }
    }
    let out: Vec<f32> = freq
        .iter()
        .enumerate()
        .map(|(p, &f)| {
            let w = weights.get(p % width).copied();
            match (mode, w) {
                ("TF", _) => f as f32,
                ("IDF", Some(w)) => {
                    if f > 0 {
                        w
                    } else {
                        0.0
                    }
                }
                ("IDF", None) => {
                    if f > 0 {
                        1.0
                    } else {
                        0.0
                    }
                }
                (_, Some(w)) => w * f as f32,
                (_, None) => f as f32,
            }
        })
        .collect();
    Ok(vec![Tensor::from_vec(out, shape, cx.device)?])
}
