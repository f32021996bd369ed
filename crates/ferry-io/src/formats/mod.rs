//! One module per container format. Each reader returns a [`Checkpoint`]; each writer
//! consumes [`OutTensor`](crate::write::OutTensor)s one at a time.
//!
//! To add a format: write `formats/NAME.rs` with `open(path) -> Result<Checkpoint>` (and a
//! `write` if ferry should produce it), recognise its first bytes in [`sniff`], add a
//! [`Format`] variant, and add fixtures made by the format's own tool in `scripts/`.

pub mod gguf;
pub mod numpy;
pub mod pickle;
pub mod pytorch;
pub mod safetensors;
pub mod sharded;
pub mod zip;

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
    let trimmed: Vec<u8> = head
        .iter()
        .copied()
        .skip_while(u8::is_ascii_whitespace)
        .collect();
    if trimmed.first() == Some(&b'{') {
        return Ok(Sniffed::ShardIndex);
    }
    let shown: String = head
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
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
        Sniffed::Gguf => gguf::open(path),
        Sniffed::Npy => numpy::open_npy(path),
        Sniffed::Zip => open_zip(path),
        Sniffed::Pickle => pytorch::open_legacy(path),
        Sniffed::Safetensors => safetensors::open(path),
        Sniffed::ShardIndex => sharded::open(path),
    }
}

/// Opens a zip archive, telling its kind from the entries: TorchScript (`*/constants.pkl` or
/// `*/code/`), PyTorch (`*/data.pkl`), or NumPy `.npz` (every entry a `.npy`).
pub fn open_zip(path: &Path) -> Result<Checkpoint> {
    let archive = zip::ZipArchive::open(path)?;
    if pytorch::archive_prefix(&archive).is_some() {
        return if pytorch::is_torchscript(&archive) {
            pytorch::open_torchscript_archive(&archive)
        } else {
            pytorch::open_zip_archive(&archive)
        };
    }
    let entries = archive.entries();
    if !entries.is_empty() && entries.iter().all(|e| e.name.ends_with(".npy")) {
        drop(archive);
        return numpy::open_npz(path);
    }
    Err(Error::UnknownFormat {
        path: path.to_path_buf(),
        msg: "a zip archive that is neither a PyTorch archive (no `<folder>/data.pkl`) nor an npz (not every entry is a `.npy`)".into(),
    })
}
