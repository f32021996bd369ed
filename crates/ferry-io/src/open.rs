//! Opening a checkpoint: a file (its format detected from the content, never the extension),
//! a Hugging Face model folder, or a hub id from the local cache. The one module that knows
//! both the formats and the hub, so that neither has to know the other's caller.

use std::path::Path;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::{formats, hub};

impl Checkpoint {
    /// Opens a file, a Hugging Face model folder, or a hub id from the local cache, detecting
    /// the format from the content (never from the extension). Never touches the network.
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint> {
        Checkpoint::open_with(path, false)
    }

    /// Like [`Checkpoint::open`]; with `online`, a hub id missing from the local cache is
    /// downloaded into it first (needs the `online` feature).
    pub fn open_with(path: impl AsRef<Path>, online: bool) -> Result<Checkpoint> {
        let path = path.as_ref();
        if path.is_dir() {
            return hub::open_folder(path);
        }
        if path.exists() {
            return formats::open_file(path);
        }
        let id = path.to_string_lossy();
        if let Some(folder) = hub::resolve_cached(&id)? {
            return hub::open_folder(&folder);
        }
        if hub::is_hub_id(&id) && online {
            #[cfg(feature = "online")]
            return hub::open_folder(&hub::download(&id)?);
            #[cfg(not(feature = "online"))]
            return Err(Error::Invalid(format!(
                "`{id}`: this ferry was built without the `online` feature, so it cannot download"
            )));
        }
        let why = if hub::is_hub_id(&id) {
            let root = hub::cache_root().unwrap_or_default();
            format!(
                "no such file or folder, and no hub model `{id}` in the local cache ({}); pass --online to download it",
                root.display()
            )
        } else {
            "no such file or folder".to_string()
        };
        Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, why),
        ))
    }
}
