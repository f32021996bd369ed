//! Tokenization: Hugging Face tokenizers (load, encode in parallel, train) and a
//! torchtext-style basic tokenizer with a vocabulary, and hashed character n-grams.

pub mod basic;
mod hf;
pub mod ngrams;
pub mod train;

pub use hf::{thread_pool, Tokenizer};
pub use ngrams::CharNgrams;
