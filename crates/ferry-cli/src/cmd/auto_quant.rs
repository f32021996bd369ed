//! `--quant auto` for `convert` and `migrate`: the type per tensor chosen by
//! `ferry_verify::autoquant`, turned into the conversion's per-tensor rules, and shown.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use ferry_io::convert::ConvertOptions;
use ferry_io::DType;
use ferry_verify::autoquant::{self, AutoOptions, AutoPlan, Goal, Size};
use ferry_verify::Budget;

use crate::args::TransformArgs;
use crate::progress::count_bar;
use crate::units::human_bytes;

/// The goal and options `t` asks for.
fn options(t: &TransformArgs, conv: &ConvertOptions) -> Result<AutoOptions> {
    let budget: Option<Budget> = t
        .budget
        .as_deref()
        .map(str::parse)
        .transpose()
        .context("--budget")?;
    let size = match (&t.target_size, t.target_bpw) {
        (Some(_), Some(_)) => anyhow::bail!("give one size: --target-size or --target-bpw"),
        (Some(s), None) => Some(Size::Bytes(crate::units::parse_size(s)?)),
        (None, Some(b)) => {
            anyhow::ensure!(
                b.is_finite() && b > 0.0,
                "--target-bpw {b}: expected bits per weight above 0 (e.g. 4.8)"
            );
            Some(Size::Bpw(b))
        }
        (None, None) => None,
    };
    anyhow::ensure!(
        budget.is_some() || size.is_some(),
        "--quant auto needs a goal: --budget 'kld<=0.05' (smallest file within it), or --target-size 90MB / --target-bpw 4.8 (least worst-language KLD within it)"
    );
    let mut o = AutoOptions::new(Goal { budget, size });
    if !t.auto_types.is_empty() {
        o.candidates = t
            .auto_types
            .iter()
            .map(|s| {
                let d: DType = s.parse()?;
                anyhow::ensure!(
                    d.is_quantized() || d == DType::F16,
                    "--auto-types takes GGML types and f16, not {d}"
                );
                Ok(d)
            })
            .collect::<Result<_>>()?;
    }
    o.imatrix = conv.imatrix.clone();
    o.quantize_with_calibration = !t.auto_no_imatrix;
    o.languages = t.auto_languages.clone();
    Ok(o)
}

/// With `--quant auto`, chooses the types for the model at `input` and sets `conv`'s
/// quantization to them (returns the plan); otherwise does nothing. Progress on stderr unless
/// `quiet`.
pub fn apply(
    input: &Path,
    t: &TransformArgs,
    conv: &mut ConvertOptions,
    quiet: bool,
) -> Result<Option<AutoPlan>> {
    if !t.is_auto() {
        return Ok(None);
    }
    let opts = options(t, conv)?;
    let bar = count_bar(1, "--quant auto", quiet);
    let mut stage = String::new();
    let mut progress = |s: &str, done: usize, total: usize| {
        if s != stage {
            stage = s.to_string();
            bar.set_message(s.to_string());
            bar.set_length(total as u64);
            if !quiet {
                bar.suspend(|| eprintln!("--quant auto: {s}"));
            }
        }
        bar.set_position(done as u64);
    };
    let plan = autoquant::plan(input, &opts, &mut progress)
        .with_context(|| format!("--quant auto on {}", input.display()))?;
    bar.finish_and_clear();
    conv.quant = Some(plan.main_type());
    conv.quant_rules = plan.rules();
    // The file is written as the candidates were measured: with the calibration's matrix
    // where auto made one. A choice that quantizes nothing (f16 everywhere) needs none.
    let quantizes = plan.tensors.iter().any(|c| c.dtype.is_quantized());
    conv.imatrix = plan.imatrix.clone().filter(|_| quantizes);
    Ok(Some(plan))
}

/// The choice in words: types, size, the groups' types, and per language the predicted and
/// measured distance on the calibration text (worst five and the median).
pub fn print(p: &AutoPlan) {
    let types: Vec<String> = p
        .types
        .iter()
        .map(|(d, n)| format!("{n} {}", d.name()))
        .collect();
    let goal = goal(p);
    println!(
        "--quant auto ({goal}): {} tensors -> {}; {} of tensor data, {:.2} bits per weight ({:.0}s, {} round{})",
        p.tensors.len(),
        types.join(", "),
        human_bytes(p.bytes),
        p.bpw,
        p.seconds,
        p.rounds,
        if p.rounds == 1 { "" } else { "s" }
    );
    println!(
        "  errors weighted by the {}; {}",
        p.weights_from,
        if p.imatrix.is_some() {
            "quantized with it"
        } else {
            "quantized without an importance matrix (--auto-no-imatrix)"
        }
    );
    println!("  per group: {}", per_group(p));
    let factors: Vec<String> = p
        .type_factors
        .iter()
        .map(|(d, f)| format!("{} {f:.2}", d.name()))
        .collect();
    println!(
        "  measured/predicted with every tensor at one type (errors scaled by it): {}",
        factors.join(", ")
    );
    print_languages(p);
    if !p.ok {
        println!("  ! the measured choice misses the budget in some language (see above)");
    }
}

/// The goal in words: the size and the budget, or the budget alone.
fn goal(p: &AutoPlan) -> String {
    match (&p.goal.size, &p.goal.budget) {
        (Some(Size::Bytes(n)), b) => format!(
            "least worst-language {} within {}{}",
            p.metric,
            human_bytes(*n),
            b.as_ref()
                .map(|b| format!(", judged by {b}"))
                .unwrap_or_default()
        ),
        (Some(Size::Bpw(x)), b) => format!(
            "least worst-language {} within {x} bits per weight{}",
            p.metric,
            b.as_ref()
                .map(|b| format!(", judged by {b}"))
                .unwrap_or_default()
        ),
        (None, Some(b)) => format!("smallest file with every language within {b}"),
        (None, None) => String::new(),
    }
}

/// How many tensors of each group got each type: `attn_q: 20 q4_k + 10 q6_k; ...`.
fn per_group(p: &AutoPlan) -> String {
    let mut by_group: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for c in &p.tensors {
        *by_group
            .entry(&c.group)
            .or_default()
            .entry(c.dtype.name())
            .or_default() += 1;
    }
    let cells: Vec<String> = by_group
        .iter()
        .map(|(g, t)| {
            let t: Vec<String> = t.iter().map(|(d, n)| format!("{n} {d}")).collect();
            format!("{g}: {}", t.join(" + "))
        })
        .collect();
    cells.join("; ")
}

/// The five worst languages and the median, predicted against measured.
fn print_languages(p: &AutoPlan) {
    let mut langs: Vec<_> = p.languages.iter().collect();
    langs.sort_by(|a, b| b.measured.total_cmp(&a.measured));
    println!(
        "  {} on the calibration text (predicted -> measured), worst first:",
        p.metric
    );
    let decoder = p.metric == "mean KLD";
    let show = |label: &str, l: &autoquant::LanguageOutcome| {
        let bound = l
            .bound
            .map(|b| format!(", bound {b:.4}"))
            .unwrap_or_default();
        let top1 = if decoder {
            format!("  same top-1 {:.1}%", 100.0 * l.top1)
        } else {
            String::new()
        };
        println!(
            "    {label:<8} {:.4} -> {:.4}{top1}{bound}",
            l.predicted, l.measured
        );
    };
    for l in langs.iter().take(5) {
        show(&l.lang, l);
    }
    if let Some(m) = langs.get(langs.len() / 2) {
        show(&format!("median {}", m.lang), m);
    }
}
