//! One language's records, read from its shard files in order, a block at a time, each
//! block shuffled by a seeded permutation (a bounded shuffle; the whole language is never
//! held). The position ([`ReaderState`]: the block's start in its file and how many of its
//! records were given) serializes, so a resumed run reads exactly what it would have.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::index::{LangShards, ShardFile};
use crate::corpus::lines::Lines;
use crate::error::{Error, Result};
use crate::record::{Location, Record};
use crate::rng::Rng;

/// Where a [`LangReader`] stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReaderState {
    /// Completed passes over the language's files.
    pub pass: u64,
    /// The current block's number in this pass.
    pub block: u64,
    /// The file the block starts in (index into the language's files).
    pub file: usize,
    /// The byte (of the file's text) where the block starts.
    pub offset: u64,
    /// The number of the line before the block (for record locations).
    pub line: u64,
    /// Records of the block given so far.
    pub taken: usize,
}

/// Reads one language's shards; see the module documentation.
pub struct LangReader {
    lang: String,
    files: Vec<ShardFile>,
    block_size: usize,
    /// The seed of the block permutations (the run's seed and the language's index).
    seed: (u64, u64),
    state: ReaderState,
    /// The current block, permuted (records already given are taken out); `None` until it
    /// is read.
    block: Option<Vec<Option<Record>>>,
    /// The open file just after the current block: (file index, lines), or `None` at the end
    /// of the pass.
    cursor: Option<(usize, Lines)>,
}

impl LangReader {
    /// A reader of `shards` in blocks of `block_size` records, shuffled with `seed` (combined
    /// with `lang_index`, so each language has its own permutations).
    pub fn new(shards: &LangShards, lang_index: usize, block_size: usize, seed: u64) -> Self {
        LangReader {
            lang: shards.lang.clone(),
            files: shards.files.clone(),
            block_size: block_size.max(1),
            seed: (seed, lang_index as u64),
            state: ReaderState::default(),
            block: None,
            cursor: None,
        }
    }

    /// The position (serialize it to resume).
    pub fn state(&self) -> &ReaderState {
        &self.state
    }

    /// Continues from a saved position.
    pub fn restore(&mut self, state: ReaderState) -> Result<()> {
        if state.file >= self.files.len() {
            return Err(Error::Invalid(format!(
                "the saved reader position of {} names file {} of {}",
                self.lang,
                state.file + 1,
                self.files.len()
            )));
        }
        self.state = state;
        self.block = None;
        self.cursor = None;
        Ok(())
    }

    /// The next record (the language's records repeat, pass after pass).
    pub fn next_record(&mut self) -> Result<Record> {
        loop {
            if self.block.is_none() {
                self.load()?;
            }
            let block = self.block.as_mut().expect("loaded above");
            if let Some(r) = block.get_mut(self.state.taken) {
                self.state.taken += 1;
                return Ok(r.take().expect("each record of a block is given once"));
            }
            self.next_block();
        }
    }

    /// Moves the position to the block after the current one (the next pass's first at the
    /// end of the files).
    fn next_block(&mut self) {
        self.block = None;
        self.state = match &self.cursor {
            Some((file, lines)) => ReaderState {
                pass: self.state.pass,
                block: self.state.block + 1,
                file: *file,
                offset: lines.offset(),
                line: lines.line(),
                taken: 0,
            },
            None => ReaderState {
                pass: self.state.pass + 1,
                ..ReaderState::default()
            },
        };
    }

    /// Reads the block the position names and permutes it.
    fn load(&mut self) -> Result<()> {
        let at_start = self.state.file == 0 && self.state.offset == 0;
        let mut records = self.read_block()?;
        if records.is_empty() {
            if at_start {
                return Err(Error::malformed(
                    &self.files[0].path,
                    format!(
                        "language {} has no records to read (were its shards emptied?)",
                        self.lang
                    ),
                ));
            }
            // The previous block ended the files exactly: the next pass begins.
            self.cursor = None;
            self.next_block();
            records = self.read_block()?;
        }
        let (seed, lang) = self.seed;
        Rng::derived(seed, (lang << 40) | self.state.pass, self.state.block).shuffle(&mut records);
        if self.state.taken > records.len() {
            return Err(Error::Invalid(format!(
                "the saved reader position of {} is past its block: the shards changed",
                self.lang
            )));
        }
        self.block = Some(records.into_iter().map(Some).collect());
        Ok(())
    }

    /// Reads up to a block of records from the position, across files; leaves `cursor` just
    /// after them.
    fn read_block(&mut self) -> Result<Vec<Record>> {
        let s = &self.state;
        let reuse = matches!(&self.cursor, Some((f, l)) if *f == s.file && l.offset() == s.offset);
        let (mut file, mut lines) = match self.cursor.take() {
            Some(c) if reuse => c,
            _ => (
                s.file,
                Lines::open_at(&self.files[s.file].path, s.offset, s.line)?,
            ),
        };
        let mut out = Vec::with_capacity(self.block_size);
        let mut kind = self.files[file].kind;
        let mut path: Arc<Path> = Arc::from(self.files[file].path.as_path());
        while out.len() < self.block_size {
            match lines.next_line()? {
                Some(line) => {
                    let Some((text, label)) = line.ok().and_then(|(_, l)| kind.parse(l)) else {
                        continue;
                    };
                    out.push(Record {
                        text,
                        lang: self.lang.clone(),
                        label,
                        target: None,
                        loc: Location {
                            file: path.clone(),
                            line: lines.line(),
                        },
                    });
                }
                None if file + 1 < self.files.len() => {
                    file += 1;
                    kind = self.files[file].kind;
                    path = Arc::from(self.files[file].path.as_path());
                    lines = Lines::open(&path)?;
                }
                None => {
                    self.cursor = None;
                    return Ok(out);
                }
            }
        }
        self.cursor = Some((file, lines));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::index::ShardIndex;

    fn corpus(dir: &Path) {
        std::fs::create_dir_all(dir.join("de")).unwrap();
        let a: String = (0..7).map(|i| format!("de {i}\n")).collect();
        std::fs::write(dir.join("de/a.txt"), a + "\n  \n").unwrap();
        let b: String = (7..12).map(|i| format!("de {i}\n")).collect();
        std::fs::write(dir.join("de/b.txt"), b).unwrap();
    }

    #[test]
    fn blocks_cover_each_pass_once_and_resume_exactly() {
        let dir = tempfile::tempdir().unwrap();
        corpus(dir.path());
        let index = ShardIndex::scan(dir.path(), |_| {}).unwrap();
        assert_eq!(index.sizes(), [12]);
        assert_eq!(index.langs[0].skipped, 2);
        let mut r = LangReader::new(&index.langs[0], 0, 5, 3);
        let texts: Vec<String> = (0..36).map(|_| r.next_record().unwrap().text).collect();
        for pass in texts.chunks(12) {
            let mut sorted = pass.to_vec();
            sorted.sort_by_key(|t| t[3..].parse::<u32>().unwrap());
            let want: Vec<String> = (0..12).map(|i| format!("de {i}")).collect();
            assert_eq!(sorted, want, "each pass gives every record once");
        }
        assert_ne!(
            texts[..12],
            texts[12..24],
            "passes are shuffled differently"
        );
        assert_ne!(
            texts[..5].to_vec(),
            (0..5).map(|i| format!("de {i}")).collect::<Vec<_>>()
        );
        for cut in [0, 1, 5, 11, 12, 13, 29] {
            let mut a = LangReader::new(&index.langs[0], 0, 5, 3);
            let mut got: Vec<String> = (0..cut).map(|_| a.next_record().unwrap().text).collect();
            let saved = serde_json::to_string(a.state()).unwrap();
            let mut b = LangReader::new(&index.langs[0], 0, 5, 3);
            b.restore(serde_json::from_str(&saved).unwrap()).unwrap();
            got.extend((cut..36).map(|_| b.next_record().unwrap().text));
            assert_eq!(got, texts, "resumed after {cut} records");
        }
    }

    #[test]
    fn a_shard_cut_short_since_the_position_was_saved_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        corpus(dir.path());
        let index = ShardIndex::scan(dir.path(), |_| {}).unwrap();
        let mut a = LangReader::new(&index.langs[0], 0, 5, 3);
        (0..6).for_each(|_| drop(a.next_record().unwrap()));
        let saved = a.state().clone();
        assert!(saved.offset > 0);
        let file = &index.langs[0].files[saved.file].path;
        std::fs::write(file, "de 0\n").unwrap();
        let mut b = LangReader::new(&index.langs[0], 0, 5, 3);
        b.restore(saved).unwrap();
        let err = b.next_record().unwrap_err().to_string();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            err.contains(&name) && err.contains("the file changed"),
            "{err}"
        );
    }

    #[test]
    fn gzipped_shards_resume_too() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("fr")).unwrap();
        let f = std::fs::File::create(dir.path().join("fr/a.txt.gz")).unwrap();
        let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        for i in 0..20 {
            writeln!(gz, "fr {i}").unwrap();
        }
        gz.finish().unwrap();
        let index = ShardIndex::scan(dir.path(), |_| {}).unwrap();
        let mut a = LangReader::new(&index.langs[0], 1, 4, 9);
        let whole: Vec<String> = (0..30).map(|_| a.next_record().unwrap().text).collect();
        let mut a = LangReader::new(&index.langs[0], 1, 4, 9);
        let mut got: Vec<String> = (0..10).map(|_| a.next_record().unwrap().text).collect();
        let mut b = LangReader::new(&index.langs[0], 1, 4, 9);
        b.restore(a.state().clone()).unwrap();
        got.extend((10..30).map(|_| b.next_record().unwrap().text));
        assert_eq!(got, whole);
    }
}
