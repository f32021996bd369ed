//! A small, hardened zip reader and a streaming zip writer: as much of the format as PyTorch
//! archives (`torch.save`, `torch.jit.save`) and NumPy `.npz` files use.
//!
//! The reader maps the file once and trusts nothing in it: every offset and size is checked
//! against the file length before use, so a truncated or crafted archive gives a
//! [`crate::FileProblem::Malformed`] error naming the file, never a panic or an oversized allocation. Stored
//! entries are served straight from the map; deflated ones are inflated on demand.
//!
//! The writer produces stored (uncompressed) entries whose data start on 64-byte boundaries,
//! as `torch.save` does, switching to zip64 records when a size or offset needs it.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::tensor::{LazyBytes, Storage};

/// Compression method of a stored (uncompressed) entry.
pub const METHOD_STORED: u16 = 0;
/// Compression method of a deflated entry.
pub const METHOD_DEFLATED: u16 = 8;

/// Alignment of entry data in archives ferry writes (the value `torch.save` uses).
pub const DATA_ALIGNMENT: u64 = 64;

/// The largest expansion a deflate stream can achieve: one 258-byte match costs at least two
/// bits (a one-bit length code plus a one-bit distance code), so `8 * 258 / 2 = 1032` output
/// bytes per input byte. A declared size beyond this (plus a little slack for tiny streams)
/// cannot be genuine, whatever the data; refusing it costs no valid archive.
const MAX_DEFLATE_RATIO: u64 = 1032;
/// Slack added to the deflate bound for very short streams.
const DEFLATE_SLACK: u64 = 1024;

const SIG_LOCAL: u32 = 0x0403_4b50;
const SIG_CENTRAL: u32 = 0x0201_4b50;
const SIG_EOCD: u32 = 0x0605_4b50;
const SIG_EOCD64: u32 = 0x0606_4b50;
const SIG_EOCD64_LOCATOR: u32 = 0x0706_4b50;
const LOCAL_HEADER_LEN: u64 = 30;
const CENTRAL_HEADER_LEN: u64 = 46;
const EOCD_LEN: u64 = 22;
const EOCD64_LEN: u64 = 56;
const LOCATOR_LEN: u64 = 20;
const MAX_COMMENT: u64 = 0xFFFF;
const ZIP64_EXTRA_ID: u16 = 0x0001;
/// Extra-field id `torch.save` uses for its alignment padding ("FB").
const PADDING_EXTRA_ID: u16 = 0x4246;
const FLAG_ENCRYPTED: u16 = 0x0001;
const FLAG_UTF8: u16 = 0x0800;
/// 1980-01-01, the earliest DOS date: archives ferry writes are byte-for-byte reproducible.
const DOS_DATE: u16 = (1 << 5) | 1;

/// One file inside an archive, as its central directory describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipEntry {
    /// Path inside the archive (`archive/data/0`).
    pub name: String,
    /// Compression method ([`METHOD_STORED`], [`METHOD_DEFLATED`], or another the reader refuses).
    pub method: u16,
    /// General-purpose flags.
    pub flags: u16,
    /// CRC-32 of the uncompressed data.
    pub crc32: u32,
    /// Bytes the entry occupies in the file.
    pub compressed_size: u64,
    /// Bytes of the entry once decompressed.
    pub uncompressed_size: u64,
    /// Offset of the entry's local header.
    pub header_offset: u64,
    /// Offset of the entry's first data byte (just after the local header).
    pub data_offset: u64,
}

/// A zip archive opened for reading, its file mapped once.
pub struct ZipArchive {
    path: PathBuf,
    map: Arc<Mmap>,
    entries: Vec<ZipEntry>,
    by_name: HashMap<String, usize>,
}

impl std::fmt::Debug for ZipArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZipArchive")
            .field("path", &self.path)
            .field("entries", &self.entries.len())
            .finish()
    }
}

/// Little-endian reads from a byte slice; `None` when the slice is too short.
struct Le<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Le<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Le { buf, pos: 0 }
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.bytes(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }
}

/// Where the central directory is, from the (zip64) end-of-central-directory record.
struct Directory {
    entries: u64,
    size: u64,
    offset: u64,
    /// Where the records after the directory begin: nothing of an entry may reach past it.
    end: u64,
}

/// The byte range `start..start + len` of a file of `file_len` bytes, if it lies inside.
fn span(start: u64, len: u64, file_len: u64) -> Option<std::ops::Range<usize>> {
    let end = start.checked_add(len)?;
    if end > file_len {
        return None;
    }
    Some(usize::try_from(start).ok()?..usize::try_from(end).ok()?)
}

impl ZipArchive {
    /// Opens and indexes the archive at `path`, checking every entry's header and data range
    /// against the file without reading any data.
    pub fn open(path: &Path) -> Result<ZipArchive> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len < EOCD_LEN {
            return Err(Error::malformed(
                path,
                format!("{len} bytes is too short for a zip archive (truncated?)"),
            ));
        }
        // SAFETY: the map is read-only and ferry never writes to files it reads. A file
        // truncated by another process while mapped is outside what a reader can defend against.
        let map = Arc::new(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?);
        let mut archive = ZipArchive {
            path: path.to_path_buf(),
            map,
            entries: Vec::new(),
            by_name: HashMap::new(),
        };
        let dir = archive.find_directory()?;
        archive.read_directory(&dir)?;
        Ok(archive)
    }

    fn bad(&self, msg: impl Into<String>) -> Error {
        Error::malformed(&self.path, msg)
    }

    fn file_len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Locates the end-of-central-directory record, searching backwards over at most the
    /// largest possible comment, and follows the zip64 locator when there is one.
    fn find_directory(&self) -> Result<Directory> {
        let len = self.file_len();
        let lowest = len.saturating_sub(EOCD_LEN + MAX_COMMENT);
        let mut pos = len - EOCD_LEN;
        let eocd = loop {
            let at = pos as usize;
            if self.map[at..at + 4] == SIG_EOCD.to_le_bytes() {
                let comment = u16::from_le_bytes([self.map[at + 20], self.map[at + 21]]) as u64;
                if pos + EOCD_LEN + comment <= len {
                    break pos;
                }
            }
            if pos == lowest {
                return Err(
                    self.bad("no end-of-central-directory record: not a zip archive, or truncated")
                );
            }
            pos -= 1;
        };
        let mut r = Le::new(&self.map[eocd as usize..]);
        let short = || self.bad("end-of-central-directory record is cut short");
        r.u32().ok_or_else(short)?;
        let disk = r.u16().ok_or_else(short)?;
        let cd_disk = r.u16().ok_or_else(short)?;
        r.u16().ok_or_else(short)?;
        let entries = r.u16().ok_or_else(short)? as u64;
        let size = r.u32().ok_or_else(short)? as u64;
        let offset = r.u32().ok_or_else(short)? as u64;
        if disk != 0 || cd_disk != 0 {
            return Err(self.bad("multi-disk (spanned) archives are not supported"));
        }
        let dir = match self.zip64_directory(eocd)? {
            Some(d) => d,
            None => Directory {
                entries,
                size,
                offset,
                end: eocd,
            },
        };
        self.check_directory(&dir)?;
        Ok(dir)
    }

    /// Reads the zip64 end-of-central-directory record if a locator precedes `eocd`.
    fn zip64_directory(&self, eocd: u64) -> Result<Option<Directory>> {
        let Some(loc) = eocd.checked_sub(LOCATOR_LEN) else {
            return Ok(None);
        };
        let mut r = Le::new(&self.map[loc as usize..eocd as usize]);
        if r.u32() != Some(SIG_EOCD64_LOCATOR) {
            return Ok(None);
        }
        let short = || self.bad("zip64 locator is cut short");
        r.u32().ok_or_else(short)?;
        let rec = r.u64().ok_or_else(short)?;
        let range = span(rec, EOCD64_LEN, loc).ok_or_else(|| {
            self.bad(format!(
                "zip64 end-of-central-directory record at offset {rec} lies outside the {} bytes before its locator",
                loc
            ))
        })?;
        let mut r = Le::new(&self.map[range]);
        let short = || self.bad("zip64 end-of-central-directory record is cut short");
        if r.u32() != Some(SIG_EOCD64) {
            return Err(self.bad(format!(
                "no zip64 end-of-central-directory record at offset {rec}"
            )));
        }
        r.bytes(12).ok_or_else(short)?; // record size, versions made by / needed
        let disk = r.u32().ok_or_else(short)?;
        let cd_disk = r.u32().ok_or_else(short)?;
        if disk != 0 || cd_disk != 0 {
            return Err(self.bad("multi-disk (spanned) archives are not supported"));
        }
        r.u64().ok_or_else(short)?;
        Ok(Some(Directory {
            entries: r.u64().ok_or_else(short)?,
            size: r.u64().ok_or_else(short)?,
            offset: r.u64().ok_or_else(short)?,
            end: rec,
        }))
    }

    fn check_directory(&self, dir: &Directory) -> Result<()> {
        if span(dir.offset, dir.size, dir.end).is_none() {
            return Err(self.bad(format!(
                "central directory claims bytes {}..{} but only {} bytes precede its end record (truncated?)",
                dir.offset,
                dir.offset.saturating_add(dir.size),
                dir.end
            )));
        }
        if dir.entries > dir.size / CENTRAL_HEADER_LEN {
            return Err(self.bad(format!(
                "central directory claims {} entries, more than its {} bytes can hold",
                dir.entries, dir.size
            )));
        }
        Ok(())
    }

    fn read_directory(&mut self, dir: &Directory) -> Result<()> {
        let start = dir.offset as usize;
        let end = start + dir.size as usize;
        let map = self.map.clone();
        let mut r = Le::new(&map[start..end]);
        let count = dir.entries as usize;
        self.entries.reserve(count);
        for i in 0..count {
            let mut entry = self.read_central(&mut r, i)?;
            entry.data_offset = self.local_data_offset(&entry, dir.offset)?;
            if self.by_name.insert(entry.name.clone(), i).is_some() {
                return Err(self.bad(format!(
                    "entry `{}` appears twice; ferry refuses ambiguous archives",
                    entry.name
                )));
            }
            self.entries.push(entry);
        }
        Ok(())
    }

    /// Parses the central-directory record of entry `i` (data offset filled in later).
    fn read_central(&self, r: &mut Le<'_>, i: usize) -> Result<ZipEntry> {
        let short = || self.bad(format!("central directory entry {i} is cut short"));
        if r.u32() != Some(SIG_CENTRAL) {
            return Err(self.bad(format!("central directory entry {i} has a bad signature")));
        }
        r.bytes(4).ok_or_else(short)?; // versions made by / needed
        let flags = r.u16().ok_or_else(short)?;
        let method = r.u16().ok_or_else(short)?;
        r.bytes(4).ok_or_else(short)?; // time, date
        let crc32 = r.u32().ok_or_else(short)?;
        let csize = r.u32().ok_or_else(short)?;
        let usize_ = r.u32().ok_or_else(short)?;
        let name_len = r.u16().ok_or_else(short)? as usize;
        let extra_len = r.u16().ok_or_else(short)? as usize;
        let comment_len = r.u16().ok_or_else(short)? as usize;
        r.bytes(8).ok_or_else(short)?; // disk start, internal and external attributes
        let offset = r.u32().ok_or_else(short)?;
        let name = String::from_utf8_lossy(r.bytes(name_len).ok_or_else(short)?).into_owned();
        let extra = r.bytes(extra_len).ok_or_else(short)?;
        r.bytes(comment_len).ok_or_else(short)?;
        let mut entry = ZipEntry {
            name,
            method,
            flags,
            crc32,
            compressed_size: csize as u64,
            uncompressed_size: usize_ as u64,
            header_offset: offset as u64,
            data_offset: 0,
        };
        self.apply_zip64_extra(&mut entry, extra, usize_, csize, offset)?;
        Ok(entry)
    }

    /// Replaces the 32-bit fields saturated at `0xFFFFFFFF` by their zip64 extra values, which
    /// come in the order: uncompressed size, compressed size, header offset.
    fn apply_zip64_extra(
        &self,
        e: &mut ZipEntry,
        extra: &[u8],
        usize_: u32,
        csize: u32,
        offset: u32,
    ) -> Result<()> {
        let wanted = [usize_, csize, offset].contains(&u32::MAX);
        if !wanted {
            return Ok(());
        }
        let name = e.name.clone();
        let missing = || {
            self.bad(format!(
                "entry `{name}` lacks the zip64 extra field its sizes call for"
            ))
        };
        let mut r = Le::new(extra);
        let field = loop {
            let id = r.u16().ok_or_else(missing)?;
            let n = r.u16().ok_or_else(missing)? as usize;
            let data = r.bytes(n).ok_or_else(missing)?;
            if id == ZIP64_EXTRA_ID {
                break data;
            }
        };
        let mut z = Le::new(field);
        if usize_ == u32::MAX {
            e.uncompressed_size = z.u64().ok_or_else(missing)?;
        }
        if csize == u32::MAX {
            e.compressed_size = z.u64().ok_or_else(missing)?;
        }
        if offset == u32::MAX {
            e.header_offset = z.u64().ok_or_else(missing)?;
        }
        Ok(())
    }

    /// Reads the local header of `e` and returns where its data begins, checking that the data
    /// lie before the central directory (which starts at `limit`).
    fn local_data_offset(&self, e: &ZipEntry, limit: u64) -> Result<u64> {
        let name = &e.name;
        let range = span(e.header_offset, LOCAL_HEADER_LEN, limit).ok_or_else(|| {
            self.bad(format!(
                "entry `{name}`: local header at offset {} lies outside the {limit} bytes of entry data (truncated?)",
                e.header_offset
            ))
        })?;
        let mut r = Le::new(&self.map[range]);
        let sig = r.u32();
        let lens = r
            .bytes(22)
            .and_then(|_| Some((r.u16()? as u64, r.u16()? as u64)));
        let (Some(SIG_LOCAL), Some((n, x))) = (sig, lens) else {
            return Err(self.bad(format!(
                "entry `{name}`: bad local header signature at offset {}",
                e.header_offset
            )));
        };
        let name_at = e.header_offset + LOCAL_HEADER_LEN;
        let local_name = span(name_at, n, limit)
            .map(|r| &self.map[r])
            .ok_or_else(|| {
                self.bad(format!(
                    "entry `{name}`: local header runs past the entry data"
                ))
            })?;
        if local_name != e.name.as_bytes() && String::from_utf8_lossy(local_name) != e.name {
            return Err(self.bad(format!(
                "entry `{name}`: its local header names it `{}`; ferry refuses ambiguous archives",
                String::from_utf8_lossy(local_name)
            )));
        }
        let data = name_at + n + x;
        if span(data, e.compressed_size, limit).is_none() {
            return Err(self.bad(format!(
                "entry `{name}`: {} bytes of data at offset {data} run past the {limit} bytes of entry data (truncated?)",
                e.compressed_size
            )));
        }
        Ok(data)
    }

    /// The archive's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The mapped file.
    pub fn map(&self) -> &Arc<Mmap> {
        &self.map
    }

    /// Every entry, in central-directory order.
    pub fn entries(&self) -> &[ZipEntry] {
        &self.entries
    }

    /// The entry called `name`.
    pub fn entry(&self, name: &str) -> Option<&ZipEntry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }

    fn require(&self, name: &str) -> Result<&ZipEntry> {
        self.entry(name)
            .ok_or_else(|| self.bad(format!("the archive has no entry `{name}`")))
    }

    /// The bytes of entry `name` as a [`Storage`]: a range of the map for stored entries, an
    /// on-demand inflater for deflated ones. Nothing is read or allocated here.
    pub fn entry_storage(&self, name: &str) -> Result<Storage> {
        let e = self.require(name)?;
        if e.flags & FLAG_ENCRYPTED != 0 {
            return Err(self.bad(format!("entry `{name}` is encrypted")));
        }
        let range = span(e.data_offset, e.compressed_size, self.file_len())
            .ok_or_else(|| self.bad(format!("entry `{name}` runs past the end of the file")))?;
        match e.method {
            METHOD_STORED => {
                if e.compressed_size != e.uncompressed_size {
                    return Err(self.bad(format!(
                        "stored entry `{name}` claims {} bytes but holds {}",
                        e.uncompressed_size, e.compressed_size
                    )));
                }
                Ok(Storage::mapped(self.map.clone(), range))
            }
            METHOD_DEFLATED => {
                let bound = e
                    .compressed_size
                    .saturating_mul(MAX_DEFLATE_RATIO)
                    .saturating_add(DEFLATE_SLACK);
                if e.uncompressed_size > bound {
                    return Err(self.bad(format!(
                        "deflated entry `{name}` claims {} bytes from {} compressed bytes; deflate cannot expand that far (corrupt or a zip bomb)",
                        e.uncompressed_size, e.compressed_size
                    )));
                }
                Ok(Storage::Lazy(Arc::new(Inflate {
                    path: self.path.clone(),
                    name: name.to_string(),
                    map: self.map.clone(),
                    range,
                    size: e.uncompressed_size,
                    crc32: e.crc32,
                })))
            }
            m => Err(self.bad(format!(
                "entry `{name}` uses compression method {m}; ferry reads stored (0) and deflated (8) entries"
            ))),
        }
    }

    /// Reads entry `name` whole, refusing entries that decompress to more than `max` bytes
    /// (for small records such as `data.pkl` or `version`).
    pub fn read_small(&self, name: &str, max: u64) -> Result<Vec<u8>> {
        let e = self.require(name)?;
        if e.uncompressed_size > max {
            return Err(self.bad(format!(
                "entry `{name}` is {} bytes, more than the {max} ferry reads for it",
                e.uncompressed_size
            )));
        }
        let bytes = self.entry_storage(name)?.bytes()?.into_owned();
        // Deflated entries are checked as they inflate; a stored one is checked here, since
        // it is read whole (tensor storages stay mapped and are not: docs/architecture.md,
        // "zip archives").
        if e.method == METHOD_STORED && crc32fast::hash(&bytes) != e.crc32 {
            return Err(self.bad(format!("entry `{name}`: CRC-32 mismatch (corrupt data)")));
        }
        Ok(bytes)
    }
}

/// The deflated data of one entry, inflated when asked for.
struct Inflate {
    path: PathBuf,
    name: String,
    map: Arc<Mmap>,
    range: std::ops::Range<usize>,
    size: u64,
    crc32: u32,
}

impl Inflate {
    fn bad(&self, msg: impl std::fmt::Display) -> Error {
        Error::malformed(&self.path, format!("entry `{}`: {msg}", self.name))
    }
}

impl LazyBytes for Inflate {
    fn len(&self) -> u64 {
        self.size
    }

    fn load(&self) -> Result<Vec<u8>> {
        let size =
            usize::try_from(self.size).map_err(|_| self.bad("too large for this machine"))?;
        let mut out = Vec::new();
        out.try_reserve_exact(size)
            .map_err(|_| self.bad(format!("cannot allocate {size} bytes to inflate it")))?;
        out.resize(size, 0);
        let input = &self.map[self.range.clone()];
        let n = miniz_oxide::inflate::decompress_slice_iter_to_slice(
            &mut out,
            std::iter::once(input),
            false,
            true,
        )
        .map_err(|s| {
            self.bad(format!(
                "corrupt deflate data ({s:?}), or more than the declared {size} bytes"
            ))
        })?;
        if n != size {
            return Err(self.bad(format!("inflates to {n} bytes but declares {size}")));
        }
        if crc32fast::hash(&out) != self.crc32 {
            return Err(self.bad("CRC-32 mismatch (corrupt data)"));
        }
        Ok(out)
    }
}

/// One entry already written, remembered for the central directory.
struct Written {
    name: String,
    crc32: u32,
    size: u64,
    offset: u64,
}

/// Writes a zip archive entry by entry into any [`Write`]: stored entries, data aligned to
/// [`DATA_ALIGNMENT`] bytes, zip64 records where sizes or offsets need them. Call
/// [`ZipWriter::finish`] to write the central directory.
pub struct ZipWriter<W: Write> {
    out: W,
    path: PathBuf,
    offset: u64,
    written: Vec<Written>,
    names: HashSet<String>,
    zip64_at: u64,
}

impl<W: Write> ZipWriter<W> {
    /// A writer into `out`; `path` names the destination in errors.
    pub fn new(out: W, path: &Path) -> Self {
        ZipWriter {
            out,
            path: path.to_path_buf(),
            offset: 0,
            written: Vec::new(),
            names: HashSet::new(),
            zip64_at: u32::MAX as u64,
        }
    }

    /// Uses zip64 records for every size or offset of at least `threshold` bytes (by default
    /// `0xFFFFFFFF`, where the format requires them). Lowering it exercises the zip64 paths.
    pub fn with_zip64_threshold(mut self, threshold: u64) -> Self {
        self.zip64_at = threshold.min(u32::MAX as u64);
        self
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io(&self.path, e))?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Appends a stored entry `name` holding `data`.
    pub fn add(&mut self, name: &str, data: &[u8]) -> Result<()> {
        if name.len() > u16::MAX as usize {
            return Err(Error::malformed(
                &self.path,
                format!("zip entry name of {} bytes is too long", name.len()),
            ));
        }
        if !self.names.insert(name.to_string()) {
            return Err(Error::malformed(
                &self.path,
                format!("zip entry `{name}` written twice (two tensors with one name?)"),
            ));
        }
        let size = data.len() as u64;
        let crc32 = crc32fast::hash(data);
        let zip64 = size >= self.zip64_at;
        let mut extra = Vec::new();
        if zip64 {
            extra.extend_from_slice(&ZIP64_EXTRA_ID.to_le_bytes());
            extra.extend_from_slice(&16u16.to_le_bytes());
            extra.extend_from_slice(&size.to_le_bytes());
            extra.extend_from_slice(&size.to_le_bytes());
        }
        let start = self.offset + LOCAL_HEADER_LEN + name.len() as u64 + extra.len() as u64 + 4;
        let pad = (DATA_ALIGNMENT - start % DATA_ALIGNMENT) % DATA_ALIGNMENT;
        extra.extend_from_slice(&PADDING_EXTRA_ID.to_le_bytes());
        extra.extend_from_slice(&(pad as u16).to_le_bytes());
        extra.resize(extra.len() + pad as usize, 0);
        let size32 = if zip64 { u32::MAX } else { size as u32 };
        let mut h = Vec::with_capacity(LOCAL_HEADER_LEN as usize + name.len() + extra.len());
        h.extend_from_slice(&SIG_LOCAL.to_le_bytes());
        h.extend_from_slice(&(if zip64 { 45u16 } else { 20u16 }).to_le_bytes());
        h.extend_from_slice(&FLAG_UTF8.to_le_bytes());
        h.extend_from_slice(&METHOD_STORED.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&DOS_DATE.to_le_bytes());
        h.extend_from_slice(&crc32.to_le_bytes());
        h.extend_from_slice(&size32.to_le_bytes());
        h.extend_from_slice(&size32.to_le_bytes());
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        h.extend_from_slice(name.as_bytes());
        h.extend_from_slice(&extra);
        let offset = self.offset;
        self.put(&h)?;
        debug_assert_eq!(self.offset % DATA_ALIGNMENT, 0);
        self.put(data)?;
        self.written.push(Written {
            name: name.to_string(),
            crc32,
            size,
            offset,
        });
        Ok(())
    }

    fn central_record(&self, w: &Written) -> Vec<u8> {
        let big_size = w.size >= self.zip64_at;
        let big_offset = w.offset >= self.zip64_at;
        let mut extra = Vec::new();
        if big_size {
            extra.extend_from_slice(&w.size.to_le_bytes());
            extra.extend_from_slice(&w.size.to_le_bytes());
        }
        if big_offset {
            extra.extend_from_slice(&w.offset.to_le_bytes());
        }
        if !extra.is_empty() {
            let mut head = ZIP64_EXTRA_ID.to_le_bytes().to_vec();
            head.extend_from_slice(&(extra.len() as u16).to_le_bytes());
            head.extend_from_slice(&extra);
            extra = head;
        }
        let version: u16 = if extra.is_empty() { 20 } else { 45 };
        let size32 = if big_size { u32::MAX } else { w.size as u32 };
        let offset32 = if big_offset {
            u32::MAX
        } else {
            w.offset as u32
        };
        let mut h = Vec::with_capacity(CENTRAL_HEADER_LEN as usize + w.name.len() + extra.len());
        h.extend_from_slice(&SIG_CENTRAL.to_le_bytes());
        h.extend_from_slice(&version.to_le_bytes());
        h.extend_from_slice(&version.to_le_bytes());
        h.extend_from_slice(&FLAG_UTF8.to_le_bytes());
        h.extend_from_slice(&METHOD_STORED.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&DOS_DATE.to_le_bytes());
        h.extend_from_slice(&w.crc32.to_le_bytes());
        h.extend_from_slice(&size32.to_le_bytes());
        h.extend_from_slice(&size32.to_le_bytes());
        h.extend_from_slice(&(w.name.len() as u16).to_le_bytes());
        h.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        h.extend_from_slice(&[0u8; 6]); // comment length, disk, internal attributes
        h.extend_from_slice(&(0o100644u32 << 16).to_le_bytes()); // -rw-r--r--
        h.extend_from_slice(&offset32.to_le_bytes());
        h.extend_from_slice(w.name.as_bytes());
        h.extend_from_slice(&extra);
        h
    }

    /// Writes the central directory and end records; returns the inner writer.
    pub fn finish(mut self) -> Result<W> {
        let cd_offset = self.offset;
        let records: Vec<Vec<u8>> = self
            .written
            .iter()
            .map(|w| self.central_record(w))
            .collect();
        for r in &records {
            self.put(r)?;
        }
        let cd_size = self.offset - cd_offset;
        let count = self.written.len() as u64;
        let zip64 =
            count >= u16::MAX as u64 || cd_offset >= self.zip64_at || cd_size >= self.zip64_at;
        if zip64 {
            let eocd64 = self.offset;
            let mut r = Vec::with_capacity((EOCD64_LEN + LOCATOR_LEN) as usize);
            r.extend_from_slice(&SIG_EOCD64.to_le_bytes());
            r.extend_from_slice(&(EOCD64_LEN - 12).to_le_bytes());
            r.extend_from_slice(&45u16.to_le_bytes());
            r.extend_from_slice(&45u16.to_le_bytes());
            r.extend_from_slice(&[0u8; 8]); // this disk, directory disk
            r.extend_from_slice(&count.to_le_bytes());
            r.extend_from_slice(&count.to_le_bytes());
            r.extend_from_slice(&cd_size.to_le_bytes());
            r.extend_from_slice(&cd_offset.to_le_bytes());
            r.extend_from_slice(&SIG_EOCD64_LOCATOR.to_le_bytes());
            r.extend_from_slice(&0u32.to_le_bytes());
            r.extend_from_slice(&eocd64.to_le_bytes());
            r.extend_from_slice(&1u32.to_le_bytes());
            self.put(&r)?;
        }
        let count16 = if zip64 { u16::MAX } else { count as u16 };
        let size32 = if zip64 { u32::MAX } else { cd_size as u32 };
        let offset32 = if zip64 { u32::MAX } else { cd_offset as u32 };
        let mut e = Vec::with_capacity(EOCD_LEN as usize);
        e.extend_from_slice(&SIG_EOCD.to_le_bytes());
        e.extend_from_slice(&[0u8; 4]); // this disk, directory disk
        e.extend_from_slice(&count16.to_le_bytes());
        e.extend_from_slice(&count16.to_le_bytes());
        e.extend_from_slice(&size32.to_le_bytes());
        e.extend_from_slice(&offset32.to_le_bytes());
        e.extend_from_slice(&0u16.to_le_bytes());
        self.put(&e)?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_zip(entries: &[(&str, &[u8])], zip64_at: u64) -> Vec<u8> {
        let mut w = ZipWriter::new(Vec::new(), Path::new("mem.zip")).with_zip64_threshold(zip64_at);
        for (n, d) in entries {
            w.add(n, d).unwrap();
        }
        w.finish().unwrap()
    }

    fn open_bytes(bytes: &[u8]) -> (tempfile::TempDir, Result<ZipArchive>) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.zip");
        std::fs::write(&p, bytes).unwrap();
        let a = ZipArchive::open(&p);
        (dir, a)
    }

    #[test]
    fn round_trip_aligned_and_zip64() {
        let big: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        for threshold in [u32::MAX as u64, 0, 100] {
            let bytes = write_zip(
                &[("a/data.pkl", b"abc"), ("a/data/0", &big), ("a/e", b"")],
                threshold,
            );
            let (_d, a) = open_bytes(&bytes);
            let a = a.unwrap();
            assert_eq!(a.entries().len(), 3);
            for e in a.entries() {
                assert_eq!(e.data_offset % DATA_ALIGNMENT, 0, "{threshold} {e:?}");
            }
            assert_eq!(
                &*a.entry_storage("a/data/0").unwrap().bytes().unwrap(),
                &big[..]
            );
            assert_eq!(a.read_small("a/data.pkl", 10).unwrap(), b"abc");
            assert!(a.read_small("a/data/0", 10).is_err());
            assert!(a.entry_storage("missing").is_err());
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = write_zip(&[("x/data.pkl", b"hello"), ("x/data/0", &[7u8; 300])], 100);
        for n in 0..bytes.len() {
            let (_d, a) = open_bytes(&bytes[..n]);
            match a {
                Err(Error::File(crate::FileError {
                    problem: crate::FileProblem::Malformed(msg),
                    ..
                })) => assert!(!msg.is_empty()),
                Err(e) => panic!("unexpected error kind at {n}: {e}"),
                Ok(a) => {
                    // A cut that leaves a valid-looking directory must still serve only checked ranges.
                    for e in a.entries() {
                        let _ = a.entry_storage(&e.name).map(|s| s.bytes().map(|b| b.len()));
                    }
                }
            }
        }
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        let bytes = write_zip(&[("x/data.pkl", b"hello"), ("x/data/0", &[7u8; 300])], 0);
        for i in 0..bytes.len() {
            for v in [0u8, 0xFF, 0x7F] {
                let mut b = bytes.clone();
                b[i] = v;
                let (_d, a) = open_bytes(&b);
                if let Ok(a) = a {
                    for e in a.entries() {
                        let _ = a.entry_storage(&e.name).map(|s| s.bytes().map(|b| b.len()));
                    }
                }
            }
        }
    }

    /// A one-entry archive with a deflated entry, built by hand.
    fn deflated_zip(data: &[u8], declared: u32) -> Vec<u8> {
        let comp = miniz_oxide::deflate::compress_to_vec(data, 6);
        let mut z = Vec::new();
        let name = b"d.npy";
        z.extend_from_slice(&SIG_LOCAL.to_le_bytes());
        z.extend_from_slice(&[20, 0, 0, 0, 8, 0, 0, 0, 0, 0]);
        z.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
        z.extend_from_slice(&(comp.len() as u32).to_le_bytes());
        z.extend_from_slice(&declared.to_le_bytes());
        z.extend_from_slice(&(name.len() as u16).to_le_bytes());
        z.extend_from_slice(&0u16.to_le_bytes());
        z.extend_from_slice(name);
        z.extend_from_slice(&comp);
        let cd = z.len() as u32;
        z.extend_from_slice(&SIG_CENTRAL.to_le_bytes());
        z.extend_from_slice(&[20, 0, 20, 0, 0, 0, 8, 0, 0, 0, 0, 0]);
        z.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
        z.extend_from_slice(&(comp.len() as u32).to_le_bytes());
        z.extend_from_slice(&declared.to_le_bytes());
        z.extend_from_slice(&(name.len() as u16).to_le_bytes());
        z.extend_from_slice(&[0u8; 12]);
        z.extend_from_slice(&0u32.to_le_bytes());
        z.extend_from_slice(name);
        let cd_size = z.len() as u32 - cd;
        z.extend_from_slice(&SIG_EOCD.to_le_bytes());
        z.extend_from_slice(&[0, 0, 0, 0, 1, 0, 1, 0]);
        z.extend_from_slice(&cd_size.to_le_bytes());
        z.extend_from_slice(&cd.to_le_bytes());
        z.extend_from_slice(&0u16.to_le_bytes());
        z
    }

    #[test]
    fn deflated_entries_inflate_lazily_and_bounded() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 7) as u8).collect();
        let (_d, a) = open_bytes(&deflated_zip(&data, data.len() as u32));
        let s = a.unwrap().entry_storage("d.npy").unwrap();
        assert!(matches!(s, Storage::Lazy(_)));
        assert_eq!(s.len(), 5000);
        assert_eq!(&*s.bytes().unwrap(), &data[..]);
        // Declared size smaller than the real data: refused, never written past the buffer.
        let (_d, a) = open_bytes(&deflated_zip(&data, 100));
        let e = a
            .unwrap()
            .entry_storage("d.npy")
            .unwrap()
            .bytes()
            .unwrap_err()
            .to_string();
        assert!(e.contains("d.npy"), "{e}");
        // Declared size beyond what deflate can produce: refused before allocating.
        let (_d, a) = open_bytes(&deflated_zip(&data, u32::MAX - 1));
        let e = a.unwrap().entry_storage("d.npy").unwrap_err().to_string();
        assert!(e.contains("zip bomb"), "{e}");
    }

    #[test]
    fn not_a_zip() {
        let (_d, a) = open_bytes(&[0u8; 100]);
        assert!(a
            .unwrap_err()
            .to_string()
            .contains("end-of-central-directory"));
        let (_d, a) = open_bytes(b"PK");
        assert!(a.unwrap_err().to_string().contains("too short"));
    }
}
