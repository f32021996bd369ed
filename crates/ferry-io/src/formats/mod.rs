//! One module per container format. Each reader returns a [`Checkpoint`]; each writer
//! consumes [`OutTensor`](crate::write::OutTensor)s one at a time.
//!
//! To add a format: write `formats/NAME.rs` with `open(path) -> Result<Checkpoint>` (and a
//! `write` if ferry should produce it), recognise its first bytes in [`sniff`], add a
//! [`Format`] variant, and add fixtures made by the format's own tool in `scripts/`.

pub mod safetensors;
pub mod sharded;

use std::io::Read;
use std::path::Path;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};

/// What the first bytes of a file say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// A zip archive: PyTorch, TorchScript or npz, told apart by its entries.
    Zip,
    /// A legacy PyTorch pickle stream.
    Pickle,
    /// A GGUF file.
    Gguf,
    /// A `.npy` array.
    Npy,
    /// A safetensors file.
    Safetensors,
    /// A JSON index of shards.
    ShardIndex,
}

/// Recognises a file from its first bytes.
pub fn sniff(path: &Path) -> Result<Sniffed> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        let k = f.read(&mut head[n..]).map_err(|e| Error::io(path, e))?;
        if k == 0 {
            break;
        }
        n += k;
    }
    let head = &head[..n];
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Ok(Sniffed::Zip);
    }
    if head.starts_with(b"GGUF") {
        return Ok(Sniffed::Gguf);
    }
    if head.starts_with(b"\x93NUMPY") {
        return Ok(Sniffed::Npy);
    }
    if head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]) {
        return Ok(Sniffed::Pickle);
    }
    if head.len() >= 9 && head[8] == b'{' {
        return Ok(Sniffed::Safetensors);
    }
    let trimmed: Vec<u8> = head.iter().copied().skip_while(u8::is_ascii_whitespace).collect();
    if trimmed.first() == Some(&b'{') {
        return Ok(Sniffed::ShardIndex);
    }
    let shown: String = head.iter().take(8).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
    Err(Error::UnknownFormat {
        path: path.to_path_buf(),
        msg: if n == 0 {
            "the file is empty".into()
        } else {
            format!("first bytes {shown}")
        },
    })
}

/// Opens one file of any supported format.
pub fn open_file(path: &Path) -> Result<Checkpoint> {
    match sniff(path)? {
        Sniffed::Safetensors => safetensors::open(path),
        Sniffed::ShardIndex => sharded::open(path),
        other => Err(Error::UnknownFormat {
            path: path.to_path_buf(),
            msg: format!("{other:?} reading is not built yet"),
        }),
    }
}
