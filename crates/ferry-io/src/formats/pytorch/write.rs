//! Writing a state dict as a zip `.pth` that `torch.load(weights_only=True)` accepts.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::dtypes::{storage_class_name, torch_dtype_name};
use crate::atomic::write_atomic;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::meta::Metadata;
use crate::write::{OutTensor, Progress};

/// Builds the protocol-2 pickle of a state dict, memoizing globals and repeated strings.
pub(super) struct PickleWriter {
    pub(super) out: Vec<u8>,
    pub(super) memo: HashMap<String, u32>,
}

impl PickleWriter {
    pub(super) fn new() -> Self {
        PickleWriter {
            out: vec![0x80, 2],
            memo: HashMap::new(),
        }
    }

    pub(super) fn put(&mut self, key: String) {
        let i = self.memo.len() as u32;
        self.memo.insert(key, i);
        if i < 256 {
            self.out.extend_from_slice(&[b'q', i as u8]);
        } else {
            self.out.push(b'r');
            self.out.extend_from_slice(&i.to_le_bytes());
        }
    }

    /// Emits a memoized item, or runs `emit` and memoizes it under `key`.
    pub(super) fn memoized(&mut self, key: String, emit: impl FnOnce(&mut Self)) {
        match self.memo.get(&key) {
            Some(&i) if i < 256 => self.out.extend_from_slice(&[b'h', i as u8]),
            Some(&i) => {
                self.out.push(b'j');
                self.out.extend_from_slice(&i.to_le_bytes());
            }
            None => {
                emit(self);
                self.put(key);
            }
        }
    }

    pub(super) fn global(&mut self, module: &str, name: &str) {
        self.memoized(format!("g:{module} {name}"), |w| {
            w.out.push(b'c');
            w.out
                .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        });
    }

    pub(super) fn str(&mut self, s: &str) {
        self.memoized(format!("s:{s}"), |w| {
            w.out.push(b'X');
            w.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            w.out.extend_from_slice(s.as_bytes());
        });
    }

    pub(super) fn int(&mut self, v: u64) {
        if v < 256 {
            self.out.extend_from_slice(&[b'K', v as u8]);
        } else if v < 65536 {
            self.out.push(b'M');
            self.out.extend_from_slice(&(v as u16).to_le_bytes());
        } else if v <= i32::MAX as u64 {
            self.out.push(b'J');
            self.out.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            // LONG1: little-endian two's complement, with a zero byte when the sign bit is set.
            let mut b = v.to_le_bytes().to_vec();
            while b.len() > 1 && b[b.len() - 1] == 0 && b[b.len() - 2] & 0x80 == 0 {
                b.pop();
            }
            if b[b.len() - 1] & 0x80 != 0 {
                b.push(0);
            }
            self.out.extend_from_slice(&[0x8a, b.len() as u8]);
            self.out.extend_from_slice(&b);
        }
    }

    pub(super) fn tuple(&mut self, items: &[u64]) {
        match items.len() {
            0 => self.out.push(b')'),
            n => {
                if n > 3 {
                    self.out.push(b'(');
                }
                for &i in items {
                    self.int(i);
                }
                self.out.push(match n {
                    1 => 0x85,
                    2 => 0x86,
                    3 => 0x87,
                    _ => b't',
                });
            }
        }
    }

    pub(super) fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.out.extend_from_slice(b")R");
    }

    /// `name: _rebuild_tensor_v2(pid, 0, shape, strides, False, OrderedDict())`, or `_v3` with
    /// an untyped storage and a dtype argument for dtypes without a legacy storage class.
    pub(super) fn tensor(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[usize],
        key: &str,
        storage_numel: u64,
    ) {
        let class = storage_class_name(dtype);
        self.str(name);
        self.global(
            "torch._utils",
            if class.is_some() {
                "_rebuild_tensor_v2"
            } else {
                "_rebuild_tensor_v3"
            },
        );
        self.out.push(b'(');
        self.out.push(b'(');
        self.str("storage");
        match class {
            Some(c) => self.global("torch", c),
            None => self.global("torch.storage", "UntypedStorage"),
        }
        self.str(key);
        self.str("cpu");
        let numel = if class.is_some() {
            storage_numel
        } else {
            storage_numel * dtype.block_bytes() as u64
        };
        self.int(numel);
        self.out.extend_from_slice(b"tQ");
        self.int(0);
        let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        self.tuple(&dims);
        self.tuple(&row_major_strides(shape));
        self.out.push(0x89);
        self.empty_ordered_dict();
        if class.is_none() {
            if let Some(n) = torch_dtype_name(dtype) {
                self.global("torch", n);
            }
        }
        self.out.extend_from_slice(b"tR");
    }
}

pub(super) fn row_major_strides(shape: &[usize]) -> Vec<u64> {
    let mut strides = vec![1u64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1].saturating_mul(shape[i + 1] as u64);
    }
    strides
}

/// Where each output tensor's data go: its own storage, or a tied target's.
pub(super) struct Planned {
    pub(super) key: String,
    pub(super) storage_numel: u64,
    pub(super) writes: bool,
}

pub(super) fn plan(path: &Path, tensors: &[OutTensor<'_>]) -> Result<Vec<Planned>> {
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<Planned> = Vec::with_capacity(tensors.len());
    let mut next_key = 0usize;
    for (i, t) in tensors.iter().enumerate() {
        if t.dtype.is_quantized() || torch_dtype_name(t.dtype).is_none() {
            return Err(Error::tensor(
                path,
                &t.name,
                format!(
                    "PyTorch .pth cannot hold {} data; write GGUF (`--to gguf`) or dequantize (`--dtype f32`)",
                    t.dtype
                ),
            ));
        }
        if crate::tensor::numel(&t.shape).is_none() {
            return Err(Error::tensor(path, &t.name, "shape overflows"));
        }
        if by_name.insert(&t.name, i).is_some() {
            return Err(Error::tensor(
                path,
                &t.name,
                "two output tensors have this name",
            ));
        }
        let planned = match &t.tied_to {
            Some(target) => {
                let &j = by_name
                    .get(target.as_str())
                    .filter(|&&j| j < i)
                    .ok_or_else(|| {
                        Error::tensor(
                            path,
                            &t.name,
                            format!("tied to `{target}`, which is not written before it"),
                        )
                    })?;
                let src = &tensors[j];
                if src.dtype != t.dtype || t.numel() > out[j].storage_numel {
                    return Err(Error::tensor(
                        path,
                        &t.name,
                        format!(
                            "tied to `{target}` but its dtype or size differs ({} {:?} vs {} {:?})",
                            t.dtype, t.shape, src.dtype, src.shape
                        ),
                    ));
                }
                Planned {
                    key: out[j].key.clone(),
                    storage_numel: out[j].storage_numel,
                    writes: false,
                }
            }
            None => {
                next_key += 1;
                Planned {
                    key: (next_key - 1).to_string(),
                    storage_numel: t.numel(),
                    writes: true,
                }
            }
        };
        out.push(planned);
    }
    Ok(out)
}

/// The `data.pkl` of a state dict: an `OrderedDict` of name -> tensor.
pub(super) fn state_dict_pickle(tensors: &[OutTensor<'_>], planned: &[Planned]) -> Vec<u8> {
    let mut w = PickleWriter::new();
    w.empty_ordered_dict();
    if !tensors.is_empty() {
        w.out.push(b'(');
        for (t, p) in tensors.iter().zip(planned) {
            w.tensor(&t.name, t.dtype, &t.shape, &p.key, p.storage_numel);
        }
        w.out.push(b'u');
    }
    w.out.push(b'.');
    w.out
}

/// Name of the top folder inside archives ferry writes.
pub const ARCHIVE_PREFIX: &str = "archive";

/// Writes `tensors` as a zip `.pth` that `torch.load(path, weights_only=True)` accepts: an
/// `OrderedDict` state dict, one storage per tensor (tied tensors share their target's), data
/// aligned to 64 bytes. Tensors are produced and written one at a time. Only tensors are
/// written: `metadata` has no place in a state dict and is not stored.
pub fn write(
    path: &Path,
    tensors: &[OutTensor<'_>],
    metadata: &Metadata,
    progress: Progress<'_>,
) -> Result<()> {
    let _ = metadata;
    let planned = plan(path, tensors)?;
    let pkl = state_dict_pickle(tensors, &planned);
    write_atomic(path, |file| {
        let mut z = crate::formats::zip::ZipWriter::new(file, path);
        let mut id = Sha256::new();
        id.update(&pkl);
        let p = ARCHIVE_PREFIX;
        z.add(&format!("{p}/data.pkl"), &pkl)?;
        z.add(&format!("{p}/.format_version"), b"1")?;
        z.add(&format!("{p}/.storage_alignment"), b"64")?;
        z.add(&format!("{p}/byteorder"), b"little")?;
        for (t, plan) in tensors.iter().zip(&planned) {
            if !plan.writes {
                progress(&t.name, 0);
                continue;
            }
            let bytes = t.bytes_checked(path)?;
            z.add(&format!("{p}/data/{}", plan.key), &bytes)?;
            id.update(crc_of(&bytes).to_le_bytes());
            progress(&t.name, bytes.len() as u64);
        }
        z.add(&format!("{p}/version"), b"3\n")?;
        z.add(
            &format!("{p}/.data/serialization_id"),
            serialization_id(id).as_bytes(),
        )?;
        z.finish()?.flush().map_err(|e| Error::io(path, e))
    })
}

pub(super) fn crc_of(b: &[u8]) -> u32 {
    crc32fast::hash(b)
}

/// A 40-digit id like the one torch writes, derived from the content so output is reproducible.
pub(super) fn serialization_id(h: Sha256) -> String {
    let mut s = String::with_capacity(40);
    for b in h.finalize().iter().take(20) {
        let _ = write!(s, "{:02}", b % 100);
    }
    s
}
