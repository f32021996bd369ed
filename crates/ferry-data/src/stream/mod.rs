//! Training data larger than memory. A corpus is streamed from a folder per language
//! ([`index`]: counted once; [`shard`] makes one from any corpus ferry reads): the language
//! sampler picks a language per draw, that language's [`reader`] gives its next record (its
//! files in order, shuffled a block at a time), and a [`window`] of draws is encoded,
//! bucketed by length and cut into batches. Every position serializes, so a resumed run
//! continues exactly.
//!
//! Memory bound: `window + languages x block` records of text at once (the
//! [`window::StreamConfig`] defaults: 8,192 + 1,024 per language), the window's encodings,
//! and a 64 KiB read buffer per language; nothing grows with the corpus.

pub mod draws;
pub mod index;
pub mod reader;
pub mod shard;
pub mod window;

pub use draws::Draws;
pub use index::{is_sharded, ShardIndex};
pub use reader::{LangReader, ReaderState};
pub use shard::write_shards;
pub use window::{StreamConfig, StreamState, WindowStream};
