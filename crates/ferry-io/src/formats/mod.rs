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
    // safetensors by its whole signature, before pickle: a header length of 640, 896, 1152 or
    // 1408 (mod 65536) starts with the bytes of a pickle protocol marker (`80 02` ...).
    let file_len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    if head.len() >= 9 && head[8] == b'{' {
        let header = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        if header.checked_add(8).is_some_and(|end| end <= file_len) {
            return Ok(Sniffed::Safetensors);
        }
    }
    if head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]) {
        return Ok(Sniffed::Pickle);
    }
    if head.len() >= 9 && head[8] == b'{' {
        // A header longer than the file: the safetensors reader names the truncation.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid safetensors file whose header is 640 bytes long starts `80 02`, a pickle
    /// protocol marker; it must still be read as safetensors (it was read as a pickle).
    #[test]
    fn a_safetensors_header_that_looks_like_a_pickle_is_still_safetensors() {
        let dir = tempfile::tempdir().unwrap();
        for len in [640usize, 896, 1152, 1408, 640 + 65536] {
            let mut header = br#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#.to_vec();
            header.resize(len, b' ');
            let mut bytes = (len as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(&header);
            bytes.extend_from_slice(&1.5f32.to_le_bytes());
            let p = dir.path().join(format!("h{len}.safetensors"));
            std::fs::write(&p, &bytes).unwrap();
            assert_eq!(&bytes[..2], &[(len % 256) as u8, (len / 256 % 256) as u8]);
            assert_eq!(sniff(&p).unwrap(), Sniffed::Safetensors, "header {len}");
            let ck = crate::Checkpoint::open(&p).unwrap();
            assert_eq!(
                ck.tensors[0].data().unwrap().as_ref(),
                &1.5f32.to_le_bytes()
            );
        }
    }
}
