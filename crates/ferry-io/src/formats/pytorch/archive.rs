//! `torch.save` zip archives and TorchScript archives (`torch.jit.save`), read.

use std::path::Path;

use super::storages::ZipStorages;
use super::walk::Walker;
use crate::checkpoint::{Checkpoint, Format};
use crate::error::{Error, Result};
use crate::formats::pickle::{self, Options};
use crate::formats::zip::ZipArchive;

/// Largest `data.pkl` ferry reads: the pickle only describes tensors (names, shapes), so even
/// a state dict of a million tensors stays far below this.
pub(super) const MAX_PICKLE: u64 = 512 * 1024 * 1024;

/// The top folder of a torch zip archive: the `X` of the entry `X/data.pkl`.
pub fn archive_prefix(archive: &ZipArchive) -> Option<String> {
    archive
        .entries()
        .iter()
        .filter_map(|e| e.name.strip_suffix("/data.pkl"))
        .find(|p| !p.is_empty() && !p.contains('/'))
        .map(str::to_string)
}

/// Whether a zip archive is a TorchScript archive (`X/constants.pkl` or `X/code/...`).
pub fn is_torchscript(archive: &ZipArchive) -> bool {
    archive.entries().iter().any(|e| {
        e.name
            .split_once('/')
            .is_some_and(|(_, rest)| rest == "constants.pkl" || rest.starts_with("code/"))
    })
}

/// Opens a `torch.save` zip archive (`.pth`, `.bin`, `.pt`).
pub fn open_zip(path: &Path) -> Result<Checkpoint> {
    open_zip_archive(&ZipArchive::open(path)?)
}

/// Opens a TorchScript archive (`torch.jit.save`): every parameter and buffer, by module path.
pub fn open_torchscript(path: &Path) -> Result<Checkpoint> {
    open_torchscript_archive(&ZipArchive::open(path)?)
}

/// Reads a `torch.save` checkpoint from an opened zip archive.
pub fn open_zip_archive(archive: &ZipArchive) -> Result<Checkpoint> {
    read_archive(archive, false)
}

/// Reads a TorchScript module from an opened zip archive.
pub fn open_torchscript_archive(archive: &ZipArchive) -> Result<Checkpoint> {
    read_archive(archive, true)
}

pub(super) fn read_archive(archive: &ZipArchive, torchscript: bool) -> Result<Checkpoint> {
    let path = archive.path();
    let prefix = archive_prefix(archive).ok_or_else(|| {
        Error::malformed(path, "no `<folder>/data.pkl` entry: not a PyTorch archive")
    })?;
    let byteorder = format!("{prefix}/byteorder");
    if archive.entry(&byteorder).is_some() {
        let order = archive.read_small(&byteorder, 16)?;
        if order.trim_ascii() == b"big" {
            return Err(Error::malformed(
                path,
                "the archive was saved on a big-endian machine; ferry reads little-endian data only \
                 (load and re-save it with torch on a little-endian machine)",
            ));
        }
    }
    let data = archive.read_small(&format!("{prefix}/data.pkl"), MAX_PICKLE)?;
    let (pk, _) = pickle::load(path, &data, &Options { torchscript })?;
    let src = ZipStorages { archive, prefix };
    let mut w = Walker::new(path, &pk, &src, torchscript);
    w.walk(&pk.root, "", 0)?;
    Ok(Checkpoint {
        format: if torchscript {
            Format::Torchscript
        } else {
            Format::PytorchZip
        },
        path: path.to_path_buf(),
        tensors: w.tensors,
        metadata: w.metadata,
        companions: Vec::new(),
    })
}
