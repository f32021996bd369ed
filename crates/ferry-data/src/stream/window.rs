//! Batches from a sharded corpus, streamed: the language sampler picks a language per draw,
//! that language's [`LangReader`] gives its next record; a window of draws is encoded, sorted
//! by length and cut into batches whose order is shuffled (fairseq's bucketing, within a
//! bounded window instead of the whole corpus). The position ([`StreamState`]: sampler and
//! readers at the window's start, and the batches of it already given) serializes, so a
//! resumed run gets exactly the batches it would have.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::draws::Draws;
use super::index::ShardIndex;
use super::reader::ReaderState;
use crate::batch::{plan, BatchConfig, BatchSize, Example, PadSide};
use crate::error::{Error, Result};
use crate::record::Record;
use crate::rng::Rng;
use crate::sampling::{SamplerConfig, SamplerState};

/// How a corpus is streamed. Memory held: a block of records per language plus one window
/// of records and their encodings (see [`StreamConfig::held_records`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Records drawn, encoded and bucketed by length together.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Records of one language shuffled together (read a block at a time).
    #[serde(default = "default_block")]
    pub block: usize,
}

fn default_window() -> usize {
    8192
}
fn default_block() -> usize {
    1024
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            window: default_window(),
            block: default_block(),
        }
    }
}

impl StreamConfig {
    /// The most records held at once over `languages` languages: a block per language and a
    /// window (the memory bound is this times the longest record, plus the window's encoding).
    pub fn held_records(&self, languages: usize) -> usize {
        self.window + languages * self.block
    }
}

/// Where a [`WindowStream`] stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamState {
    /// The sampler at the start of the current window.
    pub sampler: SamplerState,
    /// Each language's reader at the start of the current window.
    pub readers: Vec<ReaderState>,
    /// Windows drawn before the current one.
    pub window: u64,
    /// Batches of the current window already given.
    pub batch: usize,
    /// The languages the readers read, in order: a restore into other languages is refused.
    #[serde(default)]
    pub languages: Vec<String>,
    /// (window, block, batch size, seed) the batches were made with: a restore with others
    /// is refused (it would resume with other batches).
    #[serde(default)]
    pub settings: Option<(usize, usize, usize, u64)>,
}

/// Batches streamed from a sharded corpus; see the module documentation.
pub struct WindowStream {
    cfg: StreamConfig,
    batch_size: usize,
    seed: u64,
    draws: Draws,
    /// The position at the start of the current window.
    start: StreamState,
    /// Batches of the current window not yet given.
    pending: VecDeque<Vec<Example>>,
    /// Batches to drop from the next window drawn (a restored position).
    skip: usize,
}

impl WindowStream {
    /// Streams `index` in batches of `batch_size` examples, languages drawn with smoothing
    /// exponent `alpha`, everything seeded by `seed`.
    pub fn new(
        index: &ShardIndex,
        cfg: StreamConfig,
        batch_size: usize,
        alpha: f64,
        seed: u64,
    ) -> Result<Self> {
        if cfg.window == 0 || cfg.block == 0 || batch_size == 0 {
            return Err(Error::Invalid(
                "a stream window, block and batch size must be at least 1".into(),
            ));
        }
        let draws = Draws::new(index, SamplerConfig::epochs(alpha, seed), cfg.block)?;
        let (sampler, readers) = draws.state();
        let start = StreamState {
            sampler,
            readers,
            window: 0,
            batch: 0,
            languages: index.languages(),
            settings: Some((cfg.window, cfg.block, batch_size, seed)),
        };
        Ok(WindowStream {
            cfg,
            batch_size,
            seed,
            draws,
            start,
            pending: VecDeque::new(),
            skip: 0,
        })
    }

    /// The position (serialize it to resume).
    pub fn state(&self) -> StreamState {
        if self.pending.is_empty() && self.skip == 0 {
            // The window is used up: the next one starts where the sampler and readers are.
            let (sampler, readers) = self.draws.state();
            return StreamState {
                sampler,
                readers,
                window: self.start.window + u64::from(self.start.batch > 0),
                batch: 0,
                languages: self.start.languages.clone(),
                settings: self.start.settings,
            };
        }
        self.start.clone()
    }

    /// Continues from a saved position (made by a stream over the same index and settings).
    pub fn restore(&mut self, state: StreamState) -> Result<()> {
        if !state.languages.is_empty() && state.languages != self.start.languages {
            return Err(Error::Invalid(format!(
                "the saved stream read the languages {:?}, this corpus has {:?}: the data or \
                 [data] languages changed since the run started",
                state.languages, self.start.languages
            )));
        }
        if let (Some((w, b, n, s)), Some(now)) = (state.settings, self.start.settings) {
            if (w, b, n, s) != now {
                return Err(Error::Invalid(format!(
                    "the run streamed with window {w}, block {b}, batch size {n}, seed {s}; \
                     the config now says window {}, block {}, batch size {}, seed {}: resuming \
                     would draw other batches",
                    now.0, now.1, now.2, now.3
                )));
            }
        }
        self.draws.restore(state.sampler.clone(), &state.readers)?;
        // The window is redrawn from `state` and its first `batch` batches dropped; until
        // then the saved position stands as it was.
        self.skip = state.batch;
        let (languages, settings) = (self.start.languages.clone(), self.start.settings);
        self.start = StreamState {
            languages,
            settings,
            ..state
        };
        self.pending.clear();
        Ok(())
    }

    /// The sampler's epoch (how many times every language has been drawn as often as it has
    /// records).
    pub fn epoch(&self) -> u64 {
        self.draws.epoch()
    }

    /// The next batch; `encode` turns a window of records into examples (it may return more
    /// than it got, e.g. snippets, or fewer).
    pub fn next_batch<E: From<Error>>(
        &mut self,
        mut encode: impl FnMut(Vec<Record>) -> Result<Vec<Example>, E>,
    ) -> Result<Vec<Example>, E> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                self.start.batch += 1;
                return Ok(b);
            }
            self.draw_window(&mut encode)?;
        }
    }

    fn draw_window<E: From<Error>>(
        &mut self,
        encode: &mut impl FnMut(Vec<Record>) -> Result<Vec<Example>, E>,
    ) -> Result<(), E> {
        let start = self.state();
        let mut records = Vec::with_capacity(self.cfg.window);
        while records.len() < self.cfg.window {
            records.push(self.draws.next_record_endless()?);
        }
        let examples = encode(records)?;
        if examples.is_empty() {
            return Err(
                Error::Invalid("a window of the stream encoded to no examples".into()).into(),
            );
        }
        let lengths: Vec<usize> = examples.iter().map(|e| e.ids.len()).collect();
        let bcfg = BatchConfig {
            size: BatchSize::Examples(self.batch_size),
            bucket: true,
            shuffle: Some(Rng::derived(self.seed, u64::MAX, start.window).next_u64()),
            pad_id: 0,
            side: PadSide::Right,
            pad_to_multiple_of: None,
        };
        let mut slots: Vec<Option<Example>> = examples.into_iter().map(Some).collect();
        let mut batches: VecDeque<Vec<Example>> = plan(&lengths, &bcfg)?
            .into_iter()
            .map(|b| b.into_iter().filter_map(|i| slots[i].take()).collect())
            .collect();
        let skip = std::mem::take(&mut self.skip);
        if skip > batches.len() {
            return Err(Error::Invalid(format!(
                "the saved stream position is batch {skip} of a window of {}: the data or the \
                 settings changed",
                batches.len()
            ))
            .into());
        }
        batches.drain(..skip);
        self.start = StreamState {
            batch: skip,
            ..start
        };
        self.pending = batches;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(dir: &std::path::Path) -> ShardIndex {
        for (lang, n) in [("de", 50), ("en", 200), ("fi", 9)] {
            std::fs::create_dir_all(dir.join(lang)).unwrap();
            let text: String = (0..n)
                .map(|i| format!("{lang} {}\n", "w ".repeat(i % 13 + 1)))
                .collect();
            std::fs::write(dir.join(lang).join("part-0.txt"), text).unwrap();
        }
        ShardIndex::scan(dir, |_| {}).unwrap()
    }

    fn encode(records: Vec<Record>) -> Result<Vec<Example>> {
        Ok(records
            .into_iter()
            .map(|r| Example {
                ids: r.text.split(' ').map(|w| w.len() as u32).collect(),
                lang: r.lang,
                label: None,
                target: None,
            })
            .collect())
    }

    fn cfg() -> StreamConfig {
        StreamConfig {
            window: 40,
            block: 16,
        }
    }

    #[test]
    fn windows_bucket_by_length_and_resume_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let index = corpus(dir.path());
        let mut s = WindowStream::new(&index, cfg(), 8, 0.3, 5).unwrap();
        let whole: Vec<Vec<Example>> = (0..40).map(|_| s.next_batch(encode).unwrap()).collect();
        // Within a window, batches hold examples of similar length.
        let spread: usize = whole[..5]
            .iter()
            .map(|b| {
                let l: Vec<usize> = b.iter().map(|e| e.ids.len()).collect();
                l.iter().max().unwrap() - l.iter().min().unwrap()
            })
            .sum();
        assert!(spread <= 12, "bucketed batches: spread {spread}");
        let fi = whole.iter().flatten().filter(|e| e.lang == "fi").count();
        // Natural share: 9 of 259 records (11 of 320 draws); alpha 0.3 gives it ~19%.
        assert!(
            fi > 30,
            "alpha 0.3 oversamples the small language, which wraps: {fi}"
        );
        for cut in [0, 1, 4, 5, 6, 17, 39] {
            let mut a = WindowStream::new(&index, cfg(), 8, 0.3, 5).unwrap();
            let mut got: Vec<Vec<Example>> =
                (0..cut).map(|_| a.next_batch(encode).unwrap()).collect();
            let saved = serde_json::to_string(&a.state()).unwrap();
            let mut b = WindowStream::new(&index, cfg(), 8, 0.3, 5).unwrap();
            b.restore(serde_json::from_str(&saved).unwrap()).unwrap();
            got.extend((cut..40).map(|_| b.next_batch(encode).unwrap()));
            assert_eq!(got, whole, "resumed after {cut} batches");
        }
        // A position saved right after a restore is the restored one.
        let mut a = WindowStream::new(&index, cfg(), 8, 0.3, 5).unwrap();
        (0..6).for_each(|_| drop(a.next_batch(encode).unwrap()));
        let saved = a.state();
        assert!(saved.batch > 0, "mid-window");
        let mut b = WindowStream::new(&index, cfg(), 8, 0.3, 5).unwrap();
        b.restore(saved.clone()).unwrap();
        assert_eq!(b.state(), saved);
        // Other settings, or other languages, are refused.
        let mut c = WindowStream::new(&index, cfg(), 4, 0.3, 5).unwrap();
        let err = c.restore(saved.clone()).unwrap_err().to_string();
        assert!(
            err.contains("batch size 8") && err.contains("batch size 4"),
            "{err}"
        );
        let mut other = saved;
        other.languages[0] = "xx".into();
        let err = b.restore(other).unwrap_err().to_string();
        assert!(err.contains("languages"), "{err}");
    }
}
