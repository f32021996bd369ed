//! Errors of graph reading, checking, running and rewriting.

use std::path::PathBuf;

/// A ferry-graph error. Messages name the file, the node and its op where one is involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read, parsed or written.
    #[error("{}: {msg}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
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
    /// The graph is inconsistent (see [`crate::ir::Graph::validate`]).
    #[error("invalid graph: {0}")]
    Invalid(String),
    /// A tensor error from ferry-io.
    #[error(transparent)]
    Io(#[from] ferry_io::Error),
    /// A candle error outside any node.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// An error about `path`.
    pub fn file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::File {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// An error about `node`.
    pub fn node(node: &crate::ir::Node, msg: impl Into<String>) -> Self {
        Error::Node {
            node: node.name.clone(),
            op: node.op_type.clone(),
            msg: msg.into(),
        }
    }
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
