//! The small real model `ferry migrate` runs on when given no input, so a newcomer sees the
//! whole pipeline at once: a language identifier over 47 languages trained by ferry itself
//! (`configs/langid-demo.toml`, made by `scripts/make_langid_demo.sh`; see
//! `fixtures/langid-demo/README.md`).

use std::path::Path;

/// The name the embedded model is reported under.
pub const EMBEDDED_NAME: &str = "embedded:langid-demo";

/// The files of the embedded model folder: its card, weights and tokenizer.
static FILES: &[(&str, &[u8])] = &[
    (
        "ferry-model.json",
        include_bytes!("../../../fixtures/langid-demo/ferry-model.json"),
    ),
    (
        "model.safetensors",
        include_bytes!("../../../fixtures/langid-demo/model.safetensors"),
    ),
    (
        "tokenizer.json",
        include_bytes!("../../../fixtures/langid-demo/tokenizer.json"),
    ),
];

/// The embedded model folder's files, by name.
pub fn embedded_default() -> &'static [(&'static str, &'static [u8])] {
    FILES
}

/// Writes the embedded model folder into `dir` (which must exist).
pub fn write_embedded(dir: &Path) -> std::io::Result<()> {
    for (name, bytes) in FILES {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}
