//! `ferry eval`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use candle_core::Device;
use ferry_data::corpus::lines::Lines;
use ferry_data::corpus::moses_files;
use ferry_train::metrics::translation::{self, Segment};
use ferry_train::model_dir;
use ferry_train::report::{self, Named};
use ferry_train::run::evaluate_file;

/// Arguments of `ferry eval`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  ferry eval --model runs/langid-udhr/best --data corpora/udhr/test.tsv\n  ferry eval --model runs/langid-udhr/best --data corpora/udhr/test.tsv --snippet-words 4 --json\n  ferry eval --model runs/langid-udhr/best --weights model-f16.safetensors --data test.tsv   # a converted copy\n  ferry eval --model runs/langid-udhr/best --data corpora/udhr/test.tsv --snippet-words 4 --top-k 2 --reject-below 0.9 --out eval/   # \"unknown\" below 90% confidence, coverage.svg\n  ferry eval --translations outputs/ --references corpora/udhr/parallel --split test   # chrF, chrF++, BLEU per language"
)]
pub struct Args {
    /// A model folder written by `ferry train` (best/, last/ or a checkpoint).
    #[arg(long, required_unless_present = "translations")]
    model: Option<PathBuf>,
    /// The evaluation corpus (any layout `ferry data` reads).
    #[arg(long, required_unless_present = "translations")]
    data: Option<PathBuf>,
    /// Score translations instead of a model: a Moses-style folder of system outputs
    /// (`{split}.{lang}`, a line per segment) against the same files in --references; chrF,
    /// chrF++ and BLEU per language (sacreBLEU's defaults, exactly).
    #[arg(long, conflicts_with_all = ["model", "data", "weights", "snippet_words", "top_k", "reject_below"], requires = "references")]
    translations: Option<PathBuf>,
    /// The reference translations for --translations: a Moses-style folder.
    #[arg(long)]
    references: Option<PathBuf>,
    /// The split of the --translations and --references files.
    #[arg(long, default_value = "test")]
    split: String,
    /// Use these weights instead of the folder's (f16 safetensors, q8_0 GGUF, ...: same tensor names).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Also evaluate on snippets of this many words cut from each text.
    #[arg(long)]
    snippet_words: Option<usize>,
    /// Also report accuracy with the gold class among the N most probable (1, 3 and 5 always).
    #[arg(long, value_name = "N")]
    top_k: Option<usize>,
    /// Answer "unknown" below this confidence (the top class probability, 0 to 1): report the
    /// share answered and the accuracy on it (the report's curve shows every threshold).
    #[arg(long, value_name = "P")]
    reject_below: Option<f64>,
    /// Examples per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Write report.md, report.json, accuracy.svg and coverage.svg into this folder.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Drop evaluation records whose language label is not a language code (ISO 639 /
    /// BCP-47); a model trained with `strict_language_codes = true` always does.
    #[arg(long)]
    strict_languages: bool,
    /// Print the JSON report on stdout.
    #[arg(long)]
    json: bool,
    /// Do not print what reading the data dropped or kept with a warning on stderr (the
    /// reports still have it).
    #[arg(long, short)]
    quiet: bool,
}

/// Runs `ferry eval`.
pub fn run(a: Args) -> Result<ExitCode> {
    if let (Some(hyp), Some(refs)) = (&a.translations, &a.references) {
        return translations(&a, hyp, refs);
    }
    let (Some(model), Some(data)) = (a.model.clone(), a.data.clone()) else {
        bail!("give --model and --data (or --translations and --references)");
    };
    super::train::set_threads(a.threads);
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if a.top_k == Some(0) {
        bail!("--top-k must be at least 1");
    }
    if let Some(p) = a.reject_below.filter(|p| !(0.0..=1.0).contains(p)) {
        bail!("--reject-below {p}: a confidence is between 0 and 1");
    }
    let device = Device::Cpu;
    let mut loaded = model_dir::load_model(&model, a.weights.as_deref(), &device)?;
    loaded.card.strict_language_codes |= a.strict_languages;
    let mut evals = vec![(
        "full".to_string(),
        evaluate_file(&loaded, &data, None, a.batch_size, threads, &device)?,
    )];
    if let Some(w) = a.snippet_words {
        evals.push((
            format!("{w}-word snippets"),
            evaluate_file(&loaded, &data, Some(w), a.batch_size, threads, &device)?,
        ));
    }
    for (_, e) in &mut evals {
        if let Some(k) = a.top_k {
            *e = e.clone().with_top_k(k);
        }
        if let Some(p) = a.reject_below {
            *e = e.clone().with_reject_below(p);
        }
    }
    let named: Vec<Named<'_>> = evals
        .iter()
        .map(|(n, e)| Named { name: n, eval: e })
        .collect();
    let title = format!("{} on {}", model.display(), data.display());
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out)?;
        report::write(out, &title, &named)?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report::json(&named))?);
    } else {
        print!("{}", report::markdown(&title, &named));
    }
    // Every evaluation reads the same file, so its issues are printed once.
    if !a.quiet {
        super::data::print_issues(&data, &evals[0].1.issues);
    }
    Ok(ExitCode::SUCCESS)
}

/// The lines of a translation file (gzipped or not); a line that is not UTF-8 is an error
/// naming file:line (a segment must not be dropped from the score).
fn segments(path: &Path) -> Result<Vec<String>> {
    let mut lines = Lines::open(path)?;
    let mut out = Vec::new();
    while let Some(line) = lines.next_line()? {
        match line {
            Ok((_, text)) => out.push(text),
            Err(issue) => bail!("{issue}: a segment must be text to be scored"),
        }
    }
    Ok(out)
}

/// `ferry eval --translations HYP --references REF`: chrF, chrF++ and BLEU per language.
fn translations(a: &Args, hyp_dir: &Path, ref_dir: &Path) -> Result<ExitCode> {
    let hyps = moses_files(hyp_dir, &a.split)?;
    if hyps.is_empty() {
        bail!(
            "{}: no {}.<lang> files (a line per segment, e.g. {}.de)",
            hyp_dir.display(),
            a.split,
            a.split
        );
    }
    let refs: BTreeMap<String, PathBuf> = moses_files(ref_dir, &a.split)?.into_iter().collect();
    let mut texts = Vec::new();
    for (lang, hyp) in &hyps {
        let Some(rf) = refs.get(lang) else {
            bail!(
                "{}: no reference for {} (the references have {:?})",
                ref_dir.display(),
                hyp.display(),
                refs.keys().collect::<Vec<_>>()
            );
        };
        let (h, r) = (segments(hyp)?, segments(rf)?);
        if h.len() != r.len() {
            bail!(
                "{} has {} lines but {} has {}: translations and references must be \
                 line-aligned",
                hyp.display(),
                h.len(),
                rf.display(),
                r.len()
            );
        }
        texts.push((lang.clone(), h, r));
    }
    let segs: Vec<Segment<'_>> = texts
        .iter()
        .flat_map(|(lang, h, r)| {
            h.iter().zip(r).map(move |(h, r)| Segment {
                lang,
                hypothesis: h,
                reference: r,
            })
        })
        .collect();
    let report = translation::score(&segs);
    let title = format!("{} against {}", hyp_dir.display(), ref_dir.display());
    let md = report.markdown(&title);
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out)?;
        let json = serde_json::to_string_pretty(&report)?;
        for (name, text) in [("report.md", &md), ("report.json", &json)] {
            let path = out.join(name);
            ferry_io::atomic::write_atomic(&path, |w| {
                w.write_all(text.as_bytes())
                    .map_err(|e| ferry_io::Error::io(&path, e))
            })?;
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{md}");
    }
    Ok(ExitCode::SUCCESS)
}
