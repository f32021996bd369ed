//! The probe options `verify` and `place` share: which texts, how many, how long.

use std::path::{Path, PathBuf};

use anyhow::Result;
use ferry_verify::probes::{self, ProbeOptions};
use ferry_verify::Probe;

/// Which probe texts a verification runs.
#[derive(clap::Args, Debug, Clone)]
pub struct ProbeArgs {
    /// Probe texts: any corpus ferry data reads (default: the embedded UDHR test articles, 47 languages).
    #[arg(long, value_name = "FILE|DIR")]
    pub probes: Option<PathBuf>,
    /// Only these languages (comma-separated codes).
    #[arg(long, value_delimiter = ',')]
    pub languages: Vec<String>,
    /// At most N probe texts per language (default: 1 for decoders and encoders, all for classifiers trained by ferry).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Cut each probe to its first N tokens.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
}

impl ProbeArgs {
    /// The probes (and where they came from), `--limit` defaulting by what `model` is.
    pub fn load(&self, model: &Path) -> Result<(String, Vec<Probe>)> {
        let popts = ProbeOptions {
            languages: self.languages.clone(),
            limit: match self.limit {
                Some(n) => Some(n),
                None => probes::default_limit(&ferry_runtime::Model::probe(model)?),
            },
        };
        Ok(probes::load(self.probes.as_deref(), &popts)?)
    }
}
