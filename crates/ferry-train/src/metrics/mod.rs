//! Evaluation metrics: classification per language (accuracy, macro-F1, confusion), and
//! sacreBLEU-compatible chrF and BLEU for translation.

pub mod bleu;
pub mod chrf;
pub mod classification;
