//! Language sampling by exponent smoothing: p_i = q_i^alpha / sum_j q_j^alpha, where q_i is
//! language i's share of the examples (XLM-R: alpha = 0.3; fairseq's temperature T = 1/alpha).
//! alpha = 1 keeps the natural mix, alpha = 0 gives every language the same share.
//!
//! A [`LanguageSampler`] draws (language, example) pairs for an epoch, with or without
//! replacement, seeded; its whole position serializes as a [`SamplerState`], so a training
//! run resumes mid-epoch with exactly the draws it would have made.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::record::Record;
use crate::rng::Rng;

/// When an epoch ends (besides reaching [`SamplerConfig::epoch_size`] draws).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stopping {
    /// When the first language has been drawn as many times as it has examples.
    FirstExhausted,
    /// When every language has (smaller ones are oversampled meanwhile).
    AllExhausted,
}

impl std::str::FromStr for Stopping {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "first_exhausted" | "first-exhausted" => Ok(Stopping::FirstExhausted),
            "all_exhausted" | "all-exhausted" => Ok(Stopping::AllExhausted),
            _ => Err(format!(
                "unknown stopping strategy {s:?}: use first_exhausted or all_exhausted"
            )),
        }
    }
}

/// Sampler settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplerConfig {
    /// The smoothing exponent (0 to 1).
    pub alpha: f64,
    /// Draws per epoch ("virtual epoch"); `None`: until the stopping strategy ends it.
    pub epoch_size: Option<u64>,
    /// The stopping strategy.
    pub stopping: Stopping,
    /// Draw examples with replacement (otherwise each language is walked through a seeded
    /// permutation, reshuffled on every pass).
    pub replacement: bool,
    /// The seed.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            alpha: 0.3,
            epoch_size: None,
            stopping: Stopping::AllExhausted,
            replacement: false,
            seed: 0,
        }
    }
}

impl SamplerConfig {
    /// A training run's sampler: natural epochs that end when every language has been drawn
    /// as often as it has examples, each language walked in order or by permutation, no
    /// replacement.
    pub fn epochs(alpha: f64, seed: u64) -> Self {
        SamplerConfig {
            alpha,
            epoch_size: None,
            stopping: Stopping::AllExhausted,
            replacement: false,
            seed,
        }
    }
}

/// Smoothed sampling probabilities for languages with `sizes` examples. Languages with no
/// examples get 0.
pub fn smoothed_probabilities(sizes: &[u64], alpha: f64) -> Vec<f64> {
    let total: u64 = sizes.iter().sum();
    if total == 0 {
        return vec![0.0; sizes.len()];
    }
    let w: Vec<f64> = sizes
        .iter()
        .map(|&n| {
            if n == 0 {
                0.0
            } else {
                (n as f64 / total as f64).powf(alpha)
            }
        })
        .collect();
    let z: f64 = w.iter().sum();
    w.into_iter().map(|x| x / z).collect()
}

/// Items (records, or indices of encoded examples) grouped by language (sorted by code,
/// each group in input order): the lists a [`LanguageSampler`] draws from when the corpus
/// fits in memory.
#[derive(Debug, Clone)]
pub struct ByLanguage<T = Record> {
    langs: Vec<String>,
    groups: Vec<Vec<T>>,
}

impl ByLanguage<Record> {
    /// Groups `records` by their language.
    pub fn new(records: impl IntoIterator<Item = Record>) -> Self {
        ByLanguage::group(records.into_iter().map(|r| (r.lang.clone(), r)))
    }
}

impl<T> ByLanguage<T> {
    /// Groups `(language, item)` pairs by language.
    pub fn group(items: impl IntoIterator<Item = (String, T)>) -> Self {
        let mut map: std::collections::BTreeMap<String, Vec<T>> = Default::default();
        for (lang, item) in items {
            map.entry(lang).or_default().push(item);
        }
        let (langs, groups) = map.into_iter().unzip();
        ByLanguage { langs, groups }
    }

    /// The language codes, sorted; index `l` of a draw `(l, i)` indexes this.
    pub fn languages(&self) -> &[String] {
        &self.langs
    }

    /// Items per language, in [`ByLanguage::languages`] order: the sampler's sizes.
    pub fn sizes(&self) -> Vec<u64> {
        self.groups.iter().map(|g| g.len() as u64).collect()
    }

    /// The item a draw `(language index, example index)` names.
    pub fn get(&self, (lang, example): (usize, u64)) -> &T {
        &self.groups[lang][example as usize]
    }
}

/// Where a language's walk through its examples stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LangCursor {
    /// Completed passes over the language's examples.
    pub pass: u64,
    /// Position in the current pass's permutation.
    pub pos: u64,
    /// Draws of this language in the current epoch.
    pub drawn: u64,
}

/// Everything needed to resume a sampler exactly.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplerState {
    /// The random stream.
    pub rng: Rng,
    /// Epoch number (from 0).
    pub epoch: u64,
    /// Draws so far in this epoch.
    pub drawn: u64,
    /// One cursor per language.
    pub cursors: Vec<LangCursor>,
}

/// Draws (language index, example index) pairs.
#[derive(Debug, Clone)]
pub struct LanguageSampler {
    sizes: Vec<u64>,
    probs: Vec<f64>,
    cfg: SamplerConfig,
    state: SamplerState,
    /// The permutation of the current pass of each language (derived from seed, language and
    /// pass, so it is not part of the state).
    perms: HashMap<usize, (u64, Vec<u32>)>,
}

impl LanguageSampler {
    /// A sampler over languages with `sizes` examples each.
    pub fn new(sizes: Vec<u64>, cfg: SamplerConfig) -> Result<Self> {
        if !(0.0..=1.0).contains(&cfg.alpha) {
            return Err(Error::Invalid(format!(
                "alpha {} is outside [0, 1] (XLM-R uses 0.3)",
                cfg.alpha
            )));
        }
        if sizes.iter().all(|&n| n == 0) {
            return Err(Error::Invalid("no examples to sample from".into()));
        }
        if let Some(n) = sizes.iter().find(|&&n| n > u64::from(u32::MAX)) {
            return Err(Error::Invalid(format!(
                "{n} examples in one language is too many"
            )));
        }
        let probs = smoothed_probabilities(&sizes, cfg.alpha);
        let state = SamplerState {
            rng: Rng::new(cfg.seed),
            epoch: 0,
            drawn: 0,
            cursors: vec![
                LangCursor {
                    pass: 0,
                    pos: 0,
                    drawn: 0
                };
                sizes.len()
            ],
        };
        Ok(LanguageSampler {
            sizes,
            probs,
            cfg,
            state,
            perms: HashMap::new(),
        })
    }

    /// The sampling probability of each language.
    pub fn probabilities(&self) -> &[f64] {
        &self.probs
    }

    /// The current state (serialize it to resume later).
    pub fn state(&self) -> &SamplerState {
        &self.state
    }

    /// Continues from a saved state (made by a sampler with the same sizes and settings).
    pub fn restore(&mut self, state: SamplerState) -> Result<()> {
        if state.cursors.len() != self.sizes.len() {
            return Err(Error::Invalid(format!(
                "the saved sampler state has {} languages, this corpus {}",
                state.cursors.len(),
                self.sizes.len()
            )));
        }
        self.state = state;
        self.perms.clear();
        Ok(())
    }

    /// Starts the next epoch.
    pub fn next_epoch(&mut self) {
        self.state.epoch += 1;
        self.state.drawn = 0;
        for c in &mut self.state.cursors {
            c.drawn = 0;
        }
    }

    fn exhausted(&self, lang: usize) -> bool {
        self.state.cursors[lang].drawn >= self.sizes[lang]
    }

    fn epoch_over(&self) -> bool {
        if self.cfg.epoch_size.is_some_and(|n| self.state.drawn >= n) {
            return true;
        }
        let mut live = (0..self.sizes.len()).filter(|&l| self.sizes[l] > 0);
        match (self.cfg.epoch_size, self.cfg.stopping) {
            // A virtual epoch runs to its size; the strategies only bound natural epochs.
            (Some(_), _) => false,
            (None, Stopping::FirstExhausted) => live.any(|l| self.exhausted(l)),
            (None, Stopping::AllExhausted) => live.all(|l| self.exhausted(l)),
        }
    }

    fn pick_language(&mut self) -> usize {
        let r = self.state.rng.next_f64();
        let mut acc = 0.0;
        let mut last = 0;
        for (l, &p) in self.probs.iter().enumerate() {
            if p > 0.0 {
                acc += p;
                last = l;
                if r < acc {
                    return l;
                }
            }
        }
        last
    }

    fn permutation(&mut self, lang: usize, pass: u64) -> &[u32] {
        let seed = self.cfg.seed;
        let n = self.sizes[lang] as u32;
        let entry = self.perms.entry(lang).or_insert((u64::MAX, Vec::new()));
        if entry.0 != pass {
            let mut v: Vec<u32> = (0..n).collect();
            Rng::derived(seed, lang as u64, pass).shuffle(&mut v);
            *entry = (pass, v);
        }
        &entry.1
    }

    /// The next (language index, example index) of this epoch, `None` when it is over.
    pub fn next_draw(&mut self) -> Option<(usize, u64)> {
        if self.epoch_over() {
            return None;
        }
        let lang = self.pick_language();
        let example = if self.cfg.replacement {
            self.state.rng.below(self.sizes[lang])
        } else {
            let c = self.advance(lang);
            u64::from(self.permutation(lang, c.pass)[c.pos as usize])
        };
        self.count_draw(lang);
        Some((lang, example))
    }

    /// The next draw when each language is read in its own order (a stream, see
    /// [`crate::stream`]): (language index, position in the language's current pass). The
    /// languages are picked as [`LanguageSampler::next_draw`] picks them; no permutation is
    /// built, so memory does not grow with the corpus. `replacement` is ignored.
    pub fn next_in_order(&mut self) -> Option<(usize, u64)> {
        if self.epoch_over() {
            return None;
        }
        let lang = self.pick_language();
        let c = self.advance(lang);
        self.count_draw(lang);
        Some((lang, c.pos))
    }

    /// Moves `lang`'s cursor one example on (into the next pass at the end of one); returns
    /// where it was.
    fn advance(&mut self, lang: usize) -> LangCursor {
        let size = self.sizes[lang];
        let c = &mut self.state.cursors[lang];
        let was = c.clone();
        c.pos += 1;
        if c.pos == size {
            c.pos = 0;
            c.pass += 1;
        }
        was
    }

    fn count_draw(&mut self, lang: usize) {
        self.state.cursors[lang].drawn += 1;
        self.state.drawn += 1;
    }
}

impl Iterator for LanguageSampler {
    type Item = (usize, u64);
    fn next(&mut self) -> Option<Self::Item> {
        self.next_draw()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing() {
        let p = smoothed_probabilities(&[900, 100], 1.0);
        assert!((p[0] - 0.9).abs() < 1e-12);
        let p = smoothed_probabilities(&[900, 100], 0.0);
        assert!((p[0] - 0.5).abs() < 1e-12);
        let p = smoothed_probabilities(&[900, 100], 0.3);
        let want = 0.9f64.powf(0.3) / (0.9f64.powf(0.3) + 0.1f64.powf(0.3));
        assert!((p[0] - want).abs() < 1e-12);
        assert_eq!(smoothed_probabilities(&[5, 0], 0.3)[1], 0.0);
    }

    #[test]
    fn mix_follows_the_probabilities() {
        let cfg = SamplerConfig {
            alpha: 0.3,
            epoch_size: Some(20_000),
            replacement: true,
            seed: 3,
            ..Default::default()
        };
        let mut s = LanguageSampler::new(vec![9000, 900, 90], cfg).unwrap();
        let p = s.probabilities().to_vec();
        let mut counts = [0u64; 3];
        for (l, ex) in s.by_ref() {
            counts[l] += 1;
            assert!(ex < [9000, 900, 90][l]);
        }
        assert_eq!(counts.iter().sum::<u64>(), 20_000);
        for l in 0..3 {
            let share = counts[l] as f64 / 20_000.0;
            assert!((share - p[l]).abs() < 0.015, "{l}: {share} vs {}", p[l]);
        }
    }

    #[test]
    fn without_replacement_each_pass_is_a_permutation() {
        let cfg = SamplerConfig {
            alpha: 1.0,
            stopping: Stopping::AllExhausted,
            seed: 1,
            ..Default::default()
        };
        let mut s = LanguageSampler::new(vec![50, 5], cfg).unwrap();
        let draws: Vec<_> = s.by_ref().collect();
        let first_pass: Vec<u64> = draws
            .iter()
            .filter(|d| d.0 == 0)
            .map(|d| d.1)
            .take(50)
            .collect();
        let mut sorted = first_pass.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert!(draws.iter().filter(|d| d.0 == 1).count() >= 5);
    }

    #[test]
    fn first_exhausted_stops_early() {
        let cfg = SamplerConfig {
            alpha: 0.0,
            stopping: Stopping::FirstExhausted,
            seed: 2,
            ..Default::default()
        };
        let s = LanguageSampler::new(vec![1000, 10], cfg).unwrap();
        let draws: Vec<_> = s.collect();
        assert_eq!(draws.iter().filter(|d| d.0 == 1).count(), 10);
        assert!(draws.len() < 100);
    }

    #[test]
    fn resumes_exactly_mid_epoch() {
        let cfg = SamplerConfig {
            epoch_size: Some(500),
            seed: 9,
            ..Default::default()
        };
        let sizes = vec![300, 40, 7];
        let whole: Vec<_> = LanguageSampler::new(sizes.clone(), cfg.clone())
            .unwrap()
            .collect();
        let mut a = LanguageSampler::new(sizes.clone(), cfg.clone()).unwrap();
        let mut resumed: Vec<_> = a.by_ref().take(123).collect();
        let saved = serde_json::to_string(a.state()).unwrap();
        let mut b = LanguageSampler::new(sizes, cfg).unwrap();
        b.restore(serde_json::from_str(&saved).unwrap()).unwrap();
        resumed.extend(b);
        assert_eq!(resumed, whole);
    }

    #[test]
    fn in_order_draws_walk_each_language_in_order() {
        let cfg = SamplerConfig {
            alpha: 0.5,
            epoch_size: Some(400),
            seed: 4,
            ..Default::default()
        };
        let mut s = LanguageSampler::new(vec![100, 7], cfg).unwrap();
        let draws: Vec<_> = std::iter::from_fn(|| s.next_in_order()).collect();
        assert_eq!(draws.len(), 400);
        for lang in 0..2 {
            let size = [100, 7][lang];
            let pos: Vec<u64> = draws.iter().filter(|d| d.0 == lang).map(|d| d.1).collect();
            assert!(pos.len() > size as usize, "both languages wrap around");
            for (i, p) in pos.iter().enumerate() {
                assert_eq!(*p, i as u64 % size);
            }
        }
        assert!(s.perms.is_empty(), "no permutation is built");
    }

    #[test]
    fn bad_settings() {
        assert!(LanguageSampler::new(
            vec![1],
            SamplerConfig {
                alpha: 1.5,
                ..Default::default()
            }
        )
        .is_err());
        assert!(LanguageSampler::new(vec![0, 0], SamplerConfig::default()).is_err());
    }
}
