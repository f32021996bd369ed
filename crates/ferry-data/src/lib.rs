//! ferry-data: multilingual text from files to padded candle batches.
//!
//! - [`corpus`]: streaming readers for TSV/CSV, JSONL, Moses-style parallel files, a folder
//!   per language and Parquet (`.gz` read transparently), every record keeping its language;
//!   malformed lines are counted with file:line in an [`issues::IssueLog`], or fail the read.
//! - [`tokenize`]: Hugging Face `tokenizer.json` loading, parallel encoding in a caller-sized
//!   pool, BPE/Unigram/WordPiece training on language-balanced samples, and a torchtext-style
//!   basic tokenizer with a vocabulary builder.
//! - [`sampling`]: exponent-smoothed language sampling (XLM-R's alpha) with serializable state.
//! - [`batch`]: fixed-size or token-budget batches, length bucketing, padding and masks,
//!   language tags, as candle tensors.
//! - [`stream`]: corpora larger than memory: a folder per language read in blocks, languages
//!   drawn by the sampler, batches bucketed within a bounded window, positions that resume.
//! - [`stats`]: per-language counts, token counts, length histograms and scripts.
//! - [`families`]: the family and usual script of common language codes, for grouped reports.

pub mod batch;
pub mod corpus;
pub mod encode;
pub mod error;
pub mod families;
pub mod issues;
pub mod lang;
pub mod record;
pub mod rng;
pub mod sampling;
pub mod script;
pub mod stats;
pub mod stream;
pub mod tokenize;

pub use error::{Error, Result};
pub use record::{Location, Record};
