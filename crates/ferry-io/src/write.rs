//! What writers consume: tensors whose header is known up front and whose bytes are produced
//! one at a time, so peak memory is bounded by the largest tensor, not by the model.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::TensorEntry;

type Producer<'a> = Box<dyn Fn() -> Result<Cow<'a, [u8]>> + Send + Sync + 'a>;

/// One tensor to be written.
pub struct OutTensor<'a> {
    /// Name in the output.
    pub name: String,
    /// Element type in the output.
    pub dtype: DType,
    /// Shape in the output.
    pub shape: Vec<usize>,
    /// When set, the output bytes are exactly this `(file, offset, length)` range of a source
    /// file, and writers that write bytes unchanged may copy it in the kernel
    /// (`copy_file_range`) instead of through memory.
    pub file_extent: Option<(Arc<Path>, u64, u64)>,
    /// When set, this tensor holds the same data as the earlier output tensor of that name;
    /// writers that can share storage (pth) or record aliases (safetensors) write it once.
    pub tied_to: Option<String>,
    /// When set, the output bytes are this source view (strided, gathered) cast from its
    /// type to [`OutTensor::dtype`]; writers that use [`OutTensor::write_to`] stream it in
    /// bounded memory instead of materializing it.
    pub view: Option<&'a TensorEntry>,
    produce: Producer<'a>,
}

impl<'a> OutTensor<'a> {
    /// A tensor whose bytes come from `produce`.
    pub fn new(
        name: impl Into<String>,
        dtype: DType,
        shape: Vec<usize>,
        produce: impl Fn() -> Result<Cow<'a, [u8]>> + Send + Sync + 'a,
    ) -> Self {
        OutTensor {
            name: name.into(),
            dtype,
            shape,
            tied_to: None,
            file_extent: None,
            view: None,
            produce: Box::new(produce),
        }
    }

    /// The entry as it is, bytes read from its source on demand.
    pub fn from_entry(entry: &'a TensorEntry) -> Self {
        let mut o = OutTensor::new(
            entry.name.clone(),
            entry.dtype,
            entry.shape.clone(),
            move || entry.data(),
        );
        o.file_extent = entry
            .file_extent()
            .map(|(off, len)| (entry.file.clone(), off, len));
        o
    }

    /// Writes the tensor's bytes to `w` (the output `path`, for errors): a kernel-side copy
    /// from the source file when [`OutTensor::file_extent`] is set, else the produced bytes.
    /// Returns the number of bytes written, checked against the header.
    pub fn write_to(&self, path: &Path, w: &mut BufWriter<File>) -> Result<u64> {
        if let Some(view) = self.view {
            return self.write_view(view, path, w);
        }
        let Some((src, offset, len)) = &self.file_extent else {
            let bytes = self.bytes_checked(path)?;
            w.write_all(&bytes).map_err(|e| Error::io(path, e))?;
            start_writeback(w.get_ref());
            return Ok(bytes.len() as u64);
        };
        if *len != self.nbytes() {
            return Err(Error::tensor(
                path,
                &self.name,
                format!("source range holds {len} bytes, expected {}", self.nbytes()),
            ));
        }
        let mut f = File::open(src).map_err(|e| Error::io(src.as_ref(), e))?;
        f.seek(SeekFrom::Start(*offset))
            .map_err(|e| Error::io(src.as_ref(), e))?;
        // std copies File -> BufWriter<File> with copy_file_range (after flushing the buffer).
        let n = std::io::copy(&mut f.take(*len), w).map_err(|e| Error::io(path, e))?;
        if n != *len {
            return Err(Error::tensor(
                src.as_ref(),
                &self.name,
                format!("file ended after {n} of {len} bytes (truncated while reading?)"),
            ));
        }
        start_writeback(w.get_ref());
        Ok(n)
    }

    /// Streams a gathered view, cast piece by piece, to `w`.
    fn write_view(&self, view: &TensorEntry, path: &Path, w: &mut BufWriter<File>) -> Result<u64> {
        let mut n = 0u64;
        view.write_gathered(&mut |chunk| {
            let bytes = if view.dtype == self.dtype {
                Cow::Borrowed(chunk)
            } else {
                Cow::Owned(
                    crate::cast::cast_bytes(chunk, view.dtype, self.dtype)
                        .map_err(|e| Error::tensor(path, &self.name, e.to_string()))?,
                )
            };
            n += bytes.len() as u64;
            w.write_all(&bytes).map_err(|e| Error::io(path, e))
        })?;
        start_writeback(w.get_ref());
        if n != self.nbytes() {
            return Err(Error::tensor(
                path,
                &self.name,
                format!("produced {n} bytes, expected {}", self.nbytes()),
            ));
        }
        Ok(n)
    }

    /// Produces the tensor's bytes (row-major, little-endian).
    pub fn bytes(&self) -> Result<Cow<'a, [u8]>> {
        (self.produce)()
    }

    /// Produces the bytes and checks their length against the header, so a writer never
    /// records one size and writes another; errors name `path` (the output) and the tensor.
    pub fn bytes_checked(&self, path: &Path) -> Result<Cow<'a, [u8]>> {
        let bytes = self.bytes()?;
        if bytes.len() as u64 != self.nbytes() {
            return Err(Error::tensor(
                path,
                &self.name,
                format!("produced {} bytes, expected {}", bytes.len(), self.nbytes()),
            ));
        }
        Ok(bytes)
    }

    /// Number of elements.
    pub fn numel(&self) -> u64 {
        crate::tensor::numel(&self.shape).unwrap_or(u64::MAX)
    }

    /// Size of the bytes `bytes()` returns.
    pub fn nbytes(&self) -> u64 {
        self.dtype.storage_bytes(self.numel()).unwrap_or(u64::MAX)
    }
}

/// Called by writers after each tensor: its name and the bytes written for it.
pub type Progress<'p> = &'p mut dyn FnMut(&str, u64);

/// Asks the kernel to start writing the file's dirty pages to disk now, without waiting, so
/// the final `fsync` of an atomic write overlaps with the copies still to come.
fn start_writeback(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain syscall on a valid open descriptor; it reads no memory of ours.
        // Its result only affects timing, so an error is ignored.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}
