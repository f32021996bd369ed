//! Records drawn from a sharded corpus: the language sampler picks a language, that
//! language's [`LangReader`] gives its next record. What [`super::window::WindowStream`]
//! batches, and what `ferry data sample` and tokenizer training read from a folder per
//! language without holding it.

use super::index::ShardIndex;
use super::reader::{LangReader, ReaderState};
use crate::error::{Error, Result};
use crate::record::Record;
use crate::sampling::{LanguageSampler, SamplerConfig, SamplerState};

/// Draws records language by language; see the module documentation.
pub struct Draws {
    sampler: LanguageSampler,
    readers: Vec<LangReader>,
}

impl Draws {
    /// Draws from `index` as `cfg` says (`replacement` is ignored: each language is read in
    /// its order, shuffled within blocks of `block` records).
    pub fn new(index: &ShardIndex, cfg: SamplerConfig, block: usize) -> Result<Self> {
        let seed = cfg.seed;
        let sampler = LanguageSampler::new(index.sizes(), cfg)?;
        let readers = index
            .langs
            .iter()
            .enumerate()
            .map(|(i, l)| LangReader::new(l, i, block, seed))
            .collect();
        Ok(Draws { sampler, readers })
    }

    /// The sampling probability of each language.
    pub fn probabilities(&self) -> &[f64] {
        self.sampler.probabilities()
    }

    /// The next record of this epoch, `None` when it is over.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        match self.sampler.next_in_order() {
            Some((lang, _)) => self.readers[lang].next_record().map(Some),
            None => Ok(None),
        }
    }

    /// The next record, starting the next epoch when this one is over.
    pub fn next_record_endless(&mut self) -> Result<Record> {
        loop {
            if let Some(r) = self.next_record()? {
                return Ok(r);
            }
            self.sampler.next_epoch();
        }
    }

    /// The sampler's epoch.
    pub fn epoch(&self) -> u64 {
        self.sampler.state().epoch
    }

    /// The sampler's and the readers' positions.
    pub fn state(&self) -> (SamplerState, Vec<ReaderState>) {
        (
            self.sampler.state().clone(),
            self.readers.iter().map(|r| r.state().clone()).collect(),
        )
    }

    /// Continues from saved positions (made over the same index and settings).
    pub fn restore(&mut self, sampler: SamplerState, readers: &[ReaderState]) -> Result<()> {
        if readers.len() != self.readers.len() {
            return Err(Error::Invalid(format!(
                "the saved stream position has {} languages, this corpus {}",
                readers.len(),
                self.readers.len()
            )));
        }
        self.sampler.restore(sampler)?;
        for (r, s) in self.readers.iter_mut().zip(readers) {
            r.restore(s.clone())?;
        }
        Ok(())
    }
}

impl Iterator for Draws {
    type Item = Result<Record>;

    /// The epoch's records; an error ends the iteration after it is given.
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}
