//! Errors of the device layer.

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A device name that is not `cpu`, `cuda:N` or `metal:N`.
    #[error("device `{spec}`: {msg}")]
    Spec {
        /// The name as given.
        spec: String,
        /// Why it does not parse.
        msg: String,
    },
    /// A device whose backend this build does not have.
    #[error("device `{spec}` needs ferry built with the `{feature}` feature: {how}")]
    NotCompiled {
        /// The device asked for.
        spec: String,
        /// The Cargo feature (`cuda`, `metal`).
        feature: &'static str,
        /// How to build it.
        how: &'static str,
    },
    /// The backend is there, the device is not (no driver, no such index).
    #[error("device `{spec}` cannot be opened: {msg}")]
    Open {
        /// The device asked for.
        spec: String,
        /// candle's or the driver's message.
        msg: String,
    },
    /// A bad planning option (`--map`, `--max-memory`...).
    #[error("{0}")]
    Option(String),
    /// The model does not fit the devices.
    #[error("{0}")]
    DoesNotFit(String),
}

/// Results of the device layer.
pub type Result<T> = std::result::Result<T, Error>;
