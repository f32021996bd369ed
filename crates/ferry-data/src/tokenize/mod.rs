//! Tokenization: Hugging Face tokenizers (load, encode in parallel, train) and a
//! torchtext-style basic tokenizer with a vocabulary.

pub mod basic;
mod hf;
pub mod train;

pub use hf::{thread_pool, Tokenizer};
