//! The small real model `ferry migrate` runs on when given no input, so a newcomer sees the
//! whole pipeline at once. Made by PyTorch through `scripts/make_fixtures.py`; see
//! `fixtures/default/README.md`.

/// File name the embedded model is reported under.
pub const EMBEDDED_NAME: &str = "default-model.pth";

static DEFAULT_MODEL: &[u8] = include_bytes!("../../../fixtures/default/model.pth");

/// The bytes of the embedded default model (a PyTorch zip checkpoint).
pub fn embedded_default() -> &'static [u8] {
    DEFAULT_MODEL
}
