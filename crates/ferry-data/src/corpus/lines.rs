//! Line-by-line reading of text files, `.gz` or not, with line numbers and UTF-8 checks.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::issues::{Issue, IssueKind};
use crate::record::Location;

/// Opens `path` for buffered reading, decompressing it when it starts with the gzip magic
/// bytes (whatever its name).
pub fn open_text(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    open_text_at(path, 0)
}

/// Opens `path` like [`open_text`], positioned `offset` bytes into its (decompressed) text:
/// a plain file seeks there; a gzipped one is decompressed up to it (gzip cannot seek).
pub fn open_text_at(path: &Path, offset: u64) -> Result<Box<dyn BufRead + Send>> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(|e| Error::io(path, e))?;
    let gzipped = n == 2 && magic == [0x1f, 0x8b];
    if !gzipped {
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if offset > len {
            return Err(Error::malformed(
                path,
                format!("has {len} bytes, fewer than the position {offset} to resume at (the file changed)"),
            ));
        }
    }
    let start = if gzipped { 0 } else { offset };
    file.seek(SeekFrom::Start(start))
        .map_err(|e| Error::io(path, e))?;
    let reader = BufReader::with_capacity(1 << 16, file);
    let mut text: Box<dyn BufRead + Send> = if gzipped {
        let gz = flate2::read::MultiGzDecoder::new(reader);
        Box::new(BufReader::with_capacity(1 << 16, gz))
    } else {
        Box::new(reader)
    };
    if gzipped && offset > 0 {
        let skipped = std::io::copy(&mut (&mut text).take(offset), &mut std::io::sink())
            .map_err(|e| Error::io(path, e))?;
        if skipped < offset {
            return Err(Error::malformed(
                path,
                format!(
                    "has {skipped} bytes of text, fewer than the position {offset} to resume at"
                ),
            ));
        }
    }
    Ok(text)
}

/// Reads the first `n` bytes of `path` (decompressed if gzipped), for format sniffing.
pub fn sniff(path: &Path, n: usize) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(n);
    open_text(path)?
        .take(n as u64)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path, e))?;
    Ok(buf)
}

/// A line of a file: its number and its text, or the issue that makes it unreadable.
pub type Line = std::result::Result<(u64, String), Issue>;

/// The lines of one file, `\n` or `\r\n` terminated, with 1-based numbers. Lines that are not
/// UTF-8 come out as [`IssueKind::InvalidUtf8`] issues; I/O errors end the iteration with an
/// error naming the file.
pub struct Lines {
    file: Arc<Path>,
    reader: Box<dyn BufRead + Send>,
    buf: Vec<u8>,
    line: u64,
    offset: u64,
}

impl Lines {
    /// Opens `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Lines::open_at(path, 0, 0)
    }

    /// Opens `path` at byte `offset` of its text, where line `line` ended (a position
    /// [`Lines::offset`] and [`Lines::line`] gave earlier), to go on reading from there.
    pub fn open_at(path: &Path, offset: u64, line: u64) -> Result<Self> {
        Ok(Lines {
            file: Arc::from(path),
            reader: open_text_at(path, offset)?,
            buf: Vec::new(),
            line,
            offset,
        })
    }

    /// Bytes of text read so far (decompressed): where the next line starts.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The number of the last line read (0 before the first).
    pub fn line(&self) -> u64 {
        self.line
    }

    /// The file being read.
    pub fn file(&self) -> &Arc<Path> {
        &self.file
    }

    /// The location of line `line` of this file.
    pub fn loc(&self, line: u64) -> Location {
        Location {
            file: self.file.clone(),
            line,
        }
    }

    /// The next line, `None` at the end of the file.
    pub fn next_line(&mut self) -> Result<Option<Line>> {
        self.buf.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| Error::io(&*self.file, e))?;
        if n == 0 {
            return Ok(None);
        }
        self.offset += n as u64;
        self.line += 1;
        while matches!(self.buf.last(), Some(b'\n' | b'\r')) {
            self.buf.pop();
        }
        Ok(Some(match std::str::from_utf8(&self.buf) {
            Ok(s) => Ok((self.line, s.to_string())),
            Err(e) => Err(Issue {
                loc: self.loc(self.line),
                kind: IssueKind::InvalidUtf8,
                detail: format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            }),
        }))
    }

    /// The next line that is not blank (empty or whitespace only): for formats where a blank
    /// line is not a record. Lines that are not UTF-8 still come out as issues.
    pub fn next_nonblank(&mut self) -> Result<Option<Line>> {
        loop {
            match self.next_line()? {
                Some(Ok((_, text))) if text.trim().is_empty() => continue,
                other => return Ok(other),
            }
        }
    }
}
