//! Training data larger than memory. A corpus is streamed from a folder per language
//! ([`index`]: counted once; [`shard`] makes one from any corpus ferry reads): the language
//! sampler picks a language per draw, that language's [`reader`] gives its next record (its
//! files in order, shuffled a block at a time), and a [`window`] of draws is encoded,
//! bucketed by length and cut into batches. Every position serializes, so a resumed run
//! continues exactly.
//!
//! Memory bound: `window + languages x block` records of text at once (the
//! [`window::StreamConfig`] defaults: 8,192 + 1,024 per language), the window's encodings
//! (with snippet augmentation, a window's records plus their snippets), and a read buffer per
//! language (64 KiB; twice that and the inflater's state for a gzipped shard); nothing grows
//! with the corpus. Each language keeps one file open while it is read (and `write_shards`
//! one per language), so a corpus of more languages than the open-file limit needs it raised.
//! A single line is read whole: a shard without line breaks is held as one record.

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
