//! Evaluation metrics: classification per language (accuracy, macro-F1, confusion), and
//! sacreBLEU-compatible chrF and BLEU for translation, scored per language by
//! [`translation`] (what `ferry eval --translations` reports).

pub mod bleu;
pub mod chrf;
pub mod classification;
pub mod translation;
