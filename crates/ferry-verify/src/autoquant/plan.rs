//! [`plan`]: the stages of `--quant auto`, one function each — column weights, the error
//! table, each group's sensitivity, each type's correction, the choosing rounds — and the
//! plan they add up to.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use ferry_io::imatrix::Imatrix;
use ferry_io::DType;
use ferry_runtime::{Kernels, Model, Tokenizer};

use super::choose::{self, Predictor, Stop};
use super::measure::{self, Distances};
use super::table::{self, Table};
use super::{
    assignment_of, bounds, texts, top1_missed, unreachable_goal, AutoOptions, AutoPlan, Choice,
    Goal, GroupSensitivity, LanguageOutcome, Progress, Size, PROBE_TYPE, ROUNDS,
};
use crate::calibrate;
use crate::error::{Error, Result};
use crate::probes::Probe;

/// Measures a model with some tensors quantized: each language's distance from the original.
type Measure<'a> = &'a dyn Fn(HashMap<String, DType>) -> Result<Distances>;

/// One group's sensitivity: (group, tensors in it, distances with it alone quantized).
type Measured = (String, usize, Distances);

/// Chooses a type per weight tensor of the model at `path` for `opts.goal` (see the module's
/// description).
pub fn plan(path: &Path, opts: &AutoOptions, progress: Progress<'_>) -> Result<AutoPlan> {
    let start = Instant::now();
    if opts.candidates.is_empty() || opts.bands == 0 || opts.texts_per_language == 0 {
        return Err(Error::Options(
            "--quant auto needs candidate types, a band count and texts above 0".into(),
        ));
    }
    let model = load(path)?;
    let decoder = model.is_decoder();
    // The calibration text (the UDHR training articles), read and tokenized by one tokenizer
    // for both the column statistics and the sensitivity texts.
    let tokenizer = model.load_tokenizer()?;
    let (dataset, all) = calibrate::texts(None, &opts.languages)?;
    let (weights, weights_from) =
        column_weights(&model, &tokenizer, &dataset, &all, opts, progress)?;
    // The matrix the candidates are rounded with, as the file will be written.
    let imatrix = match &opts.imatrix {
        Some(m) => Some(m.clone()),
        None => opts.quantize_with_calibration.then(|| weights.clone()),
    };
    let table = table::build(
        path,
        &opts.candidates,
        opts.bands,
        imatrix.as_deref(),
        Some(&weights),
        |i, n| progress("errors", i, n),
    )?;
    let limit = size_limit(&table, &opts.goal, decoder)?;
    let (langs, texts) = texts(&all, &tokenizer, opts)?;
    let reference = measure::reference(&model, &texts)?;
    drop(model);
    // How the runtime's (checkpoint) names map to the table's llama.cpp names, read once.
    let layout = ferry_io::arch::detect(&ferry_io::Checkpoint::open(path)?)?;
    let run = |assignment: HashMap<String, DType>| {
        let n = langs.len();
        measure::measure(
            path,
            layout,
            assignment,
            imatrix.clone(),
            &texts,
            &reference,
            n,
        )
    };
    let (groups, predictor) = sensitivity(&table, &run, progress)?;
    let mut table = table;
    let type_factors = correct_types(&mut table, &predictor, &opts.candidates, &run, progress)?;
    let distances: Vec<Distances> = groups.iter().map(|g| g.2.clone()).collect();
    let original = match &opts.goal.budget {
        Some(b) => Some(bounds(b, decoder, &distances, langs.len())?),
        None => None,
    };
    let judge = Judge {
        goal: &opts.goal,
        limit,
        original,
        langs: &langs,
        decoder,
    };
    let chosen = choose_rounds(&table, &predictor, &judge, &run, progress)?;
    Ok(assemble(
        path,
        opts,
        &table,
        &judge,
        chosen,
        groups,
        Extras {
            weights_from,
            imatrix,
            type_factors,
            seconds: start.elapsed().as_secs_f64(),
        },
    ))
}

/// Loads the model (f32, CPU) and checks it is one `--quant auto` chooses types for.
fn load(path: &Path) -> Result<Model> {
    let model = Model::load(path, &Device::Cpu, Kernels::F32)?;
    if !model.is_decoder() && model.kind() != "encoder" {
        return Err(Error::Options(format!(
            "{}: --quant auto chooses types for Llama-family decoders and BERT-family encoders, not a {}",
            path.display(),
            model.config.name()
        )));
    }
    Ok(model)
}

/// The errors' column weights: the given matrix, else a calibration of this model; with a
/// line saying where they came from.
fn column_weights(
    model: &Model,
    tokenizer: &Tokenizer,
    dataset: &str,
    all: &[Probe],
    opts: &AutoOptions,
    progress: Progress<'_>,
) -> Result<(Arc<Imatrix>, String)> {
    if let Some(m) = &opts.imatrix {
        return Ok((m.clone(), format!("imatrix {}", m.path.display())));
    }
    let copts = calibrate::fit_options(model, &opts.calibration);
    let sample = calibrate::sample(all, tokenizer, &copts)?;
    let source = model.tokenizer_source();
    let (im, run) = calibrate::run(model, &source, dataset, &sample, &copts, |i, n| {
        progress("calibrate", i, n)
    })?;
    let from = format!("calibration, {} tokens of {dataset}", run.tokens);
    Ok((Arc::new(im), from))
}

/// The size the goal allows, if it sets one; an error when there is no goal, or when even the
/// cheapest choice is larger (known before anything runs).
fn size_limit(table: &Table, goal: &Goal, decoder: bool) -> Result<Option<u64>> {
    let limit = goal.size.map(|s| match s {
        Size::Bytes(n) => n,
        Size::Bpw(b) => (b * table.params as f64 / 8.0).floor() as u64,
    });
    if limit.is_none() && goal.budget.is_none() {
        return Err(Error::Options(
            "--quant auto needs a goal: --budget, --target-size or --target-bpw".into(),
        ));
    }
    if let Some(n) = limit.filter(|&n| table.bytes(&vec![0; table.entries.len()]) > n) {
        let none = Predictor { coef: Vec::new() };
        return Err(unreachable_goal(table, &none, goal, Some(n), &[], decoder));
    }
    Ok(limit)
}

/// Sensitivity: each group alone at the probe type (or its cheapest candidate), measured; the
/// predictor's coefficients are distance per unit of weighted error.
fn sensitivity(
    table: &Table,
    run: Measure<'_>,
    progress: Progress<'_>,
) -> Result<(Vec<Measured>, Predictor)> {
    let mut measured = Vec::with_capacity(table.groups.len());
    let mut coef = Vec::with_capacity(table.groups.len());
    for (g, name) in table.groups.iter().enumerate() {
        progress("sensitivity", g, table.groups.len());
        let members: Vec<&table::Entry> = table.entries.iter().filter(|e| e.group == g).collect();
        let mut assignment = HashMap::new();
        let mut error = 0.0;
        for e in &members {
            let o = e
                .options
                .iter()
                .find(|o| o.dtype == PROBE_TYPE)
                .unwrap_or(&e.options[0]);
            assignment.insert(e.name.clone(), o.dtype);
            error += o.error;
        }
        let d = run(assignment)?;
        coef.push(
            d.value
                .iter()
                .map(|v| if error > 0.0 { v.max(0.0) / error } else { 0.0 })
                .collect::<Vec<f64>>(),
        );
        measured.push((name.clone(), members.len(), d));
    }
    progress("sensitivity", table.groups.len(), table.groups.len());
    Ok((measured, Predictor { coef }))
}

/// Per type: every tensor it fits rounded to it at once, measured against the prediction;
/// the median ratio over languages scales that type's errors in `table` (a coarse type hurts
/// more than its weighted error says, and errors compound across blocks). Returns the factors.
fn correct_types(
    table: &mut Table,
    predictor: &Predictor,
    candidates: &[DType],
    run: Measure<'_>,
    progress: Progress<'_>,
) -> Result<Vec<(DType, f64)>> {
    let types: Vec<DType> = candidates
        .iter()
        .copied()
        .filter(|d| d.is_quantized())
        .collect();
    let mut factors = Vec::new();
    for (i, &dtype) in types.iter().enumerate() {
        progress("type check", i, types.len());
        let mut choice = Vec::with_capacity(table.entries.len());
        let mut assignment = HashMap::new();
        for e in &table.entries {
            let k = e.options.iter().position(|o| o.dtype == dtype);
            if k.is_some() {
                assignment.insert(e.name.clone(), dtype);
            }
            choice.push(k);
        }
        if assignment.is_empty() {
            continue;
        }
        let predicted = predictor.predict_some(table, &choice);
        let d = run(assignment)?;
        let mut ratios: Vec<f64> = d
            .value
            .iter()
            .zip(&predicted)
            .filter(|(_, &p)| p > 0.0)
            .map(|(m, p)| m / p)
            .collect();
        ratios.sort_by(f64::total_cmp);
        if let Some(&factor) = ratios.get(ratios.len() / 2) {
            factors.push((dtype, factor));
        }
    }
    progress("type check", types.len(), types.len());
    for e in &mut table.entries {
        for o in &mut e.options {
            if let Some(&(_, f)) = factors.iter().find(|(d, _)| *d == o.dtype) {
                o.error *= f;
            }
        }
    }
    Ok(factors)
}

/// What a choice is judged against.
struct Judge<'a> {
    goal: &'a Goal,
    /// The size goal, if any.
    limit: Option<u64>,
    /// Each language's bound from the budget, if any.
    original: Option<Vec<f64>>,
    langs: &'a [String],
    decoder: bool,
}

impl Judge<'_> {
    /// The languages `d` misses the budget in.
    fn missed(&self, d: &Distances) -> Vec<usize> {
        (0..self.langs.len())
            .filter(|&l| {
                self.original.as_ref().is_some_and(|o| d.value[l] > o[l])
                    || top1_missed(self.goal, d, l)
            })
            .collect()
    }
}

/// The choice made: each tensor's option, the predicted and the measured distances, rounds.
struct Chosen {
    choice: Vec<usize>,
    predicted: Vec<f64>,
    measured: Distances,
    rounds: usize,
}

/// Chooses, measures, and (for a budget) tightens the bounds of the languages it missed, up to
/// [`ROUNDS`] times. A size goal is judged, not refined.
fn choose_rounds(
    table: &Table,
    predictor: &Predictor,
    judge: &Judge<'_>,
    run: Measure<'_>,
    progress: Progress<'_>,
) -> Result<Chosen> {
    let mut bound = judge.original.clone();
    let mut rounds = 0;
    loop {
        rounds += 1;
        progress("choose", rounds - 1, ROUNDS);
        let stop = match (judge.limit, &bound) {
            (Some(n), _) => Stop::Bytes(n),
            (None, Some(b)) => Stop::Within(b),
            (None, None) => unreachable!("size_limit requires a goal"),
        };
        let choice = choose::choose(table, predictor, stop).ok_or_else(|| {
            unreachable_goal(
                table,
                predictor,
                judge.goal,
                judge.limit,
                judge.langs,
                judge.decoder,
            )
        })?;
        let predicted = predictor.predict(table, &choice);
        let measured = run(assignment_of(table, &choice))?;
        let out = judge.missed(&measured);
        let chosen = Chosen {
            choice,
            predicted,
            measured,
            rounds,
        };
        let (Some(b), None) = (bound.as_mut(), judge.limit) else {
            return Ok(chosen);
        };
        if out.is_empty() || rounds >= ROUNDS {
            return Ok(chosen);
        }
        for l in out {
            let ratio = chosen.predicted[l].max(1e-12) / chosen.measured.value[l].max(1e-12);
            b[l] *= ratio.min(1.0) * 0.9;
        }
    }
}

/// What the report adds besides the choice.
struct Extras {
    weights_from: String,
    imatrix: Option<Arc<Imatrix>>,
    type_factors: Vec<(DType, f64)>,
    seconds: f64,
}

/// The plan: each tensor's choice, the types used, each group's sensitivity and each
/// language's bound, prediction and measurement.
fn assemble(
    path: &Path,
    opts: &AutoOptions,
    table: &Table,
    judge: &Judge<'_>,
    chosen: Chosen,
    groups: Vec<Measured>,
    extras: Extras,
) -> AutoPlan {
    let ok = judge.missed(&chosen.measured).is_empty();
    let bytes = table.bytes(&chosen.choice);
    let mut types: Vec<(DType, usize)> = Vec::new();
    let tensors: Vec<Choice> = table
        .entries
        .iter()
        .zip(&chosen.choice)
        .map(|(e, &k)| {
            let o = e.options[k];
            match types.iter_mut().find(|(d, _)| *d == o.dtype) {
                Some((_, n)) => *n += 1,
                None => types.push((o.dtype, 1)),
            }
            Choice {
                name: e.name.clone(),
                group: table.groups[e.group].clone(),
                shape: e.shape.clone(),
                dtype: o.dtype,
                bytes: o.bytes,
                error: o.rounding,
            }
        })
        .collect();
    types.sort_by_key(|&(d, _)| d.name());
    let languages = judge
        .langs
        .iter()
        .enumerate()
        .map(|(l, lang)| LanguageOutcome {
            lang: lang.clone(),
            bound: judge.original.as_ref().map(|b| b[l]),
            predicted: chosen.predicted[l],
            measured: chosen.measured.value[l],
            top1: chosen.measured.top1[l],
        })
        .collect();
    AutoPlan {
        model: path.display().to_string(),
        goal: opts.goal.clone(),
        metric: if judge.decoder {
            "mean KLD"
        } else {
            "1 - cosine"
        }
        .into(),
        weights_from: extras.weights_from,
        imatrix: extras.imatrix,
        bytes,
        bpw: bytes as f64 * 8.0 / table.params.max(1) as f64,
        types,
        tensors,
        groups: groups
            .into_iter()
            .map(|(group, tensors, d)| GroupSensitivity {
                group,
                tensors,
                distance: d.value,
            })
            .collect(),
        languages,
        rounds: chosen.rounds,
        type_factors: extras.type_factors,
        ok,
        seconds: extras.seconds,
    }
}
