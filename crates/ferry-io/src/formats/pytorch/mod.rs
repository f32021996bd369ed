//! PyTorch checkpoints: `torch.save` zip archives (torch >= 1.6), legacy `torch.save` streams,
//! TorchScript archives (`torch.jit.save`) for reading, and zip `.pth` for writing.
//!
//! Reading never runs code from the file: the pickles go through ferry's restricted VM
//! ([`super::pickle`]), tensors are rebuilt from their recorded `_rebuild_tensor*` calls, and
//! storages stay memory-mapped. Nested containers are flattened to dotted names
//! (`state_dict.encoder.weight`, `optimizer.state.0.exp_avg`); scalar leaves go to metadata.
//!
//! One module per concern: [`archive`] (zip and TorchScript archives), [`legacy`] (pre-1.6
//! streams), [`storages`] (what persistent ids point at), [`walk`] (rebuilding tensors from
//! the object tree), [`dtypes`] (torch's element types), [`write`] (zip `.pth` output).

mod archive;
mod dtypes;
mod legacy;
mod storages;
#[cfg(test)]
mod tests;
mod walk;
mod write;

pub use archive::{
    archive_prefix, is_torchscript, open_torchscript, open_torchscript_archive, open_zip,
    open_zip_archive,
};
pub use legacy::open_legacy;
pub use write::write;
