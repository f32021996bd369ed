//! Errors of graph reading, checking, running and rewriting.

/// A ferry-graph error. Messages name the file, the node and its op where one is involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read, parsed or written.
    #[error(transparent)]
    File(#[from] ferry_io::FileError),
    /// A node could not be run or rewritten.
    #[error("node `{node}` ({op}): {msg}")]
    Node {
        /// The node's name.
        node: String,
        /// Its op type.
        op: String,
        /// What is wrong.
        msg: String,
    },
    /// The graph uses ops the executor does not implement (all of them, listed at once).
    #[error("{} unsupported op(s), nothing was run:\n{}", .0.len(), .0.join("\n"))]
    Unsupported(Vec<String>),
    /// The graph is inconsistent (`Graph::validate` says how).
    #[error("invalid graph: {0}")]
    Invalid(String),
    /// A node would materialize a tensor larger than the memory budget; nothing was allocated.
    #[error("node `{node}` ({op}): {exceeded}")]
    NodeOverBudget {
        /// The node's name.
        node: String,
        /// Its op type.
        op: String,
        /// What it would have allocated.
        exceeded: Box<BudgetExceeded>,
    },
    /// An input made up from the graph's declared dimensions (for a probe or a verification
    /// run, see [`crate::verify::synth_inputs`]) would be larger than the memory budget.
    #[error("seeded input `{input}`: {exceeded}")]
    InputOverBudget {
        /// The graph input.
        input: String,
        /// What it would have allocated.
        exceeded: Box<BudgetExceeded>,
    },
    /// A tensor error from ferry-io.
    #[error(transparent)]
    Io(#[from] ferry_io::Error),
    /// A candle error outside any node.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

ferry_io::file_error_constructors!(Error);

/// A tensor over the executor's memory budget ([`crate::exec::MemoryBudget`]), found before it
/// was allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} {shape:?} {} would take {}, over the memory budget of {} per tensor; nothing was \
     allocated. If the model is trusted and the machine has the memory, raise the budget: \
     {}=BYTES (e.g. 16GiB)",
    dtype.as_str(),
    show_bytes(*bytes),
    ferry_io::units::human(*budget),
    ferry_io::budget::TENSOR.env
)]
pub struct BudgetExceeded {
    /// Which tensor, in words ("its output", "its padded input").
    pub what: &'static str,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its element type.
    pub dtype: candle_core::DType,
    /// Its size in bytes; `None` past `u128::MAX`.
    pub bytes: Option<u128>,
    /// The budget, in bytes.
    pub budget: u64,
}

impl BudgetExceeded {
    /// Its size in words: `16.0 GiB (17179869184 bytes)`.
    pub fn size(&self) -> String {
        show_bytes(self.bytes)
    }
}

fn show_bytes(bytes: Option<u128>) -> String {
    match bytes {
        Some(b) => match u64::try_from(b) {
            Ok(b) => format!("{} ({b} bytes)", ferry_io::units::human(b)),
            Err(_) => format!("{b} bytes"),
        },
        None => "more than 2^128 bytes".into(),
    }
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
