//! Embedding lookup with a fast backward. candle differentiates `index_select` with
//! `index_add` into a zero table, which runs element by element (5 ms for a 10000 x 128
//! table and 2048 ids on this machine, against 0.7 ms in PyTorch); this kernel copies rows
//! forward and adds rows backward.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};

use super::{f32_slice, fast_path};

/// Rows of `weight` `[vocab, dim]` at `ids` (u32, any shape): `[..ids.shape, dim]`.
pub fn embedding(weight: &Tensor, ids: &Tensor) -> candle_core::Result<Tensor> {
    let mut shape = ids.dims().to_vec();
    shape.push(weight.dim(1)?);
    let flat = ids.flatten_all()?;
    let rows = if fast_path(&[weight]) && flat.dtype() == DType::U32 {
        weight
            .contiguous()?
            .apply_op2(&flat.contiguous()?, Lookup)?
    } else {
        weight.index_select(&flat, 0)?
    };
    rows.reshape(shape)
}

struct Lookup;

fn ids_slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [u32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::U32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("embedding: ids must be contiguous u32"),
    }
}

impl CustomOp2 for Lookup {
    fn name(&self) -> &'static str {
        "ferry-embedding"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let w = f32_slice(s1, l1, self.name())?;
        let ids = ids_slice(s2, l2)?;
        let (vocab, dim) = l1.shape().dims2()?;
        let mut out = vec![0f32; ids.len() * dim];
        for (o, &id) in out.chunks_exact_mut(dim.max(1)).zip(ids) {
            let id = id as usize;
            if id >= vocab {
                candle_core::bail!("token id {id} is outside the embedding table of {vocab} rows (is the tokenizer the model's?)");
            }
            o.copy_from_slice(&w[id * dim..(id + 1) * dim]);
        }
        Ok((CpuStorage::F32(out), Shape::from((ids.len(), dim))))
    }

    fn bwd(
        &self,
        w: &Tensor,
        ids: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (vocab, dim) = w.dims2()?;
        let g = g.contiguous()?;
        let ids_v: Vec<u32> = ids.to_vec1()?;
        let gv: Vec<f32> = g.flatten_all()?.to_vec1()?;
        let mut dw = vec![0f32; vocab * dim];
        for (row, &id) in gv.chunks_exact(dim.max(1)).zip(&ids_v) {
            let dst = &mut dw[id as usize * dim..(id as usize + 1) * dim];
            for (d, s) in dst.iter_mut().zip(row) {
                *d += s;
            }
        }
        Ok((Some(Tensor::from_vec(dw, (vocab, dim), w.device())?), None))
    }
}
