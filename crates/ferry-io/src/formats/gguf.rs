//! GGUF (llama.cpp / ggml): reader for versions 1 to 3 (memory-mapped, every count, length and
//! offset checked against the file before anything is allocated), writer for version 3, and
//! llama.cpp-style metadata derived from a Hugging Face model folder ([`hf_metadata`]).
//!
//! Tensors whose ggml type ferry does not know (the IQ family, TQ, MXFP4...) are left out of
//! [`Checkpoint::tensors`] and listed, one string each, under the metadata key
//! [`UNSUPPORTED_KEY`], so that `ferry inspect` shows them; [`check_supported`] (and the GGUF
//! and npz writers) refuse to go on while that key is present, so they are never silently lost.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::atomic::write_atomic;
use crate::checkpoint::{Checkpoint, Format};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::meta::{MetaValue, Metadata};
use crate::tensor::{Layout, Storage, TensorEntry};
use crate::write::{OutTensor, Progress};

pub(crate) mod hf;
pub mod names;
pub use hf::hf_metadata;

/// Metadata key listing the tensors of a GGUF file that ferry cannot decode (unknown ggml
/// type): an array of strings `NAME: ggml type ID (TYPE), shape [..]`.
pub const UNSUPPORTED_KEY: &str = "ferry.unsupported_tensors";

/// Alignment of the data section and of each tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// The GGUF version ferry writes.
pub const WRITE_VERSION: u32 = 3;

const ALIGNMENT_KEY: &str = "general.alignment";
/// Most dimensions ferry reads (ggml itself uses at most 4, which is what ferry writes).
const MAX_DIMS_READ: usize = 8;
const MAX_DIMS_WRITE: usize = 4;
/// Deepest nesting of arrays in metadata (real files nest at most once).
const MAX_NESTING: usize = 8;
/// Most metadata values (array elements included) ferry keeps from one file, so that a small
/// hostile file cannot make it build a huge in-memory tree.
const MAX_META_VALUES: u64 = 1 << 24;
/// Largest up-front reservation for a list read from the file; longer lists grow as read.
const MAX_RESERVE: u64 = 1 << 16;

/// GGUF metadata value type ids.
mod vt {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// The name llama.cpp gives a ggml type id (for messages about types ferry lacks).
pub fn ggml_type_name(id: u32) -> &'static str {
    match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        4 => "Q4_2 (removed from ggml)",
        5 => "Q4_3 (removed from ggml)",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        31..=33 => "Q4_0_N_M (removed from ggml)",
        34 => "TQ1_0",
        35 => "TQ2_0",
        36..=38 => "IQ4_NL_N_M (removed from ggml)",
        39 => "MXFP4",
        40 => "NVFP4",
        41 => "Q1_0",
        _ => "unknown",
    }
}

// ------------------------------------------------------------------------------------------
// Reading
// ------------------------------------------------------------------------------------------

/// A bounds-checked little-endian cursor over the mapped file.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
    /// GGUF v1 stores counts and lengths as u32, later versions as u64.
    v1: bool,
    /// Metadata values read so far (see [`MAX_META_VALUES`]).
    values: u64,
}

impl<'a> Cursor<'a> {
    fn bad(&self, msg: impl Into<String>) -> Error {
        Error::malformed(self.path, msg)
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.bad(format!(
                "{what} needs {n} bytes at offset {} but only {} remain (truncated or corrupt)",
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count or length: u32 in v1, u64 later.
    fn size(&mut self, what: &str) -> Result<u64> {
        if self.v1 {
            self.u32(what).map(u64::from)
        } else {
            self.u64(what)
        }
    }

    /// A count of records each at least `min_bytes` long, checked against the bytes left.
    fn count(&mut self, what: &str, min_bytes: u64) -> Result<u64> {
        let n = self.size(what)?;
        if n.saturating_mul(min_bytes) > self.remaining() {
            return Err(self.bad(format!(
                "{what} is {n}, but the {} bytes left in the file cannot hold that many (corrupt or truncated)",
                self.remaining()
            )));
        }
        Ok(n)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.size(what)?;
        let s = self.take(n, what)?;
        Ok(String::from_utf8_lossy(s).into_owned())
    }

    /// Smallest encoding of one value of type `t` (for checking array counts).
    fn min_value_bytes(&self, t: u32) -> u64 {
        let size = if self.v1 { 4 } else { 8 };
        match t {
            vt::U8 | vt::I8 | vt::BOOL => 1,
            vt::U16 | vt::I16 => 2,
            vt::U32 | vt::I32 | vt::F32 => 4,
            vt::U64 | vt::I64 | vt::F64 => 8,
            vt::STRING => size,
            _ => 4 + size,
        }
    }

    fn value(&mut self, t: u32, key: &str, depth: usize) -> Result<MetaValue> {
        self.values += 1;
        if self.values > MAX_META_VALUES {
            return Err(self.bad(format!(
                "more than {MAX_META_VALUES} metadata values (at `{key}`); ferry refuses such a file"
            )));
        }
        let what = format!("value of `{key}`");
        Ok(match t {
            vt::U8 => MetaValue::U8(self.array::<1>(&what)?[0]),
            vt::I8 => MetaValue::I8(i8::from_le_bytes(self.array(&what)?)),
            vt::U16 => MetaValue::U16(u16::from_le_bytes(self.array(&what)?)),
            vt::I16 => MetaValue::I16(i16::from_le_bytes(self.array(&what)?)),
            vt::U32 => MetaValue::U32(self.u32(&what)?),
            vt::I32 => MetaValue::I32(i32::from_le_bytes(self.array(&what)?)),
            vt::F32 => MetaValue::F32(f32::from_le_bytes(self.array(&what)?)),
            vt::U64 => MetaValue::U64(self.u64(&what)?),
            vt::I64 => MetaValue::I64(i64::from_le_bytes(self.array(&what)?)),
            vt::F64 => MetaValue::F64(f64::from_le_bytes(self.array(&what)?)),
            vt::BOOL => match self.array::<1>(&what)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(self.bad(format!("`{key}` holds bool byte {b}, not 0 or 1"))),
            },
            vt::STRING => MetaValue::String(self.string(&what)?),
            vt::ARRAY => self.array_value(key, depth)?,
            other => {
                return Err(self.bad(format!(
                    "`{key}` has value type {other}, which is not a GGUF type (0..=12)"
                )))
            }
        })
    }

    fn array_value(&mut self, key: &str, depth: usize) -> Result<MetaValue> {
        if depth >= MAX_NESTING {
            return Err(self.bad(format!("`{key}` nests arrays more than {MAX_NESTING} deep")));
        }
        let t = self.u32(&format!("array type of `{key}`"))?;
        let min = self.min_value_bytes(t);
        let n = self.count(&format!("array length of `{key}`"), min)?;
        let mut items = Vec::with_capacity(n.min(MAX_RESERVE) as usize);
        for _ in 0..n {
            items.push(self.value(t, key, depth + 1)?);
        }
        Ok(MetaValue::Array(items))
    }

    fn align_to(&mut self, alignment: u64) -> Result<()> {
        let pad = align_up(self.pos as u64, alignment) - self.pos as u64;
        self.take(pad.min(self.remaining()), "padding").map(|_| ())
    }
}

fn align_up(x: u64, alignment: u64) -> u64 {
    x.div_ceil(alignment).saturating_mul(alignment)
}

/// One tensor info record as stored.
struct RawInfo {
    name: String,
    /// Dimensions as stored (innermost first).
    dims: Vec<u64>,
    type_id: u32,
    offset: u64,
}

fn read_header(c: &mut Cursor<'_>) -> Result<(u32, u64, u64)> {
    let magic = c.array::<4>("magic")?;
    if &magic != b"GGUF" {
        return Err(c.bad("does not start with the GGUF magic"));
    }
    let version = c.u32("version")?;
    if version > 0xFFFF && (1..=3).contains(&version.swap_bytes()) {
        return Err(c.bad(format!(
            "this is a big-endian GGUF v{} file; ferry reads little-endian GGUF only (re-convert it without --bigendian)",
            version.swap_bytes()
        )));
    }
    if !(1..=3).contains(&version) {
        return Err(c.bad(format!(
            "GGUF version {version} is not supported (ferry reads versions 1, 2 and 3)"
        )));
    }
    c.v1 = version == 1;
    let size = if c.v1 { 4 } else { 8 };
    let n_tensors = c.size("tensor count")?;
    let n_kv = c.size("metadata count")?;
    // Every key/value takes at least a key length, an empty key and a value type and byte.
    if n_kv.saturating_mul(size + 5) > c.remaining() {
        return Err(c.bad(format!(
            "metadata count is {n_kv}, but the {} bytes left in the file cannot hold that many (corrupt or truncated)",
            c.remaining()
        )));
    }
    // Every tensor info takes at least a name length, n_dims, a type and an offset.
    if n_tensors.saturating_mul(size + 16) > c.remaining() {
        return Err(c.bad(format!(
            "tensor count is {n_tensors}, but the {} bytes left in the file cannot hold that many (corrupt or truncated)",
            c.remaining()
        )));
    }
    Ok((version, n_tensors, n_kv))
}

fn read_metadata(c: &mut Cursor<'_>, n_kv: u64) -> Result<Metadata> {
    let mut meta = Metadata::new();
    for _ in 0..n_kv {
        let key = c.string("metadata key")?;
        let t = c.u32(&format!("value type of `{key}`"))?;
        let v = c.value(t, &key, 0)?;
        if meta.insert(key.clone(), v).is_some() {
            return Err(c.bad(format!("metadata key `{key}` appears twice")));
        }
    }
    Ok(meta)
}

fn read_tensor_info(c: &mut Cursor<'_>) -> Result<RawInfo> {
    let name = c.string("tensor name")?;
    let n_dims = c.u32(&format!("n_dims of tensor `{name}`"))? as usize;
    if n_dims > MAX_DIMS_READ {
        return Err(Error::tensor(
            c.path,
            &name,
            format!("{n_dims} dimensions (ggml uses at most 4; ferry accepts up to {MAX_DIMS_READ}): corrupt file"),
        ));
    }
    let mut dims = Vec::with_capacity(n_dims);
    for _ in 0..n_dims {
        dims.push(c.size(&format!("dimensions of tensor `{name}`"))?);
    }
    let type_id = c.u32(&format!("type of tensor `{name}`"))?;
    let offset = c.u64(&format!("offset of tensor `{name}`"))?;
    Ok(RawInfo {
        name,
        dims,
        type_id,
        offset,
    })
}

/// The alignment `general.alignment` declares (32 without it), checked: read from a file,
/// or given to the writer.
fn alignment_of(meta: &Metadata, path: &Path) -> Result<u64> {
    match meta.get(ALIGNMENT_KEY) {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(v) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 30 => Ok(a),
            _ => Err(Error::malformed(
                path,
                format!(
                    "`{ALIGNMENT_KEY}` is {}; GGUF needs a power of two such as 32",
                    v.display_short()
                ),
            )),
        },
    }
}

/// Shape outermost-first, checked to fit in memory sizes.
fn shape_of(info: &RawInfo, path: &Path) -> Result<Vec<usize>> {
    info.dims
        .iter()
        .rev()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| {
            Error::tensor(
                path,
                &info.name,
                format!("dimension in {:?} does not fit in memory", info.dims),
            )
        })
}

/// Turns a tensor info into an entry over the mapped data section.
fn entry_of(
    info: &RawInfo,
    dtype: DType,
    map: &Arc<memmap2::Mmap>,
    data_start: u64,
    file: &Arc<Path>,
) -> Result<TensorEntry> {
    let path: &Path = file;
    let terr = |msg: String| Error::tensor(path, &info.name, msg);
    let shape = shape_of(info, path)?;
    let numel =
        crate::tensor::numel(&shape).ok_or_else(|| terr(format!("shape {shape:?} overflows")))?;
    let row = info.dims.first().copied().unwrap_or(1);
    if row % dtype.block_elems() as u64 != 0 {
        return Err(terr(format!(
            "{dtype} rows of {row} elements are not whole blocks of {}",
            dtype.block_elems()
        )));
    }
    let nbytes = dtype.storage_bytes(numel).ok_or_else(|| {
        terr(format!(
            "{dtype} {shape:?} does not fill whole blocks or overflows"
        ))
    })?;
    let file_len = map.len() as u64;
    let start = data_start.checked_add(info.offset);
    let end = start.and_then(|s| s.checked_add(nbytes));
    let (start, end) = match (start, end) {
        (Some(s), Some(e)) if e <= file_len => (s, e),
        _ => {
            return Err(terr(format!(
                "data at offset {} ({nbytes} bytes for {dtype} {shape:?}) runs past the end of the {file_len}-byte file (truncated or corrupt)",
                info.offset
            )))
        }
    };
    Ok(TensorEntry {
        name: info.name.clone(),
        dtype,
        shape,
        storage: Storage::mapped(map.clone(), start as usize..end as usize),
        layout: Layout::Contiguous { offset: 0 },
        storage_key: None,
        file: file.clone(),
    })
}

fn unsupported_line(info: &RawInfo) -> String {
    let shape: Vec<u64> = info.dims.iter().rev().copied().collect();
    format!(
        "{}: ggml type {} ({}), shape {shape:?}",
        info.name,
        info.type_id,
        ggml_type_name(info.type_id)
    )
}

/// Opens a GGUF file (v1, v2 or v3, little-endian), memory-mapped.
pub fn open(path: &Path) -> Result<Checkpoint> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only; ferry does not modify files it reads. A file truncated by
    // another process while mapped is outside what any reader can defend against.
    let map = Arc::new(unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?);
    let mut c = Cursor {
        buf: &map[..],
        pos: 0,
        path,
        v1: false,
        values: 0,
    };
    let (version, n_tensors, n_kv) = read_header(&mut c)?;
    let mut metadata = read_metadata(&mut c, n_kv)?;
    let mut infos = Vec::with_capacity(n_tensors.min(MAX_RESERVE) as usize);
    for _ in 0..n_tensors {
        infos.push(read_tensor_info(&mut c)?);
    }
    let alignment = alignment_of(&metadata, path)?;
    c.align_to(alignment)?;
    let data_start = c.pos as u64;
    let file_arc: Arc<Path> = Arc::from(path);
    let mut tensors = Vec::with_capacity(infos.len());
    let mut unsupported = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for info in &infos {
        if !seen.insert(info.name.as_str()) {
            return Err(Error::tensor(path, &info.name, "appears twice in the file"));
        }
        match DType::from_gguf_type_id(info.type_id) {
            Some(dtype) => tensors.push(entry_of(info, dtype, &map, data_start, &file_arc)?),
            None => unsupported.push(MetaValue::String(unsupported_line(info))),
        }
    }
    metadata.insert("ferry.gguf_version".into(), MetaValue::U32(version));
    if !unsupported.is_empty() {
        metadata.insert(UNSUPPORTED_KEY.into(), MetaValue::Array(unsupported));
    }
    Ok(Checkpoint {
        format: Format::Gguf,
        path: path.to_path_buf(),
        tensors,
        metadata,
        companions: Vec::new(),
    })
}

/// The tensors of `ck` that ferry could not decode (see [`UNSUPPORTED_KEY`]), as listed.
pub fn unsupported_tensors(metadata: &Metadata) -> Vec<String> {
    match metadata.get(UNSUPPORTED_KEY) {
        Some(MetaValue::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.display_short())
            })
            .collect(),
        Some(other) => vec![other.display_short()],
        None => Vec::new(),
    }
}

/// Refuses a checkpoint holding tensors ferry cannot decode: converting it would silently
/// drop them. Call before planning a conversion.
pub fn check_supported(ck: &Checkpoint) -> Result<()> {
    let list = unsupported_tensors(&ck.metadata);
    match list.first() {
        None => Ok(()),
        Some(first) => {
            let name = first.split(':').next().unwrap_or(first);
            Err(Error::tensor(
                &ck.path,
                name,
                format!(
                    "its ggml type is not supported by ferry, so it cannot be converted ({} such tensor(s): {}); \
                     ferry supports F32, F16, BF16, F64, I8-I64 and Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K-Q8_K",
                    list.len(),
                    list.join("; ")
                ),
            ))
        }
    }
}

// ------------------------------------------------------------------------------------------
// Writing
// ------------------------------------------------------------------------------------------

/// The GGUF value type of a value that is already writable (see [`writable`]).
fn type_of(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => vt::U8,
        MetaValue::I8(_) => vt::I8,
        MetaValue::U16(_) => vt::U16,
        MetaValue::I16(_) => vt::I16,
        MetaValue::U32(_) => vt::U32,
        MetaValue::I32(_) => vt::I32,
        MetaValue::F32(_) => vt::F32,
        MetaValue::Bool(_) => vt::BOOL,
        MetaValue::U64(_) => vt::U64,
        MetaValue::I64(_) => vt::I64,
        MetaValue::F64(_) => vt::F64,
        MetaValue::Array(_) => vt::ARRAY,
        MetaValue::String(_) | MetaValue::Null => vt::STRING,
    }
}

/// A value GGUF can store: arrays must hold one type. Arrays mixing integer types become
/// `I64` arrays (`F64` with floats among them); other mixtures become the array's JSON text.
/// Nulls inside arrays become the string `null`; empty arrays are written as string arrays.
fn writable(v: &MetaValue) -> MetaValue {
    let MetaValue::Array(items) = v else {
        return match v {
            MetaValue::Null => MetaValue::String("null".into()),
            other => other.clone(),
        };
    };
    let items: Vec<MetaValue> = items.iter().map(writable).collect();
    if items.windows(2).all(|w| type_of(&w[0]) == type_of(&w[1])) {
        return MetaValue::Array(items);
    }
    if let Some(ints) = items.iter().map(as_i64).collect::<Option<Vec<i64>>>() {
        return MetaValue::Array(ints.into_iter().map(MetaValue::I64).collect());
    }
    if let Some(floats) = items.iter().map(as_f64).collect::<Option<Vec<f64>>>() {
        return MetaValue::Array(floats.into_iter().map(MetaValue::F64).collect());
    }
    MetaValue::String(v.to_json().to_string())
}

fn as_i64(v: &MetaValue) -> Option<i64> {
    match *v {
        MetaValue::I8(x) => Some(x.into()),
        MetaValue::I16(x) => Some(x.into()),
        MetaValue::I32(x) => Some(x.into()),
        MetaValue::I64(x) => Some(x),
        _ => v.as_u64().and_then(|u| i64::try_from(u).ok()),
    }
}

fn as_f64(v: &MetaValue) -> Option<f64> {
    match *v {
        MetaValue::F32(x) => Some(x.into()),
        MetaValue::F64(x) => Some(x),
        MetaValue::U64(x) => Some(x as f64),
        _ => as_i64(v).map(|x| x as f64),
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends the encoding of a writable value (without its type id).
fn put_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(u8::from(*x)),
        MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::String(s) => put_str(out, s),
        MetaValue::Null => put_str(out, "null"),
        MetaValue::Array(items) => {
            let t = items.first().map(type_of).unwrap_or(vt::STRING);
            out.extend_from_slice(&t.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for i in items {
                put_value(out, i);
            }
        }
    }
}

/// Checks that GGUF can hold `t` and returns its ggml type id.
fn tensor_type(path: &Path, t: &OutTensor<'_>) -> Result<u32> {
    let terr = |msg: String| Error::tensor(path, &t.name, msg);
    let id = t.dtype.gguf_type_id().ok_or_else(|| {
        let fix = match t.dtype {
            DType::Bool | DType::U8 => "write it as i8 or i16, or choose safetensors/npz output",
            DType::U16 | DType::U32 | DType::U64 => {
                "write it as a wider signed integer, or choose safetensors/npz output"
            }
            _ => "convert it with `--dtype f32` (or f16/bf16), or choose safetensors output",
        };
        terr(format!("GGUF cannot hold {} tensors; {fix}", t.dtype))
    })?;
    if t.shape.len() > MAX_DIMS_WRITE {
        return Err(terr(format!(
            "{} dimensions: GGUF (ggml) tensors have at most {MAX_DIMS_WRITE}",
            t.shape.len()
        )));
    }
    let row = t.shape.last().copied().unwrap_or(1);
    if row % t.dtype.block_elems() != 0 {
        return Err(terr(format!(
            "last dimension {row} is not a multiple of the {} block size {}",
            t.dtype,
            t.dtype.block_elems()
        )));
    }
    if t.dtype.storage_bytes(t.numel()).is_none() {
        return Err(terr(format!("shape {:?} overflows", t.shape)));
    }
    Ok(id)
}

/// Encodes the header, metadata and tensor infos; returns them and the alignment.
fn encode_header(
    path: &Path,
    tensors: &[OutTensor<'_>],
    metadata: &Metadata,
) -> Result<(Vec<u8>, u64)> {
    if let Some(first) = unsupported_tensors(metadata).first() {
        return Err(Error::malformed(
            path,
            format!("the source holds tensors ferry cannot decode (`{UNSUPPORTED_KEY}`: {first}...); refusing to write a GGUF without them"),
        ));
    }
    let alignment = alignment_of(metadata, path)?;
    let kvs: Vec<(&String, MetaValue)> = metadata
        .iter()
        .filter(|(k, v)| !matches!(v, MetaValue::Null) && !k.starts_with("ferry.gguf_version"))
        .map(|(k, v)| match k.as_str() {
            ALIGNMENT_KEY => (k, MetaValue::U32(alignment as u32)),
            _ => (k, writable(v)),
        })
        .collect();
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&WRITE_VERSION.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (k, v) in &kvs {
        put_str(&mut out, k);
        out.extend_from_slice(&type_of(v).to_le_bytes());
        put_value(&mut out, v);
    }
    let mut offset = 0u64;
    for t in tensors {
        let id = tensor_type(path, t)?;
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
        for &d in t.shape.iter().rev() {
            out.extend_from_slice(&(d as u64).to_le_bytes());
        }
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offset = align_up(offset + t.nbytes(), alignment);
    }
    let padded = align_up(out.len() as u64, alignment) as usize;
    out.resize(padded, 0);
    Ok((out, alignment))
}

/// Writes `tensors` as a GGUF v3 file at `path` (atomically), one tensor at a time, with
/// every metadata value typed as given (`general.alignment`, if present, sets the alignment
/// and is written as u32; top-level nulls are skipped; see `writable` for arrays of mixed
/// types). Tied tensors are written as separate copies: GGUF has no aliasing.
pub fn write(
    path: &Path,
    tensors: &[OutTensor<'_>],
    metadata: &Metadata,
    progress: Progress<'_>,
) -> Result<()> {
    let mut names = std::collections::HashSet::new();
    if let Some(dup) = tensors.iter().find(|t| !names.insert(t.name.as_str())) {
        return Err(Error::tensor(
            path,
            &dup.name,
            "appears twice in the output; GGUF names must be unique",
        ));
    }
    let (header, alignment) = encode_header(path, tensors, metadata)?;
    write_atomic(path, |w| {
        let io = |e| Error::io(path, e);
        w.write_all(&header).map_err(io)?;
        let zeros = vec![0u8; alignment as usize];
        for t in tensors {
            let n = t.write_to(path, w)?;
            let pad = align_up(n, alignment) - n;
            w.write_all(&zeros[..pad as usize]).map_err(io)?;
            progress(&t.name, n);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests;
