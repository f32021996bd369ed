//! Batching: fixed-size or token-budget batches, length bucketing, seeded shuffling, padding
//! on either side to an optional multiple, attention masks and language tags, as candle
//! tensors on a chosen device.

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::lang::LangTagStyle;
use crate::rng::Rng;

/// One encoded example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Source token ids.
    pub ids: Vec<u32>,
    /// Its language.
    pub lang: String,
    /// A class id, for classification.
    pub label: Option<u32>,
    /// Target token ids, for translation.
    pub target: Option<Vec<u32>>,
}

/// How big a batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    /// A fixed number of examples.
    Examples(usize),
    /// At most this many tokens, padding included (batch size x padded length).
    MaxTokens(usize),
}

/// Which side gets the padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PadSide {
    /// Tokens first, then padding (encoders, most models).
    #[default]
    Right,
    /// Padding first (decoder-only generation).
    Left,
}

impl std::str::FromStr for PadSide {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "right" => Ok(PadSide::Right),
            "left" => Ok(PadSide::Left),
            _ => Err(format!("unknown padding side {s:?}: use right or left")),
        }
    }
}

/// Batching settings.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Batch size rule.
    pub size: BatchSize,
    /// Sort examples by length before cutting batches, so each batch holds similar lengths
    /// (less padding).
    pub bucket: bool,
    /// Shuffle (examples before bucketing, and the order of the batches) with this seed.
    pub shuffle: Option<u64>,
    /// The padding token id.
    pub pad_id: u32,
    /// Padding side.
    pub side: PadSide,
    /// Round the padded length up to a multiple of this (tensor cores like 8).
    pub pad_to_multiple_of: Option<usize>,
}

impl BatchConfig {
    fn padded(&self, len: usize) -> usize {
        match self.pad_to_multiple_of {
            Some(m) if m > 1 => len.div_ceil(m) * m,
            _ => len,
        }
    }
}

/// Adds a language tag token to encoded ids, fairseq style (`__en__` first) or mBART style
/// (`en_XX` last on the source, first on the target).
pub fn add_lang_tag(ids: &mut Vec<u32>, tag_id: u32, style: &LangTagStyle, is_target: bool) {
    match (style, is_target) {
        (LangTagStyle::Mbart, false) => ids.push(tag_id),
        _ => ids.insert(0, tag_id),
    }
}

/// Cuts examples of the given lengths into batches (lists of example indices). With a token
/// budget, a batch grows while `examples x padded max length` stays within it; an example
/// longer than the budget alone forms a batch of one. Deterministic for a given seed.
pub fn plan(lengths: &[usize], cfg: &BatchConfig) -> Result<Vec<Vec<usize>>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    let mut rng = cfg.shuffle.map(Rng::new);
    if let Some(r) = rng.as_mut() {
        r.shuffle(&mut order);
    }
    if cfg.bucket {
        order.sort_by_key(|&i| lengths[i]);
    }
    let mut batches = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut cur_max = 0usize;
    for i in order {
        let fits = match cfg.size {
            BatchSize::Examples(0) | BatchSize::MaxTokens(0) => {
                return Err(Error::Invalid("a batch size of 0 holds nothing".into()))
            }
            BatchSize::Examples(n) => cur.len() < n,
            BatchSize::MaxTokens(budget) => {
                let m = cfg.padded(cur_max.max(lengths[i]));
                (cur.len() + 1) * m <= budget
            }
        };
        if !fits && !cur.is_empty() {
            batches.push(std::mem::take(&mut cur));
            cur_max = 0;
        }
        cur_max = cur_max.max(lengths[i]);
        cur.push(i);
    }
    if !cur.is_empty() {
        batches.push(cur);
    }
    if let Some(r) = rng.as_mut() {
        r.shuffle(&mut batches);
    }
    Ok(batches)
}

/// A padded batch.
#[derive(Debug)]
pub struct Batch {
    /// Token ids, `[batch, len]`, u32.
    pub input_ids: Tensor,
    /// 1 for tokens, 0 for padding, `[batch, len]`, u8.
    pub attention_mask: Tensor,
    /// Class ids, `[batch]`, u32, when every example has one.
    pub labels: Option<Tensor>,
    /// Target ids `[batch, target_len]` (right-padded), for translation.
    pub target_ids: Option<Tensor>,
    /// The target mask, like `attention_mask`.
    pub target_mask: Option<Tensor>,
    /// The language of each row.
    pub langs: Vec<String>,
    /// Real (non-pad) tokens in `input_ids`.
    pub tokens: usize,
}

/// Pads `rows` to a `[rows, len]` id matrix and mask.
fn pad(rows: &[&[u32]], cfg: &BatchConfig, side: PadSide) -> (Vec<u32>, Vec<u8>, usize) {
    let len = cfg.padded(rows.iter().map(|r| r.len()).max().unwrap_or(0));
    let mut ids = vec![cfg.pad_id; rows.len() * len];
    let mut mask = vec![0u8; rows.len() * len];
    for (i, r) in rows.iter().enumerate() {
        let start = i * len
            + if side == PadSide::Left {
                len - r.len()
            } else {
                0
            };
        ids[start..start + r.len()].copy_from_slice(r);
        mask[start..start + r.len()].fill(1);
    }
    (ids, mask, len)
}

/// Builds the tensors of one batch on `device`.
pub fn collate(examples: &[&Example], cfg: &BatchConfig, device: &Device) -> Result<Batch> {
    let n = examples.len();
    let rows: Vec<&[u32]> = examples.iter().map(|e| e.ids.as_slice()).collect();
    let (ids, mask, len) = pad(&rows, cfg, cfg.side);
    let tokens = rows.iter().map(|r| r.len()).sum();
    let labels = match examples
        .iter()
        .map(|e| e.label)
        .collect::<Option<Vec<u32>>>()
    {
        Some(l) if n > 0 => Some(Tensor::from_vec(l, n, device)?),
        _ => None,
    };
    let (target_ids, target_mask) = match examples
        .iter()
        .map(|e| e.target.as_deref())
        .collect::<Option<Vec<&[u32]>>>()
    {
        Some(t) if n > 0 => {
            let (tid, tmask, tlen) = pad(&t, cfg, PadSide::Right);
            (
                Some(Tensor::from_vec(tid, (n, tlen), device)?),
                Some(Tensor::from_vec(tmask, (n, tlen), device)?),
            )
        }
        _ => (None, None),
    };
    Ok(Batch {
        input_ids: Tensor::from_vec(ids, (n, len), device)?,
        attention_mask: Tensor::from_vec(mask, (n, len), device)?,
        labels,
        target_ids,
        target_mask,
        langs: examples.iter().map(|e| e.lang.clone()).collect(),
        tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(size: BatchSize) -> BatchConfig {
        BatchConfig {
            size,
            bucket: true,
            shuffle: None,
            pad_id: 0,
            side: PadSide::Right,
            pad_to_multiple_of: None,
        }
    }

    #[test]
    fn token_budget_and_bucketing() {
        let lengths = [5, 1, 9, 3, 3, 20, 2];
        let b = plan(&lengths, &cfg(BatchSize::MaxTokens(10))).unwrap();
        // Sorted: 1,2,3,3,5,9,20 -> [1,2,3] (3x3=9), [3,5]? 2x5=10, [9], [20] (alone, oversized)
        let lens: Vec<Vec<usize>> = b
            .iter()
            .map(|x| x.iter().map(|&i| lengths[i]).collect())
            .collect();
        assert_eq!(lens, vec![vec![1, 2, 3], vec![3, 5], vec![9], vec![20]]);
        for batch in &b[..3] {
            let m = batch.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(batch.len() * m <= 10);
        }
        let mut all: Vec<usize> = b.concat();
        all.sort();
        assert_eq!(all, (0..7).collect::<Vec<_>>());
    }

    #[test]
    fn fixed_size_shuffle_is_seeded() {
        let lengths: Vec<usize> = (0..100).map(|i| i % 13 + 1).collect();
        let mut c = cfg(BatchSize::Examples(8));
        c.shuffle = Some(4);
        let a = plan(&lengths, &c).unwrap();
        assert_eq!(a, plan(&lengths, &c).unwrap());
        assert_eq!(a.len(), 13);
        c.shuffle = Some(5);
        assert_ne!(a, plan(&lengths, &c).unwrap());
        assert!(plan(&lengths, &cfg(BatchSize::Examples(0))).is_err());
    }

    #[test]
    fn padding_masks_and_tags() {
        let mut e1 = Example {
            ids: vec![5, 6, 7],
            lang: "en".into(),
            label: Some(1),
            target: Some(vec![9]),
        };
        let e2 = Example {
            ids: vec![8],
            lang: "de".into(),
            label: Some(0),
            target: Some(vec![9, 9, 9]),
        };
        add_lang_tag(&mut e1.ids, 42, &LangTagStyle::Fairseq, false);
        assert_eq!(e1.ids, [42, 5, 6, 7]);
        let mut c = cfg(BatchSize::Examples(2));
        c.pad_id = 1;
        c.pad_to_multiple_of = Some(8);
        let b = collate(&[&e1, &e2], &c, &Device::Cpu).unwrap();
        assert_eq!(b.input_ids.dims(), [2, 8]);
        let ids = b.input_ids.to_vec2::<u32>().unwrap();
        assert_eq!(ids[1], [8, 1, 1, 1, 1, 1, 1, 1]);
        let mask = b.attention_mask.to_vec2::<u8>().unwrap();
        assert_eq!(mask[0], [1, 1, 1, 1, 0, 0, 0, 0]);
        assert_eq!(b.tokens, 5);
        assert_eq!(b.labels.unwrap().to_vec1::<u32>().unwrap(), [1, 0]);
        assert_eq!(
            b.target_ids.unwrap().dims(),
            [2, 8],
            "targets are padded to the multiple too"
        );
        c.side = PadSide::Left;
        let b = collate(&[&e1, &e2], &c, &Device::Cpu).unwrap();
        assert_eq!(
            b.input_ids.to_vec2::<u32>().unwrap()[1],
            [1, 1, 1, 1, 1, 1, 1, 8]
        );
        let mut ids = vec![5, 6];
        add_lang_tag(&mut ids, 7, &LangTagStyle::Mbart, false);
        assert_eq!(ids, [5, 6, 7]);
    }
}
