//! `ferry run` for the models ferry-runtime runs: Hugging Face folders, GGUF files and
//! checkpoints with their config.json (Llama-family decoders, BERT-family encoders), and model
//! folders trained by ferry (classifiers).

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use ferry_runtime::{Model, Output, Placement, Tokenizer};
use indexmap::IndexMap;
use serde_json::json;

use super::run::{summary, Args};

/// Token ids and mask `[batch, seq]` from `--text` or `--input input_ids=... [attention_mask=...]`.
fn inputs(a: &Args, model: &Model) -> Result<(Tensor, Option<Tensor>, Option<Tokenizer>)> {
    if !a.text.is_empty() {
        let tok = match &a.tokenizer {
            Some(p) => Tokenizer::from_file(p)?,
            None => model.load_tokenizer()?,
        };
        let ids: Vec<Vec<u32>> = a
            .text
            .iter()
            .map(|t| tok.encode(t, None))
            .collect::<Result<_, _>>()?;
        let len = ids.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let b = ids.len();
        let (mut flat, mut mask) = (vec![0u32; b * len], vec![0u32; b * len]);
        for (r, row) in ids.iter().enumerate() {
            flat[r * len..r * len + row.len()].copy_from_slice(row);
            mask[r * len..r * len + row.len()].fill(1);
        }
        let ids = Tensor::from_vec(flat, (b, len), &Device::Cpu)?;
        let mask = Tensor::from_vec(mask, (b, len), &Device::Cpu)?;
        return Ok((ids, Some(mask), Some(tok)));
    }
    let mut feeds = super::optimize::read_inputs(&a.input)?;
    let ids = feeds
        .remove("input_ids")
        .context("give --text, or --input input_ids=ids.npy (and optionally attention_mask=...)")?;
    let ids = match ids.rank() {
        1 => ids.unsqueeze(0)?,
        2 => ids,
        r => bail!("input_ids must be [batch, seq] (or [seq]), not rank {r}"),
    };
    let mask = feeds
        .remove("attention_mask")
        .map(|m| m.reshape(ids.dims()))
        .transpose()?;
    if let Some(extra) = feeds.keys().next() {
        bail!("input `{extra}` is not used (this model takes input_ids and attention_mask)");
    }
    Ok((ids.to_dtype(DType::U32)?, mask, None))
}

/// Where `ferry run` puts the model: the CPU in f32 unless `--devices`, `--map`,
/// `--max-memory` or `--dtype` ask otherwise (then planned by ferry-device for `workload`),
/// with the plan when there is one.
pub fn placement(
    a: &Args,
    workload: ferry_device::Workload,
) -> Result<(Placement, Option<ferry_device::Plan>)> {
    if !a.place.requested(a.dtype.as_deref()) {
        return Ok((Placement::single(Device::Cpu, DType::F32), None));
    }
    let kernels = a.kernels.parse().map_err(anyhow::Error::msg)?;
    let inventory = ferry_device::Inventory::detect();
    let opts = a
        .place
        .options(&inventory, "cpu", a.dtype.as_deref(), workload)?;
    let (_, plan) = ferry_runtime::planning::plan(&a.model, kernels, &inventory, &opts)
        .with_context(|| format!("placing {}", a.model.display()))?;
    Ok((Placement::from_plan(&plan)?, Some(plan)))
}

/// Runs a runtime model where `placement` puts it.
pub fn run(a: Args, placement: (Placement, Option<ferry_device::Plan>)) -> Result<ExitCode> {
    let kernels = a.kernels.parse().map_err(anyhow::Error::msg)?;
    let (place, plan) = placement;
    let model = Model::load_placed(&a.model, &place, kernels)?;
    if let (Some(plan), false) = (&plan, a.quiet || a.json) {
        for d in plan.used() {
            eprintln!(
                "placed on {} ({}): {}",
                d.device,
                d.dtype.as_str(),
                super::placing::compact_units(&d.units)
            );
        }
    }
    let classifier = model.classifier().cloned();
    check_options(&a, &model)?;
    let (ids, mask, tok) = inputs(&a, &model)?;
    let device = place.input_device();
    let (ids, mask) = (
        ids.to_device(device)?,
        mask.map(|m| m.to_device(device)).transpose()?,
    );
    let t0 = Instant::now();
    let out = model.forward(&ids, mask.as_ref(), a.taps)?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let arrays = output_arrays(&model, &ids, &out)?;
    if let Some(path) = &a.output {
        ferry_graph::feeds::write_npz(path, &arrays)?;
    }
    let top = match (&classifier, a.top_k) {
        // A classifier always says what it predicts.
        (Some(c), k) => top_classes(&out.values, k.unwrap_or(1), &c.classes)?,
        (None, Some(k)) => top_k(&out.values, mask.as_ref(), k, tok.as_ref())?,
        (None, None) => Vec::new(),
    };
    if a.json {
        let outs = arrays
            .iter()
            .map(|(k, v)| summary(k, v))
            .collect::<Result<Vec<_>>>()?;
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "model": a.model.display().to_string(), "format": model.format,
                "architecture": model.config.name(), "ms": ms, "outputs": outs, "top_k": top,
                "written": a.output.as_ref().map(|p| p.display().to_string()),
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if a.quiet {
        return Ok(ExitCode::SUCCESS);
    }
    print_outputs(&a, &model, &out.values, ms, &top);
    Ok(ExitCode::SUCCESS)
}

/// `--top-k` and `--taps` where the model has them.
fn check_options(a: &Args, model: &Model) -> Result<()> {
    if a.top_k.is_some() && model.kind() == "encoder" {
        bail!(
            "--top-k applies to decoders (next tokens) and classifiers (classes); {} is a {}",
            a.model.display(),
            model.config.name()
        );
    }
    if a.taps && model.classifier().is_some() {
        bail!(
            "--taps applies to decoders and encoders; {} is a {}",
            a.model.display(),
            model.config.name()
        );
    }
    Ok(())
}

/// What `--output` holds, on the CPU: the input ids, the logits (or the encoder's last hidden
/// state) and every tapped hidden state.
fn output_arrays(model: &Model, ids: &Tensor, out: &Output) -> Result<IndexMap<String, Tensor>> {
    let name = if model.kind() == "encoder" {
        "last_hidden_state"
    } else {
        "logits"
    };
    let mut arrays: IndexMap<String, Tensor> = IndexMap::new();
    arrays.insert(
        "input_ids".into(),
        ids.to_dtype(DType::I64)?.to_device(&Device::Cpu)?,
    );
    arrays.insert(name.into(), out.values.to_device(&Device::Cpu)?);
    for (i, t) in out.taps.iter().enumerate() {
        arrays.insert(format!("hidden.{i}"), t.to_device(&Device::Cpu)?);
    }
    Ok(arrays)
}

/// The run in words: the output's shape and time, then each row's top candidates.
fn print_outputs(a: &Args, model: &Model, values: &Tensor, ms: f64, top: &[serde_json::Value]) {
    println!(
        "{} ({}, {}): {:?} in {ms:.1} ms",
        a.model.display(),
        model.format,
        model.config.name(),
        values.dims()
    );
    for (row, cands) in top.iter().enumerate() {
        let label = a
            .text
            .get(row)
            .cloned()
            .unwrap_or_else(|| format!("row {row}"));
        println!("{label:?} ->");
        for c in cands.as_array().into_iter().flatten() {
            println!(
                "  {:>8.4}  {:>6}  {:?}",
                c["p"].as_f64().unwrap_or(0.0),
                c["id"],
                c["token"].as_str().unwrap_or("")
            );
        }
    }
    if let Some(p) = &a.output {
        println!("outputs in {}", p.display());
    }
}

/// The `k` most likely entries of one row of logits, with their probabilities, most likely first.
fn ranked(logits: &[f32], k: usize) -> impl Iterator<Item = (usize, f64)> {
    let lp = ferry_verify::stats::log_softmax(logits);
    let mut idx: Vec<usize> = (0..lp.len()).collect();
    idx.sort_by(|&x, &y| lp[y].total_cmp(&lp[x]));
    idx.into_iter().take(k).map(move |i| (i, lp[i].exp()))
}

/// The `k` most likely classes of each row, named.
fn top_classes(logits: &Tensor, k: usize, classes: &[String]) -> Result<Vec<serde_json::Value>> {
    let rows: Vec<Vec<f32>> = logits
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .to_vec2()?;
    Ok(rows
        .iter()
        .map(|v| {
            json!(ranked(v, k)
                .map(|(i, p)| json!({"id": i, "p": p, "token": classes.get(i)}))
                .collect::<Vec<_>>())
        })
        .collect())
}

/// The `k` most likely next tokens after each row's last real position.
fn top_k(
    logits: &Tensor,
    mask: Option<&Tensor>,
    k: usize,
    tok: Option<&Tokenizer>,
) -> Result<Vec<serde_json::Value>> {
    let (b, t, _) = logits.dims3()?;
    let lens: Vec<u32> = match mask {
        Some(m) => m
            .to_dtype(DType::U32)?
            .sum(D::Minus1)?
            .to_device(&Device::Cpu)?
            .to_vec1()?,
        None => vec![t as u32; b],
    };
    let mut out = Vec::with_capacity(b);
    for (row, len) in lens.iter().enumerate() {
        let last = (*len as usize).clamp(1, t) - 1;
        let v: Vec<f32> = logits
            .get(row)?
            .get(last)?
            .to_dtype(DType::F32)?
            .to_vec1()?;
        let cands: Vec<serde_json::Value> = ranked(&v, k)
            .map(|(i, p)| json!({"id": i, "p": p, "token": tok.map(|t| t.token(i as u32))}))
            .collect();
        out.push(json!(cands));
    }
    Ok(out)
}
