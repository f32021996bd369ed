//! NumPy `.npy` (format versions 1 to 3) and `.npz` (a zip of `.npy` entries, stored or
//! deflated as `np.savez_compressed` writes them): memory-mapped readers and writers.
//!
//! A `.npy` file holds one array, named after the file's stem. Fortran-ordered arrays are
//! read as strided (column-major) views. Big-endian arrays are byte-swapped when read (their
//! storage becomes lazy). Structured and object dtypes are refused with a message saying how
//! to re-save them.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::atomic::write_atomic;
use crate::checkpoint::{Checkpoint, Format};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::formats::zip::{ZipArchive, ZipWriter, METHOD_DEFLATED};
use crate::meta::Metadata;
use crate::tensor::{Layout, LazyBytes, Storage, TensorEntry};
use crate::write::{OutTensor, Progress};

const MAGIC: &[u8] = b"\x93NUMPY";
/// Largest header ferry reads (NumPy itself refuses headers over 10 000 bytes by default).
const MAX_HEADER: u64 = 1 << 20;
/// Most dimensions ferry accepts (NumPy's own limit is 64).
const MAX_DIMS: usize = 64;

/// The NumPy `descr` of a dtype, where NumPy has one.
pub fn descr(d: DType) -> Option<&'static str> {
    Some(match d {
        DType::Bool => "|b1",
        DType::U8 => "|u1",
        DType::I8 => "|i1",
        DType::I16 => "<i2",
        DType::U16 => "<u2",
        DType::I32 => "<i4",
        DType::U32 => "<u4",
        DType::I64 => "<i8",
        DType::U64 => "<u8",
        DType::F16 => "<f2",
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        _ => return None,
    })
}

/// The dtype for a NumPy `descr` and whether it is big-endian, or why ferry cannot read it.
fn parse_descr(s: &str) -> std::result::Result<(DType, bool), String> {
    // The byte-order mark is one ASCII character; split after the first character, never
    // inside a multi-byte one (`'é4'` panicked here: found by fuzzing).
    let first = s.chars().next().map_or(0, char::len_utf8);
    let (order, code) = s.split_at(first);
    let dtype = match code {
        "b1" => DType::Bool,
        "u1" => DType::U8,
        "i1" => DType::I8,
        "i2" => DType::I16,
        "u2" => DType::U16,
        "i4" => DType::I32,
        "u4" => DType::U32,
        "i8" => DType::I64,
        "u8" => DType::U64,
        "f2" => DType::F16,
        "f4" => DType::F32,
        "f8" => DType::F64,
        "V2" => {
            return Err(format!(
                "dtype `{s}` (raw 2-byte void, perhaps an ml_dtypes bfloat16) is not supported; save the array as float32"
            ))
        }
        c if c.starts_with('O') => {
            return Err(format!("dtype `{s}` holds pickled Python objects, which ferry never loads"))
        }
        _ => return Err(format!("dtype `{s}` is not supported (ferry reads bool, u8-u64, i8-i64, f16, f32, f64)")),
    };
    match order {
        "<" | "|" | "=" => Ok((dtype, false)),
        ">" => Ok((dtype, dtype.block_bytes() > 1)),
        _ => Err(format!("dtype `{s}` has no byte-order mark")),
    }
}

/// What a `.npy` header says.
#[derive(Debug, Clone, PartialEq)]
struct Header {
    dtype: DType,
    /// Stored big-endian (swapped to little-endian when read).
    big_endian: bool,
    fortran: bool,
    shape: Vec<usize>,
    /// Bytes from the start of the `.npy` data to the first array byte.
    data_start: u64,
}

/// Reads the preamble and header of a `.npy` held in `buf` (`buf` may hold only a prefix of
/// the file, as long as it covers the header). Errors are messages for the caller to wrap.
fn parse_header(buf: &[u8]) -> std::result::Result<Header, String> {
    if buf.len() < 10 || &buf[..6] != MAGIC {
        return Err("does not start with the .npy magic `\\x93NUMPY`".into());
    }
    let major = buf[6];
    let (len, start) = match major {
        1 => (u64::from(u16::from_le_bytes([buf[8], buf[9]])), 10u64),
        2 | 3 if buf.len() >= 12 => (
            u64::from(u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]])),
            12,
        ),
        2 | 3 => return Err("truncated .npy preamble".into()),
        v => {
            return Err(format!(
                ".npy format version {v} is not supported (1, 2 and 3 are)"
            ))
        }
    };
    if len > MAX_HEADER {
        return Err(format!(
            "header of {len} bytes is larger than ferry's limit of {MAX_HEADER}"
        ));
    }
    let end = start + len;
    if end > buf.len() as u64 {
        return Err(format!(
            "header needs {end} bytes but only {} are there (truncated)",
            buf.len()
        ));
    }
    let text = std::str::from_utf8(&buf[start as usize..end as usize])
        .map_err(|_| "header is not text".to_string())?;
    let dict = parse_dict(text)?;
    let get = |k: &str| dict.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    let (dtype, big_endian) = match get("descr") {
        Some(Lit::Str(s)) => parse_descr(s)?,
        Some(_) => return Err("structured dtypes (a `descr` list) are not supported".into()),
        None => return Err("header has no `descr`".into()),
    };
    let fortran = match get("fortran_order") {
        Some(Lit::Bool(b)) => *b,
        _ => return Err("header has no `fortran_order` True/False".into()),
    };
    let shape = match get("shape") {
        Some(Lit::Tuple(t)) if t.len() <= MAX_DIMS => t.clone(),
        Some(Lit::Tuple(t)) => {
            return Err(format!(
                "{} dimensions is more than ferry's limit of {MAX_DIMS}",
                t.len()
            ))
        }
        _ => return Err("header has no `shape` tuple".into()),
    };
    Ok(Header {
        dtype,
        big_endian,
        fortran,
        shape,
        data_start: end,
    })
}

/// A Python literal of the kinds a `.npy` header uses.
#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
    Other,
}

/// Parses the header's Python dict literal: `{'descr': '<f4', 'fortran_order': False,
/// 'shape': (3, 4), }`.
fn parse_dict(text: &str) -> std::result::Result<Vec<(String, Lit)>, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    p.expect(b'{')?;
    let mut out = Vec::new();
    loop {
        p.ws();
        if p.eat(b'}') {
            return Ok(out);
        }
        let key = p.string()?;
        p.ws();
        p.expect(b':')?;
        p.ws();
        let value = p.literal()?;
        out.push((key, value));
        p.ws();
        if !p.eat(b',') {
            p.ws();
            p.expect(b'}')?;
            return Ok(out);
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.s.get(self.i) == Some(&c);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!(
                "header is not a Python dict: expected `{}` at byte {}",
                c as char, self.i
            ))
        }
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let q = match self.s.get(self.i) {
            Some(&q @ (b'\'' | b'"')) => q,
            _ => {
                return Err(format!(
                    "header is not a Python dict: expected a string at byte {}",
                    self.i
                ))
            }
        };
        self.i += 1;
        let start = self.i;
        while let Some(&c) = self.s.get(self.i) {
            if c == q {
                let s = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                self.i += 1;
                return Ok(s);
            }
            self.i += 1;
        }
        Err("unterminated string in the header".into())
    }

    fn literal(&mut self) -> std::result::Result<Lit, String> {
        match self.s.get(self.i) {
            Some(b'\'' | b'"') => self.string().map(Lit::Str),
            Some(b'(') => self.tuple(),
            Some(b'[') => {
                // A structured dtype's field list: skip to the matching bracket.
                let mut depth = 0usize;
                while let Some(&c) = self.s.get(self.i) {
                    self.i += 1;
                    match c {
                        b'[' | b'(' => depth += 1,
                        b']' | b')' => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                return Ok(Lit::Other);
                            }
                        }
                        _ => {}
                    }
                }
                Err("unterminated list in the header".into())
            }
            _ => {
                let start = self.i;
                while self
                    .s
                    .get(self.i)
                    .is_some_and(|c| c.is_ascii_alphanumeric())
                {
                    self.i += 1;
                }
                match &self.s[start..self.i] {
                    b"True" => Ok(Lit::Bool(true)),
                    b"False" => Ok(Lit::Bool(false)),
                    _ => Ok(Lit::Other),
                }
            }
        }
    }

    fn tuple(&mut self) -> std::result::Result<Lit, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            self.ws();
            if self.eat(b')') {
                return Ok(Lit::Tuple(dims));
            }
            let start = self.i;
            while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
            let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
            let d: usize = digits
                .parse()
                .map_err(|_| format!("shape holds something that is not a size at byte {start}"))?;
            dims.push(d);
            self.eat(b'L'); // Python 2 long suffix.
            self.ws();
            if !self.eat(b',') {
                self.ws();
                self.expect(b')')?;
                return Ok(Lit::Tuple(dims));
            }
        }
    }
}

/// Column-major strides (in elements) of `shape`.
fn fortran_strides(shape: &[usize]) -> Vec<u64> {
    let mut acc = 1u64;
    shape
        .iter()
        .map(|&d| {
            let s = acc;
            acc = acc.saturating_mul(d as u64);
            s
        })
        .collect()
}

/// The layout of an array whose data start at `offset` bytes into its storage.
fn layout_of(h: &Header, offset: u64) -> std::result::Result<Layout, String> {
    if !h.fortran || h.shape.iter().filter(|&&d| d > 1).count() <= 1 {
        return Ok(Layout::Contiguous { offset });
    }
    let elem = h.dtype.block_bytes() as u64;
    if !offset.is_multiple_of(elem) {
        return Err(format!(
            "data start {offset} is not a multiple of the {elem}-byte element size"
        ));
    }
    Ok(Layout::Strided {
        offset: offset / elem,
        strides: fortran_strides(&h.shape),
    })
}

/// Big-endian array data, byte-swapped to little-endian when loaded.
struct Swapped {
    inner: Storage,
    /// Where the array data start inside `inner`.
    offset: u64,
    elem: usize,
}

impl LazyBytes for Swapped {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn load(&self) -> Result<Vec<u8>> {
        let mut v = self.inner.bytes()?.into_owned();
        let start = (self.offset as usize).min(v.len());
        v[start..]
            .chunks_exact_mut(self.elem)
            .for_each(<[u8]>::reverse);
        Ok(v)
    }
}

/// Builds and validates the entry for an array stored in `storage`, data at `offset`.
fn entry(
    name: String,
    h: &Header,
    storage: Storage,
    offset: u64,
    file: &Arc<Path>,
) -> Result<TensorEntry> {
    let storage = if h.big_endian {
        Storage::Lazy(Arc::new(Swapped {
            inner: storage,
            offset,
            elem: h.dtype.block_bytes(),
        }))
    } else {
        storage
    };
    let layout = layout_of(h, offset).map_err(|m| Error::tensor(file.as_ref(), &name, m))?;
    let t = TensorEntry {
        name,
        dtype: h.dtype,
        shape: h.shape.clone(),
        storage,
        layout,
        storage_key: None,
        file: file.clone(),
    };
    t.validate()?;
    Ok(t)
}

/// Opens a `.npy` file (memory-mapped); its one tensor is named after the file's stem.
pub fn open_npy(path: &Path) -> Result<Checkpoint> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only; ferry does not modify files it reads.
    let map = Arc::new(unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?);
    let h = parse_header(&map).map_err(|m| Error::malformed(path, m))?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "array".into());
    let file_arc: Arc<Path> = Arc::from(path);
    let storage = Storage::mapped(map.clone(), h.data_start as usize..map.len());
    let t = entry(name, &h, storage, 0, &file_arc)?;
    Ok(Checkpoint {
        format: Format::Npy,
        path: path.to_path_buf(),
        tensors: vec![t],
        metadata: Metadata::new(),
        companions: Vec::new(),
    })
}

/// Inflates at most `want` bytes from the start of a raw deflate stream.
fn inflate_prefix(data: &[u8], want: usize) -> std::result::Result<Vec<u8>, String> {
    use miniz_oxide::inflate::stream::{inflate, InflateState};
    use miniz_oxide::{DataFormat, MZFlush, MZStatus};
    let mut state = InflateState::new_boxed(DataFormat::Raw);
    let mut out = vec![0u8; want];
    let (mut read, mut written) = (0, 0);
    while written < want {
        let r = inflate(
            &mut state,
            &data[read..],
            &mut out[written..],
            MZFlush::None,
        );
        read += r.bytes_consumed;
        written += r.bytes_written;
        match r.status {
            Ok(MZStatus::StreamEnd) => break,
            Ok(_) if r.bytes_consumed == 0 && r.bytes_written == 0 => break,
            Ok(_) => {}
            Err(e) => return Err(format!("deflate data is corrupt ({e:?})")),
        }
    }
    out.truncate(written);
    Ok(out)
}

/// The header of one `.npz` entry, and its storage narrowed to the array where possible.
fn npz_member(zip: &ZipArchive, name: &str) -> std::result::Result<(Header, Storage, u64), String> {
    let e = zip.entry(name).ok_or("entry vanished")?;
    let storage = zip.entry_storage(name).map_err(|err| err.to_string())?;
    let head_len = e.uncompressed_size.min(MAX_HEADER + 12) as usize;
    let head = match &storage {
        Storage::Mapped { map, range } => {
            map[range.start..range.start + head_len.min(range.len())].to_vec()
        }
        _ if e.method == METHOD_DEFLATED => {
            let start = e.data_offset as usize;
            let end = start
                .saturating_add(e.compressed_size as usize)
                .min(zip.map().len());
            inflate_prefix(&zip.map()[start.min(end)..end], head_len)?
        }
        _ => storage.bytes().map_err(|err| err.to_string())?.into_owned(),
    };
    let h = parse_header(&head)?;
    Ok(match storage {
        Storage::Mapped { map, range } => {
            let start = (range.start + h.data_start as usize).min(range.end);
            (h, Storage::mapped(map, start..range.end), 0)
        }
        other => {
            let off = h.data_start;
            (h, other, off)
        }
    })
}

/// Opens a `.npz` archive: one tensor per `NAME.npy` entry, named `NAME`. Stored entries are
/// served from the map; deflated ones (`np.savez_compressed`) are inflated when read.
pub fn open_npz(path: &Path) -> Result<Checkpoint> {
    let zip = ZipArchive::open(path)?;
    let file_arc: Arc<Path> = Arc::from(path);
    let mut tensors = Vec::new();
    for e in zip.entries() {
        let Some(name) = e.name.strip_suffix(".npy") else {
            continue;
        };
        if name.is_empty() {
            return Err(Error::malformed(
                path,
                "an entry named `.npy` gives a tensor with no name",
            ));
        }
        if tensors.iter().any(|t: &TensorEntry| t.name == name) {
            return Err(Error::malformed(
                path,
                format!("two entries are named `{name}.npy`"),
            ));
        }
        let (h, storage, off) =
            npz_member(&zip, &e.name).map_err(|m| Error::tensor(path, name, m))?;
        tensors.push(entry(name.to_string(), &h, storage, off, &file_arc)?);
    }
    if tensors.is_empty() {
        return Err(Error::malformed(
            path,
            "zip archive holds no `.npy` entries (not an .npz)",
        ));
    }
    Ok(Checkpoint {
        format: Format::Npz,
        path: path.to_path_buf(),
        tensors,
        metadata: Metadata::new(),
        companions: Vec::new(),
    })
}

/// The `.npy` preamble and header for `t`, padded so the data start on a 64-byte boundary.
fn npy_header(path: &Path, t: &OutTensor<'_>) -> Result<Vec<u8>> {
    let d = descr(t.dtype).ok_or_else(|| {
        let fix = if t.dtype.is_quantized() {
            "dequantize it with `--dtype f32`, or write GGUF (`--to gguf`)"
        } else {
            "convert it with `--dtype f32` (or f16)"
        };
        Error::tensor(
            path,
            &t.name,
            format!("NumPy has no {} dtype; {fix}", t.dtype),
        )
    })?;
    let shape = match t.shape.as_slice() {
        [one] => format!("({one},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict = format!("{{'descr': '{d}', 'fortran_order': False, 'shape': {shape}, }}");
    let v1 = dict.len() + 11 < 65536;
    let pre = if v1 { 10 } else { 12 };
    let total = (pre + dict.len() + 1).div_ceil(64) * 64;
    while pre + dict.len() + 1 < total {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = MAGIC.to_vec();
    if v1 {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(dict.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    Ok(out)
}

/// Writes one tensor as a `.npy` file at `path` (atomically).
pub fn write_npy(path: &Path, tensor: &OutTensor<'_>) -> Result<()> {
    let header = npy_header(path, tensor)?;
    write_atomic(path, |w| {
        let bytes = tensor.bytes_checked(path)?;
        w.write_all(&header).map_err(|e| Error::io(path, e))?;
        w.write_all(&bytes).map_err(|e| Error::io(path, e))
    })
}

/// Writes `tensors` as an uncompressed `.npz` at `path` (atomically), one `NAME.npy` entry
/// per tensor, one tensor in memory at a time. NumPy archives carry no metadata, so
/// `metadata` is not written (it is only checked for tensors the source could not decode);
/// tied tensors are written as separate copies.
pub fn write_npz(
    path: &Path,
    tensors: &[OutTensor<'_>],
    metadata: &Metadata,
    progress: Progress<'_>,
) -> Result<()> {
    if let Some(first) = crate::formats::gguf::unsupported_tensors(metadata).first() {
        return Err(Error::malformed(
            path,
            format!("the source holds tensors ferry cannot decode ({first}...); refusing to write an .npz without them"),
        ));
    }
    let headers = tensors
        .iter()
        .map(|t| npy_header(path, t))
        .collect::<Result<Vec<_>>>()?;
    write_atomic(path, |w| {
        let mut zip = ZipWriter::new(w, path);
        for (t, header) in tensors.iter().zip(&headers) {
            let bytes = t.bytes_checked(path)?;
            let mut member = Vec::with_capacity(header.len() + bytes.len());
            member.extend_from_slice(header);
            member.extend_from_slice(&bytes);
            drop(bytes);
            zip.add(&format!("{}.npy", t.name), &member)?;
            progress(&t.name, t.nbytes());
        }
        zip.finish().map(|_| ())
    })
}

#[cfg(test)]
mod tests;
