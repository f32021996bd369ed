//! Running both models on the probes and gathering the statistics per language.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use ferry_runtime::{Model, Tokenizer};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::preset::Budget;
use crate::probes::Probe;
use crate::stats::{self, ClassStat, ClassifierStats, DecoderStats, EncoderStats, TokenStat};

/// How to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Each probe is cut to its first N tokens (special tokens as the tokenizer adds them).
    pub max_tokens: usize,
    /// The tolerance each language is judged by.
    pub budget: Budget,
    /// Measure each layer's SQNR (decoders and encoders) to say where the error enters.
    pub attribution: bool,
    /// How GGML-quantized matrices are multiplied (default f32: transformers' numerics, fast
    /// on long inputs; ggml: llama.cpp's CPU numerics, 8-bit activations).
    pub kernels: ferry_runtime::Kernels,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            max_tokens: 64,
            budget: "q8".parse().unwrap_or_default(),
            attribution: true,
            kernels: ferry_runtime::Kernels::F32,
        }
    }
}

/// Classifiers: the fewest texts whose share of same-class predictions is judged. A language
/// has 7 texts in the embedded probes, where one near-tie text flipping (measured: a Slovak
/// paragraph under bf16, KLD 1.5e-5) is 14%; such a set is judged by its mean KLD, and the
/// same-class share by the whole probe set.
pub const MIN_TEXTS: usize = 20;

/// One language's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LanguageResult {
    /// The language (`overall` for the whole set).
    pub lang: String,
    /// Probe texts.
    pub texts: usize,
    /// Decoder statistics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoder: Option<DecoderStats>,
    /// Encoder statistics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoder: Option<EncoderStats>,
    /// Classifier statistics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<ClassifierStats>,
    /// The bounds crossed, in words (empty when within the budget).
    pub failed: Vec<String>,
}

impl LanguageResult {
    /// A result for `lang` over `texts` probe texts, with no statistics yet.
    fn empty(lang: &str, texts: usize) -> Self {
        LanguageResult {
            lang: lang.to_string(),
            texts,
            decoder: None,
            encoder: None,
            classifier: None,
            failed: Vec::new(),
        }
    }

    /// Whether the language is within the budget.
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }

    /// How far from the original, higher is worse, compared in order: mean KLD for decoders;
    /// 1 - min cosine for encoders; for classifiers the share of texts given another class,
    /// then the mean KLD.
    pub fn badness(&self) -> (f64, f64) {
        match (&self.decoder, &self.encoder, &self.classifier) {
            (Some(d), _, _) => (d.kld_mean, 0.0),
            (_, Some(e), _) => (1.0 - e.cosine_min, 0.0),
            (_, _, Some(c)) => (1.0 - c.agreement, c.kld_mean),
            _ => (0.0, 0.0),
        }
    }

    /// Orders languages from the closest to the original to the furthest.
    pub fn cmp_badness(&self, other: &LanguageResult) -> std::cmp::Ordering {
        let (a, b) = (self.badness(), other.badness());
        a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1))
    }

    /// The language's main statistics in one line.
    pub fn summary(&self) -> String {
        let pct = |x: f64| format!("{:.1}%", 100.0 * x);
        match (&self.decoder, &self.encoder, &self.classifier) {
            (Some(d), _, _) => format!(
                "mean KLD {:.5}, same top-1 {}, PPL {:.2} -> {:.2}",
                d.kld_mean,
                pct(d.same_top1),
                d.ppl_original,
                d.ppl_migrated
            ),
            (_, Some(e), _) => format!(
                "min cosine {:.6}, max abs error {:.2e}",
                e.cosine_min, e.max_abs
            ),
            (_, _, Some(c)) => {
                let acc = match (c.accuracy_original, c.accuracy_migrated) {
                    (Some(a), Some(b)) => format!(", accuracy {} -> {}", pct(a), pct(b)),
                    _ => String::new(),
                };
                format!(
                    "mean KLD {:.2e}, same class {} of {}{acc}",
                    c.kld_mean,
                    (c.agreement * c.texts as f64).round(),
                    c.texts
                )
            }
            _ => String::new(),
        }
    }

    fn judge(&mut self, b: &Budget) {
        let mut failed = Vec::new();
        let finite = match (&self.decoder, &self.encoder, &self.classifier) {
            (Some(d), _, _) => d.kld_mean.is_finite() && d.same_top1.is_finite(),
            (_, Some(e), _) => e.cosine_min.is_finite() && e.max_abs.is_finite(),
            (_, _, Some(c)) => c.kld_mean.is_finite() && c.kld_max.is_finite(),
            _ => true,
        };
        if !finite {
            failed.push("a statistic is not finite (a model outputs NaN or infinity)".into());
        }
        if let Some(d) = &self.decoder {
            if let Some(max) = b.kld.filter(|&m| d.kld_mean > m) {
                failed.push(format!("mean KLD {:.4} > {max}", d.kld_mean));
            }
            if let Some(min) = b.top1.filter(|&m| d.same_top1 < m) {
                failed.push(format!("same top-1 {:.3} < {min}", d.same_top1));
            }
        }
        if let Some(e) = &self.encoder {
            if let Some(min) = b.cosine.filter(|&m| e.cosine_min < m) {
                failed.push(format!("min cosine {:.6} < {min}", e.cosine_min));
            }
        }
        if let Some(c) = &self.classifier {
            if let Some(max) = b.kld.filter(|&m| c.kld_mean > m) {
                failed.push(format!("mean KLD {:.4} > {max}", c.kld_mean));
            }
            if let Some(min) = b.top1.filter(|&m| c.agreement < m && c.texts >= MIN_TEXTS) {
                failed.push(format!("same class {:.3} < {min}", c.agreement));
            }
        }
        self.failed = failed;
    }
}

/// One layer's agreement (decoders and encoders).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerResult {
    /// `embedding`, `block N` or `final norm`.
    pub layer: String,
    /// SQNR of the migrated hidden state against the original's, dB (`None`: identical).
    pub sqnr_db: Option<f64>,
    /// How much lower than the layer before, dB (positive: error entered here).
    pub drop_db: f64,
}

/// A verification's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verification {
    /// `decoder`, `encoder` or `classifier`.
    pub kind: String,
    /// The budget judged by.
    pub budget: Budget,
    /// Tokens each probe was cut to.
    pub max_tokens: usize,
    /// How quantized matrices were multiplied.
    #[serde(default)]
    pub kernels: ferry_runtime::Kernels,
    /// Per language, sorted by code.
    pub languages: Vec<LanguageResult>,
    /// All probes together.
    pub overall: LanguageResult,
    /// Per-layer SQNR (decoders and encoders, with attribution).
    pub layers: Vec<LayerResult>,
    /// The language faring worst (highest KLD, lowest cosine, or most texts given another
    /// class).
    pub worst: Option<String>,
    /// Whether every language is within the budget.
    pub ok: bool,
}

/// The rows of a `[1, n, d]` output as f32.
pub(crate) fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(t.squeeze(0)?.to_dtype(candle_core::DType::F32)?.to_vec2()?)
}

/// Runs `original` and `migrated` on every probe (tokenized by `tokenizer`, fed to both alike)
/// and gathers the statistics per language.
pub fn verify(
    original: &Model,
    migrated: &Model,
    tokenizer: &Tokenizer,
    probes: &[Probe],
    opts: &VerifyOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<Verification> {
    comparable(original, migrated)?;
    let kind = original.kind();
    let decoder = kind == "decoder";
    let mut got = Gathered::default();
    for (i, p) in probes.iter().enumerate() {
        progress(i, probes.len());
        got.probe(original, migrated, tokenizer, p, opts)?;
    }
    progress(probes.len(), probes.len());
    if got.compared() == 0 {
        return Err(Error::Mismatch(format!(
            "no token was compared: the {} probe texts tokenize to nothing (is --max-tokens 0?)",
            probes.len()
        )));
    }
    let count = |lang: &str| probes.iter().filter(|p| p.lang == lang).count();
    let (mut languages, mut overall) = if decoder {
        got.decoder_results(&count)
    } else if kind == "classifier" {
        got.classifier_results(&count)
    } else {
        got.encoder_results(&count)
    };
    overall.texts = probes.len();
    for l in &mut languages {
        l.judge(&opts.budget);
    }
    overall.judge(&opts.budget);
    let worst = languages
        .iter()
        .max_by(|a, b| a.cmp_badness(b))
        .map(|l| l.lang.clone());
    let layers = layer_results(&got.layer_sums, decoder);
    Ok(Verification {
        kind: kind.into(),
        budget: opts.budget.clone(),
        max_tokens: opts.max_tokens,
        kernels: opts.kernels,
        ok: languages.iter().all(LanguageResult::ok) && overall.ok(),
        languages,
        overall,
        layers,
        worst,
    })
}

/// Whether two models can be compared: the same kind, and the same classes for classifiers.
fn comparable(original: &Model, migrated: &Model) -> Result<()> {
    if original.kind() != migrated.kind() {
        return Err(Error::Mismatch(format!(
            "{} is a {} but {} is a {}: they cannot be compared",
            original.path.display(),
            original.config.name(),
            migrated.path.display(),
            migrated.config.name()
        )));
    }
    let classes = original.classifier().map(|c| &c.classes);
    if classes != migrated.classifier().map(|c| &c.classes) {
        return Err(Error::Mismatch(format!(
            "{} and {} predict different class lists: they cannot be compared",
            original.path.display(),
            migrated.path.display()
        )));
    }
    Ok(())
}

/// One encoder text: its language, both pooled outputs, the largest element difference.
type Pooled = (String, Vec<f32>, Vec<f32>, f64);

/// What the probes gave, per kind of model.
#[derive(Default)]
struct Gathered {
    /// Decoders: every next-token comparison, by language.
    tokens: BTreeMap<String, Vec<TokenStat>>,
    /// Classifiers: every text's class comparison, by language.
    texts: BTreeMap<String, Vec<ClassStat>>,
    /// Encoders: every text's pooled outputs.
    pooled: Vec<Pooled>,
    /// Per tap: (sum of squares of the original, sum of squared differences).
    layer_sums: Vec<(f64, f64)>,
}

impl Gathered {
    /// Runs both models on probe `p` and keeps what its kind of model is judged by.
    fn probe(
        &mut self,
        original: &Model,
        migrated: &Model,
        tokenizer: &Tokenizer,
        p: &Probe,
        opts: &VerifyOptions,
    ) -> Result<()> {
        let kind = original.kind();
        let ids = tokenizer.encode(&p.text, Some(opts.max_tokens))?;
        if ids.is_empty() {
            return Ok(());
        }
        let x = Tensor::from_vec(ids.clone(), (1, ids.len()), &Device::Cpu)?;
        let taps = kind != "classifier" && opts.attribution;
        let (a, b) = (
            original.forward(&x, None, taps)?,
            migrated.forward(&x, None, taps)?,
        );
        if a.values.dims() != b.values.dims() {
            return Err(Error::Mismatch(format!(
                "outputs differ in shape: {:?} against {:?} (different vocabularies or sizes?)",
                a.values.dims(),
                b.values.dims()
            )));
        }
        self.layers(&a.taps, &b.taps)?;
        if kind == "classifier" {
            // A language identifier's true class is the probe's language.
            let label = original
                .classifier()
                .filter(|c| c.classes_are_languages)
                .and_then(|c| c.classes.iter().position(|l| *l == p.lang));
            let (ra, rb): (Vec<Vec<f32>>, Vec<Vec<f32>>) = (
                a.values.to_dtype(candle_core::DType::F32)?.to_vec2()?,
                b.values.to_dtype(candle_core::DType::F32)?.to_vec2()?,
            );
            let stat = stats::class_stat(&ra[0], &rb[0], label);
            self.texts.entry(p.lang.clone()).or_default().push(stat);
            return Ok(());
        }
        let (ra, rb) = (rows(&a.values)?, rows(&b.values)?);
        if kind == "decoder" {
            let list = self.tokens.entry(p.lang.clone()).or_default();
            for (t, (la, lb)) in ra.iter().zip(&rb).enumerate() {
                list.push(stats::token_stat(la, lb, ids.get(t + 1).copied()));
            }
            return Ok(());
        }
        // NaN-propagating maximum: a NaN output must not read as "no difference".
        let max_abs = -stats::min_or_nan(
            ra.iter()
                .flatten()
                .zip(rb.iter().flatten())
                .map(|(&u, &v)| -(u as f64 - v as f64).abs()),
            0.0,
        );
        self.pooled
            .push((p.lang.clone(), mean_row(&ra), mean_row(&rb), max_abs));
        Ok(())
    }

    /// Adds each tap's energy and error. Layers are compared only when both models tap the
    /// same ones (an ONNX graph has no taps: then there is no attribution, rather than a false
    /// "identical").
    fn layers(&mut self, a: &[Tensor], b: &[Tensor]) -> Result<()> {
        if a.len() != b.len() || a.is_empty() {
            return Ok(());
        }
        if self.layer_sums.len() < a.len() {
            self.layer_sums.resize(a.len(), (0.0, 0.0));
        }
        for (k, (ta, tb)) in a.iter().zip(b).enumerate() {
            let (va, vb): (Vec<f32>, Vec<f32>) =
                (ta.flatten_all()?.to_vec1()?, tb.flatten_all()?.to_vec1()?);
            for (&u, &v) in va.iter().zip(&vb) {
                self.layer_sums[k].0 += (u as f64).powi(2);
                self.layer_sums[k].1 += (u as f64 - v as f64).powi(2);
            }
        }
        Ok(())
    }

    /// Comparisons made.
    fn compared(&self) -> usize {
        self.tokens.values().map(Vec::len).sum::<usize>()
            + self.texts.values().map(Vec::len).sum::<usize>()
            + self.pooled.len()
    }

    /// A decoder's results per language and overall.
    fn decoder_results(
        &self,
        count: &dyn Fn(&str) -> usize,
    ) -> (Vec<LanguageResult>, LanguageResult) {
        let mut all = Vec::new();
        let mut languages = Vec::new();
        for (lang, list) in &self.tokens {
            all.extend_from_slice(list);
            let mut r = LanguageResult::empty(lang, count(lang));
            r.decoder = Some(DecoderStats::from_tokens(list));
            languages.push(r);
        }
        let mut overall = LanguageResult::empty("overall", 0);
        overall.decoder = Some(DecoderStats::from_tokens(&all));
        (languages, overall)
    }

    /// A classifier's results per language and overall.
    fn classifier_results(
        &self,
        count: &dyn Fn(&str) -> usize,
    ) -> (Vec<LanguageResult>, LanguageResult) {
        let mut all = Vec::new();
        let mut languages = Vec::new();
        for (lang, list) in &self.texts {
            all.extend_from_slice(list);
            let mut r = LanguageResult::empty(lang, count(lang));
            r.classifier = Some(ClassifierStats::from_texts(list));
            languages.push(r);
        }
        let mut overall = LanguageResult::empty("overall", 0);
        overall.classifier = Some(ClassifierStats::from_texts(&all));
        (languages, overall)
    }

    /// An encoder's results per language and overall: cosine of the pooled outputs, and
    /// whether each text keeps its nearest neighbour among all texts.
    fn encoder_results(
        &self,
        count: &dyn Fn(&str) -> usize,
    ) -> (Vec<LanguageResult>, LanguageResult) {
        let pooled = &self.pooled;
        let na: Vec<Vec<f32>> = pooled.iter().map(|p| p.1.clone()).collect();
        let nb: Vec<Vec<f32>> = pooled.iter().map(|p| p.2.clone()).collect();
        let (nn_a, nn_b) = (
            stats::nearest_neighbours(&na),
            stats::nearest_neighbours(&nb),
        );
        let summarize = |keep: &dyn Fn(&str) -> bool| -> EncoderStats {
            let idx: Vec<usize> = (0..pooled.len()).filter(|&i| keep(&pooled[i].0)).collect();
            let cos: Vec<f64> = idx
                .iter()
                .map(|&i| stats::cosine(&pooled[i].1, &pooled[i].2))
                .collect();
            let agree = idx.iter().filter(|&&i| nn_a[i] == nn_b[i]).count();
            EncoderStats {
                texts: idx.len(),
                cosine_mean: cos.iter().sum::<f64>() / cos.len().max(1) as f64,
                cosine_min: stats::min_or_nan(cos.iter().copied(), 1.0),
                max_abs: -stats::min_or_nan(idx.iter().map(|&i| -pooled[i].3), 0.0),
                neighbour_agreement: (pooled.len() > 1)
                    .then(|| agree as f64 / idx.len().max(1) as f64),
            }
        };
        let mut langs: Vec<&str> = pooled.iter().map(|p| p.0.as_str()).collect();
        langs.sort();
        langs.dedup();
        let mut languages = Vec::new();
        for lang in langs {
            let mut r = LanguageResult::empty(lang, count(lang));
            r.encoder = Some(summarize(&|l| l == lang));
            languages.push(r);
        }
        let mut overall = LanguageResult::empty("overall", 0);
        overall.encoder = Some(summarize(&|_| true));
        (languages, overall)
    }
}

/// The mean of a text's rows (mean pooling).
pub(crate) fn mean_row(r: &[Vec<f32>]) -> Vec<f32> {
    let mut m = vec![0f32; r.first().map_or(0, Vec::len)];
    for row in r {
        for (acc, v) in m.iter_mut().zip(row) {
            *acc += v / r.len() as f32;
        }
    }
    m
}

/// Names the taps (`embedding`, `block N`, and for decoders a last `final norm`) and measures
/// how much SQNR each loses against the one before.
fn layer_results(sums: &[(f64, f64)], final_norm: bool) -> Vec<LayerResult> {
    let n = sums.len();
    let mut out: Vec<LayerResult> = Vec::with_capacity(n);
    for (k, &(s, e)) in sums.iter().enumerate() {
        let sqnr = stats::sqnr_db(s, e);
        let layer = match k {
            0 => "embedding".to_string(),
            k if final_norm && k == n - 1 => "final norm".to_string(),
            k => format!("block {}", k - 1),
        };
        let prev = out.last().and_then(|l| l.sqnr_db);
        let drop_db = match (prev, sqnr) {
            (Some(p), Some(q)) => p - q,
            _ => 0.0,
        };
        out.push(LayerResult {
            layer,
            sqnr_db: sqnr,
            drop_db,
        });
    }
    out
}
