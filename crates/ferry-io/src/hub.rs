//! Hugging Face model folders and hub ids resolved from the local cache. Offline: nothing is
//! downloaded here.

use std::path::{Path, PathBuf};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};

/// Weight files looked for in a model folder, best first.
const WEIGHT_FILES: [&str; 7] = [
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
    "model.pt",
    "model.pth",
    "model.gguf",
];

/// Files carried along with the weights when a folder is migrated.
pub const COMPANION_FILES: [&str; 8] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
    "tokenizer.model",
];

/// Opens the weights of a Hugging Face model folder, with its config and tokenizer files
/// listed as companions.
pub fn open_folder(dir: &Path) -> Result<Checkpoint> {
    let weights = match WEIGHT_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
    {
        Some(p) => Some(p),
        None => single_weight_file(dir)?,
    };
    let weights = weights.ok_or_else(|| {
        Error::malformed(
            dir,
            format!(
                "no weights found in this folder (looked for {})",
                WEIGHT_FILES.join(", ")
            ),
        )
    })?;
    let mut ck = crate::formats::open_file(&weights)?;
    ck.companions = COMPANION_FILES
        .iter()
        .map(|f| dir.join(f))
        .filter(|p| p.is_file())
        .collect();
    Ok(ck)
}

/// A folder holding exactly one `*.safetensors` or `*.gguf` file. Shards of a set without
/// its index are an error: a partial set (an interrupted write) must not open as a smaller
/// model.
fn single_weight_file(dir: &Path) -> Result<Option<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    let found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "safetensors" || e == "gguf")
        })
        .collect();
    let shard = found.iter().find_map(|p| {
        let name = p.file_name()?.to_string_lossy().to_string();
        let (_, count) = crate::formats::sharded::shard_number(&name)?;
        (count > 1).then_some((name, count))
    });
    if let Some((name, count)) = shard {
        return Err(Error::malformed(
            dir,
            format!(
                "holds `{name}`, a shard of a set of {count}, but no index (model.safetensors.index.json): \
                 a partial set, perhaps an interrupted write, is not opened as a model. Write the model \
                 again, or open one shard by its own path"
            ),
        ));
    }
    Ok((found.len() == 1).then(|| found[0].clone()))
}

/// The hub cache root: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn cache_root() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("HF_HOME") {
        return Some(PathBuf::from(p).join("hub"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
}

/// Whether `s` looks like a hub id (`org/name` or `name`, optionally `@revision`).
pub fn is_hub_id(s: &str) -> bool {
    let id = s.split('@').next().unwrap_or(s);
    let parts: Vec<&str> = id.split('/').collect();
    (1..=2).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && p != &"."
                && p != &".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// Resolves a hub id (`org/name[@revision]`) to its snapshot folder in the local cache,
/// following `refs/<revision>` (default `main`). `Ok(None)` when `s` is not a hub id or is
/// not cached; an error when the cache is inconsistent.
pub fn resolve_cached(s: &str) -> Result<Option<PathBuf>> {
    if !is_hub_id(s) {
        return Ok(None);
    }
    let Some(root) = cache_root() else {
        return Ok(None);
    };
    resolve_in(&root, s)
}

/// `org/name@rev` -> (`org/name`, `rev`), `main` by default.
fn split_revision(s: &str) -> (&str, &str) {
    s.split_once('@').unwrap_or((s, "main"))
}

/// [`resolve_cached`] against an explicit cache root.
pub fn resolve_in(root: &Path, s: &str) -> Result<Option<PathBuf>> {
    let (id, rev) = split_revision(s);
    let repo = root.join(format!("models--{}", id.replace('/', "--")));
    if !repo.is_dir() {
        return Ok(None);
    }
    let ref_file = repo.join("refs").join(rev);
    let commit = if ref_file.is_file() {
        std::fs::read_to_string(&ref_file)
            .map_err(|e| Error::io(&ref_file, e))?
            .trim()
            .to_string()
    } else {
        rev.to_string()
    };
    let snap = repo.join("snapshots").join(&commit);
    if snap.is_dir() {
        Ok(Some(snap))
    } else {
        Err(Error::malformed(
            &repo,
            format!("revision `{rev}` ({commit}) is not in the local cache; fetch it with `huggingface-cli download {id}` or pass --online"),
        ))
    }
}

/// Downloads a hub model (`org/name[@revision]`) into the local cache, as `huggingface-cli`
/// would, and returns its snapshot folder: the weights (every shard of a sharded index) and the
/// companion files that exist. Honours `HF_ENDPOINT` and `HF_TOKEN`. Only called when the user
/// asks for it (`--online`); nothing else in ferry touches the network.
#[cfg(feature = "online")]
pub fn download(s: &str) -> Result<PathBuf> {
    use hf_hub::api::sync::{ApiBuilder, ApiError};
    use hf_hub::{Repo, RepoType};
    use std::io::IsTerminal;

    let (id, rev) = split_revision(s);
    let net =
        |e: ApiError| Error::Invalid(format!("downloading `{s}` from the Hugging Face Hub: {e}"));
    let not_found = |e: &ApiError| matches!(e, ApiError::RequestError(r) if r.to_string().contains("status code 404"));
    let mut builder = ApiBuilder::from_env().with_progress(std::io::stderr().is_terminal());
    if let Some(root) = cache_root() {
        builder = builder.with_cache_dir(root);
    }
    let repo = builder.build().map_err(net)?.repo(Repo::with_revision(
        id.to_string(),
        RepoType::Model,
        rev.to_string(),
    ));
    let mut weights = None;
    for f in WEIGHT_FILES {
        match repo.get(f) {
            Ok(p) => {
                weights = Some((f, p));
                break;
            }
            Err(e) if not_found(&e) => continue,
            Err(e) => return Err(net(e)),
        }
    }
    let (name, path) = weights.ok_or_else(|| {
        Error::Invalid(format!(
            "`{s}` on the Hub has none of {}",
            WEIGHT_FILES.join(", ")
        ))
    })?;
    if name.ends_with(".index.json") {
        let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let index: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| Error::malformed(&path, e.to_string()))?;
        let shards: std::collections::BTreeSet<&str> = index["weight_map"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        for shard in shards {
            repo.get(shard).map_err(net)?;
        }
    }
    for f in COMPANION_FILES {
        match repo.get(f) {
            Ok(_) => {}
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(net(e)),
        }
    }
    Ok(path.parent().map(Path::to_path_buf).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids() {
        assert!(is_hub_id("sentence-transformers/all-MiniLM-L6-v2"));
        assert!(is_hub_id("gpt2@main"));
        assert!(!is_hub_id("../x"));
        assert!(!is_hub_id("a/b/c"));
    }

    #[test]
    fn resolves_refs_in_a_cache_layout() {
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("models--org--m");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        let p = resolve_in(root.path(), "org/m").unwrap().unwrap();
        assert!(p.ends_with("snapshots/abc123"));
        assert!(resolve_in(root.path(), "org/other").unwrap().is_none());
        assert!(resolve_in(root.path(), "org/m@v2").is_err());
        // A commit hash as the revision: huggingface-cli caches it without a ref file.
        let p = resolve_in(root.path(), "org/m@abc123").unwrap().unwrap();
        assert!(p.ends_with("snapshots/abc123"));
    }
}
