//! A stored tensor: its header (name, dtype, shape) and where its bytes live. Bytes are read
//! only when asked for, straight from a memory map where the format allows.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;

use crate::dtype::DType;
use crate::error::{Error, Result};

/// Produces the bytes of a storage on demand (for example a deflated zip entry).
pub trait LazyBytes: Send + Sync {
    /// Exact number of bytes `load` returns.
    fn len(&self) -> u64;
    /// Whether the storage is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads (and decompresses) the bytes.
    fn load(&self) -> Result<Vec<u8>>;
}

/// The raw bytes behind one or more tensors.
#[derive(Clone)]
pub enum Storage {
    /// A byte range of a memory-mapped file.
    Mapped {
        /// The whole mapped file.
        map: Arc<Mmap>,
        /// The range of the storage inside it.
        range: Range<usize>,
    },
    /// Bytes held in memory.
    Shared {
        /// The buffer.
        data: Arc<[u8]>,
        /// The range of the storage inside it.
        range: Range<usize>,
    },
    /// Bytes produced on demand.
    Lazy(Arc<dyn LazyBytes>),
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Storage::Mapped { range, .. } => write!(f, "Mapped({range:?})"),
            Storage::Shared { range, .. } => write!(f, "Shared({range:?})"),
            Storage::Lazy(l) => write!(f, "Lazy({} bytes)", l.len()),
        }
    }
}

impl Storage {
    /// Storage over a memory-mapped byte range. The caller has checked the range.
    pub fn mapped(map: Arc<Mmap>, range: Range<usize>) -> Self {
        Storage::Mapped { map, range }
    }

    /// Storage owning `data`.
    pub fn owned(data: Vec<u8>) -> Self {
        let len = data.len();
        Storage::Shared {
            data: data.into(),
            range: 0..len,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Storage::Mapped { range, .. } | Storage::Shared { range, .. } => {
                (range.end - range.start) as u64
            }
            Storage::Lazy(l) => l.len(),
        }
    }

    /// Whether the storage holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tells the OS this process no longer needs the mapped pages of this storage: they stay in
    /// the page cache and a later read maps them again. Keeps resident memory bounded by the
    /// tensor in flight while a model larger than RAM streams through. No-op for storages that
    /// are not memory-mapped.
    pub fn release(&self) {
        #[cfg(unix)]
        if let Storage::Mapped { map, range } = self {
            // SAFETY: `map` is a read-only file mapping; MADV_DONTNEED only drops this
            // process's page-table entries, and any later access re-reads the same bytes from
            // the file, so no borrowed slice can observe a change.
            let _ = unsafe {
                map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    range.start,
                    range.end - range.start,
                )
            };
        }
    }

    /// The bytes, borrowed where they are already in memory or mapped.
    pub fn bytes(&self) -> Result<Cow<'_, [u8]>> {
        Ok(match self {
            Storage::Mapped { map, range } => Cow::Borrowed(&map[range.clone()]),
            Storage::Shared { data, range } => Cow::Borrowed(&data[range.clone()]),
            Storage::Lazy(l) => Cow::Owned(l.load()?),
        })
    }
}

/// How a tensor's elements sit in its storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Row-major, starting `offset` bytes into the storage.
    Contiguous {
        /// Start, in bytes.
        offset: u64,
    },
    /// A strided view (PyTorch `as_strided`): offset and strides count elements.
    Strided {
        /// Start, in elements.
        offset: u64,
        /// Per-dimension strides, in elements.
        strides: Vec<u64>,
    },
}

/// One named tensor of a checkpoint.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    /// Full dotted name (`encoder.layer.0.attention.self.query.weight`).
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Where the bytes are.
    pub storage: Storage,
    /// How the elements sit in the storage.
    pub layout: Layout,
    /// Identifies the storage inside its file; tensors with the same key share memory (tied).
    pub storage_key: Option<String>,
    /// The file the tensor comes from (a shard, for sharded checkpoints).
    pub file: Arc<Path>,
}

/// Whether `strides` describe the row-major layout of `shape`.
pub fn is_row_major(shape: &[usize], strides: &[u64]) -> bool {
    let mut expected = 1u64;
    for (&dim, &stride) in shape.iter().zip(strides).rev() {
        if dim != 1 && stride != expected {
            return false;
        }
        expected = expected.saturating_mul(dim as u64);
    }
    true
}

impl TensorEntry {
    /// Number of elements (saturating; shapes were checked against the file when read).
    pub fn numel(&self) -> u64 {
        numel(&self.shape).unwrap_or(u64::MAX)
    }

    /// Bytes of the tensor's own data, laid out contiguously.
    pub fn nbytes(&self) -> u64 {
        self.dtype.storage_bytes(self.numel()).unwrap_or(u64::MAX)
    }

    fn err(&self, msg: impl Into<String>) -> Error {
        Error::tensor(self.file.as_ref(), &self.name, msg)
    }

    /// Checks that the tensor's bytes lie inside its storage, without reading them.
    pub fn validate(&self) -> Result<()> {
        let n = numel(&self.shape).ok_or_else(|| self.err("shape overflows u64"))?;
        let nbytes = self.dtype.storage_bytes(n).ok_or_else(|| {
            self.err(format!(
                "{} elements do not fill whole {} blocks of {}",
                n,
                self.dtype,
                self.dtype.block_elems()
            ))
        })?;
        let storage = self.storage.len();
        match &self.layout {
            Layout::Contiguous { offset } => {
                let end = offset
                    .checked_add(nbytes)
                    .ok_or_else(|| self.err("offset overflows"))?;
                if end > storage {
                    return Err(self.err(format!(
                        "needs bytes {offset}..{end} but its storage holds {storage} bytes (file truncated or corrupt)"
                    )));
                }
            }
            Layout::Strided { offset, strides } => {
                if self.dtype.is_quantized() {
                    return Err(self.err("a quantized tensor cannot be strided"));
                }
                if strides.len() != self.shape.len() {
                    return Err(self.err(format!(
                        "{} strides for a {}-dimensional shape",
                        strides.len(),
                        self.shape.len()
                    )));
                }
                if n == 0 {
                    return Ok(());
                }
                let mut last = *offset;
                for (&d, &s) in self.shape.iter().zip(strides) {
                    let span = (d as u64 - 1)
                        .checked_mul(s)
                        .ok_or_else(|| self.err("strides overflow"))?;
                    last = last
                        .checked_add(span)
                        .ok_or_else(|| self.err("strides overflow"))?;
                }
                let elem = self.dtype.block_bytes() as u64;
                let storage_elems = storage / elem;
                if last >= storage_elems {
                    return Err(self.err(format!(
                        "strided view reaches element {last} but its storage holds {storage_elems} (file truncated or corrupt)"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether the tensor is a view that must be gathered element by element (strided, not
    /// row-major): its bytes are not a plain range of its storage.
    pub fn is_gathered_view(&self) -> bool {
        matches!(&self.layout, Layout::Strided { strides, .. } if !is_row_major(&self.shape, strides))
    }

    /// For a view that repeats elements (a stride-0 `expand`, overlapping strides): how many
    /// storage elements it spans at most; `None` for every other tensor. Written out, such a
    /// view takes [`TensorEntry::nbytes`], which can be far more than its file holds.
    pub fn repeated_span(&self) -> Option<u64> {
        let Layout::Strided { strides, .. } = &self.layout else {
            return None;
        };
        let n = self.numel();
        if n == 0 {
            return None;
        }
        let span = self
            .shape
            .iter()
            .zip(strides)
            .try_fold(1u64, |acc, (&d, &s)| {
                (d as u64)
                    .saturating_sub(1)
                    .checked_mul(s)?
                    .checked_add(acc)
            })
            .unwrap_or(u64::MAX);
        (span < n).then_some(span)
    }

    /// The error for a view whose written-out size is over the tensor budget.
    fn view_over_budget(&self, budget: u64) -> Error {
        let what = match self.repeated_span() {
            Some(span) => format!(
                "tensor `{}`: a view that repeats {span} stored element(s) as {:?} ({} once written out)",
                self.name,
                self.shape,
                crate::units::human(self.nbytes())
            ),
            None => format!(
                "tensor `{}`: gathering the strided view {:?} in memory",
                self.name, self.shape
            ),
        };
        crate::budget::TENSOR.error(&self.file, what, self.nbytes(), budget)
    }

    /// The tensor's bytes, row-major and little-endian. Borrowed from the map when the tensor
    /// is contiguous in a mapped storage; gathered into a new buffer for strided views, which
    /// is refused past the tensor budget ([`crate::budget::TENSOR`]; see
    /// [`TensorEntry::write_gathered`] to stream a view in bounded memory instead).
    pub fn data(&self) -> Result<Cow<'_, [u8]>> {
        self.validate()?;
        if self.is_gathered_view() {
            let budget = crate::budget::TENSOR.bytes();
            if self.nbytes() > budget {
                return Err(self.view_over_budget(budget));
            }
        }
        let nbytes = self.nbytes() as usize;
        match &self.layout {
            Layout::Contiguous { offset } => {
                let start = *offset as usize;
                Ok(match self.storage.bytes()? {
                    Cow::Borrowed(b) => Cow::Borrowed(&b[start..start + nbytes]),
                    Cow::Owned(mut v) => {
                        v.truncate(start + nbytes);
                        v.drain(..start);
                        Cow::Owned(v)
                    }
                })
            }
            Layout::Strided { offset, strides } => {
                let bytes = self.storage.bytes()?;
                let elem = self.dtype.block_bytes();
                if is_row_major(&self.shape, strides) {
                    let start = *offset as usize * elem;
                    return Ok(Cow::Owned(bytes[start..start + nbytes].to_vec()));
                }
                let mut out = Vec::with_capacity(nbytes);
                gather_strided(&bytes, elem, &self.shape, strides, *offset, nbytes, |c| {
                    out.extend_from_slice(c);
                    Ok(())
                })?;
                Ok(Cow::Owned(out))
            }
        }
    }

    /// Streams the tensor's bytes (row-major) to `sink` in pieces of at most 8 MiB, so a view
    /// of any logical size is written in bounded memory (plus its storage). Returns the bytes
    /// produced.
    pub fn write_gathered(&self, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<u64> {
        const CHUNK: usize = 8 << 20;
        self.validate()?;
        let Layout::Strided { offset, strides } = &self.layout else {
            let data = self.data()?;
            for c in data.chunks(CHUNK) {
                sink(c)?;
            }
            return Ok(data.len() as u64);
        };
        let bytes = self.storage.bytes()?;
        let elem = self.dtype.block_bytes();
        gather_strided(&bytes, elem, &self.shape, strides, *offset, CHUNK, sink)?;
        Ok(self.nbytes())
    }

    /// Where the tensor's bytes lie, unchanged and contiguous, in [`TensorEntry::file`]:
    /// `(offset, length)`. `None` when they are not a plain byte range of the file (strided,
    /// compressed, or in memory). Readers map whole files, so a mapped range is a file range.
    pub fn file_extent(&self) -> Option<(u64, u64)> {
        match (&self.storage, &self.layout) {
            (Storage::Mapped { range, .. }, Layout::Contiguous { offset }) => {
                self.validate().ok()?;
                Some((range.start as u64 + offset, self.nbytes()))
            }
            _ => None,
        }
    }

    /// Loads the tensor into candle on `device`. `bool` becomes `u8`, `i8` and `u16` widen to
    /// `i16`/`i32`; quantized tensors are dequantized to f32 (see [`crate::quant`] for
    /// keeping them quantized).
    pub fn to_candle(&self, device: &candle_core::Device) -> Result<candle_core::Tensor> {
        let data = self.data()?;
        crate::cast::bytes_to_candle(&data, self.dtype, &self.shape, device)
            .map_err(|e| self.err(e.to_string()))
    }
}

/// Product of the dimensions, `None` on overflow. A zero dimension does not hide huge ones:
/// the product of the non-zero dimensions must fit too, or `[0, 2^32, 2^32]` (zero elements)
/// would pass here and overflow in candle's stride and element counts, which multiply in
/// either order (found by fuzzing npy and GGUF headers).
pub fn numel(shape: &[usize]) -> Option<u64> {
    shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))?;
    Some(if shape.contains(&0) {
        0
    } else {
        shape.iter().map(|&d| d as u64).product()
    })
}

/// Gathers the elements of a strided view of `src` in row-major order, handing them to `sink`
/// in pieces of at most `chunk` bytes (at least one element). The view was validated: every
/// element it reaches lies inside `src`.
fn gather_strided(
    src: &[u8],
    elem: usize,
    shape: &[usize],
    strides: &[u64],
    offset: u64,
    chunk: usize,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let n: usize = shape.iter().product();
    if n == 0 {
        return Ok(());
    }
    let chunk = chunk.max(elem);
    let mut out = Vec::with_capacity(chunk.min(n.saturating_mul(elem)));
    let mut idx = vec![0usize; shape.len()];
    loop {
        let pos = offset
            + idx
                .iter()
                .zip(strides)
                .map(|(&i, &s)| i as u64 * s)
                .sum::<u64>();
        let p = pos as usize * elem;
        out.extend_from_slice(&src[p..p + elem]);
        if out.len() + elem > chunk {
            sink(&out)?;
            out.clear();
        }
        // Advance the multi-index, last dimension fastest.
        let mut d = shape.len();
        loop {
            if d == 0 {
                return if out.is_empty() { Ok(()) } else { sink(&out) };
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(storage: Vec<u8>, dtype: DType, shape: Vec<usize>, layout: Layout) -> TensorEntry {
        TensorEntry {
            name: "t".into(),
            dtype,
            shape,
            storage: Storage::owned(storage),
            layout,
            storage_key: None,
            file: Arc::from(Path::new("mem")),
        }
    }

    #[test]
    fn transposed_view_is_gathered() {
        // storage [[0,1,2],[3,4,5]] as u8; view is its transpose (3x2, strides [1,3]).
        let t = entry(
            vec![0, 1, 2, 3, 4, 5],
            DType::U8,
            vec![3, 2],
            Layout::Strided {
                offset: 0,
                strides: vec![1, 3],
            },
        );
        assert_eq!(&*t.data().unwrap(), &[0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn out_of_range_view_is_an_error_not_a_panic() {
        let t = entry(
            vec![0; 4],
            DType::F32,
            vec![2],
            Layout::Contiguous { offset: 0 },
        );
        let e = t.data().unwrap_err().to_string();
        assert!(e.contains("storage holds 4 bytes"), "{e}");
        let t = entry(
            vec![0; 4],
            DType::U8,
            vec![2, 2],
            Layout::Strided {
                offset: 1,
                strides: vec![2, 1],
            },
        );
        assert!(t.data().is_err());
    }

    #[test]
    fn row_major_detection() {
        assert!(is_row_major(&[2, 3], &[3, 1]));
        assert!(is_row_major(&[1, 3], &[99, 1]));
        assert!(!is_row_major(&[3, 2], &[1, 3]));
    }
}
