//! Evaluation reports: Markdown for people, JSON for scripts, SVG plots (per-language
//! accuracy bars, the loss curve). Plots are written by hand: a few rectangles and a
//! polyline need no plotting library.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use crate::eval::Evaluation;
use crate::{Error, Result};

/// A named evaluation (for example "test" and "test, 4-word snippets").
pub struct Named<'a> {
    /// The column name.
    pub name: &'a str,
    /// The evaluation.
    pub eval: &'a Evaluation,
}

fn pct(x: f64) -> String {
    format!("{:.1}", 100.0 * x)
}

/// The Markdown report: overall scores, a per-language table with one accuracy/macro-F1
/// column pair per evaluation, the zero-shot split and the most frequent confusions.
pub fn markdown(title: &str, evals: &[Named<'_>]) -> String {
    let mut md = format!("# {title}\n\n");
    md.push_str(
        "| evaluation | examples | accuracy % | macro-F1 % | loss |\n|---|---:|---:|---:|---:|\n",
    );
    for n in evals {
        let o = &n.eval.report.overall;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.4} |",
            n.name,
            o.n,
            pct(o.accuracy),
            pct(o.macro_f1),
            n.eval.loss
        );
    }
    for n in evals {
        if n.eval.unknown_class > 0 {
            let _ = writeln!(
                md,
                "\n{}: {} examples have a class the model does not know; they count as errors.",
                n.name, n.eval.unknown_class
            );
        }
        let issues = &n.eval.issues;
        for line in [issues.summary(), issues.warning_summary()]
            .into_iter()
            .flatten()
        {
            let _ = writeln!(
                md,
                "\n{}: reading the data {line} (first locations in report.json).",
                n.name
            );
        }
    }
    let Some(first) = evals.first() else {
        return md;
    };
    let seen = &first.eval.train_languages;
    let any_zero_shot = first
        .eval
        .report
        .per_language
        .keys()
        .any(|l| !seen.contains(l));
    md.push_str("\n## Per language\n\n| language |");
    if any_zero_shot {
        md.push_str(" in training |");
    }
    for n in evals {
        let _ = write!(md, " {} n | {} acc % | {} F1 % |", n.name, n.name, n.name);
    }
    md.push_str("\n|---|");
    if any_zero_shot {
        md.push_str("---|");
    }
    for _ in evals {
        md.push_str("---:|---:|---:|");
    }
    md.push('\n');
    for lang in first.eval.report.per_language.keys() {
        let _ = write!(md, "| {lang} |");
        if any_zero_shot {
            md.push_str(if seen.contains(lang) {
                " yes |"
            } else {
                " zero-shot |"
            });
        }
        for n in evals {
            match n.eval.report.per_language.get(lang) {
                Some(s) => {
                    let _ = write!(md, " {} | {} | {} |", s.n, pct(s.accuracy), pct(s.macro_f1));
                }
                None => md.push_str(" 0 | - | - |"),
            }
        }
        md.push('\n');
    }
    if any_zero_shot {
        md.push_str("\n## Zero-shot transfer (mean over languages)\n\n| evaluation | group | languages | accuracy % | macro-F1 % |\n|---|---|---:|---:|---:|\n");
        for n in evals {
            for (group, g) in n.eval.zero_shot_split() {
                let _ = writeln!(
                    md,
                    "| {} | {group} | {} | {} | {} |",
                    n.name,
                    g.languages,
                    pct(g.accuracy),
                    pct(g.macro_f1)
                );
            }
        }
    }
    for n in evals {
        let mut errors: Vec<&(String, String, usize)> = n
            .eval
            .report
            .overall
            .confusion
            .iter()
            .filter(|(g, p, _)| g != p)
            .collect();
        errors.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        if errors.is_empty() {
            continue;
        }
        let _ = write!(
            md,
            "\n## Most frequent confusions: {}\n\n| gold | predicted | count |\n|---|---|---:|\n",
            n.name
        );
        for (g, p, c) in errors.iter().take(10) {
            let _ = writeln!(md, "| {g} | {p} | {c} |");
        }
    }
    md
}

/// The JSON report: every evaluation with its zero-shot split.
pub fn json(evals: &[Named<'_>]) -> Value {
    Value::Array(
        evals
            .iter()
            .map(|n| json!({"name": n.name, "evaluation": n.eval, "zero_shot": n.eval.zero_shot_split()}))
            .collect(),
    )
}

const PALETTE: [&str; 4] = ["#4477aa", "#ee6677", "#228833", "#ccbb44"];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Horizontal bars of per-language accuracy, one colour per evaluation.
pub fn accuracy_bars_svg(evals: &[Named<'_>]) -> String {
    let langs: Vec<&String> = evals
        .first()
        .map(|n| n.eval.report.per_language.keys().collect())
        .unwrap_or_default();
    let row = 6.0 + 10.0 * evals.len() as f64;
    let (left, width) = (60.0, 400.0);
    let height = 40.0 + row * langs.len() as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"10\">\n",
        left + width + 150.0
    );
    for (k, n) in evals.iter().enumerate() {
        let _ = writeln!(s, "<rect x=\"{}\" y=\"6\" width=\"10\" height=\"8\" fill=\"{}\"/><text x=\"{}\" y=\"14\">{}</text>", left + 160.0 * k as f64, PALETTE[k % 4], left + 14.0 + 160.0 * k as f64, escape(n.name));
    }
    for x in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let px = left + width * x;
        let _ = writeln!(s, "<line x1=\"{px}\" y1=\"24\" x2=\"{px}\" y2=\"{height}\" stroke=\"#ddd\"/><text x=\"{px}\" y=\"22\" text-anchor=\"middle\">{}%</text>", 100.0 * x);
    }
    for (i, lang) in langs.iter().enumerate() {
        let y = 28.0 + row * i as f64;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            left - 4.0,
            y + row / 2.0,
            escape(lang)
        );
        for (k, n) in evals.iter().enumerate() {
            let acc = n
                .eval
                .report
                .per_language
                .get(*lang)
                .map_or(0.0, |x| x.accuracy);
            let _ = writeln!(
                s,
                "<rect x=\"{left}\" y=\"{}\" width=\"{:.1}\" height=\"8\" fill=\"{}\"><title>{} {}: {:.1}%</title></rect>",
                y + 10.0 * k as f64,
                width * acc,
                PALETTE[k % 4],
                escape(lang),
                escape(n.name),
                100.0 * acc
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// The training loss per step (and dev loss at evaluations) from a `metrics.jsonl`.
pub fn loss_curve_svg(metrics: &Path) -> Result<String> {
    let text = std::fs::read_to_string(metrics).map_err(|e| Error::fs(metrics, e))?;
    let mut train = Vec::new();
    let mut dev = Vec::new();
    for line in text.lines() {
        let v: Value =
            serde_json::from_str(line).map_err(|e| Error::file(metrics, e.to_string()))?;
        let step = v["step"].as_f64().unwrap_or(0.0);
        if let Some(l) = v["loss"].as_f64() {
            train.push((step, l));
        }
        if let Some(l) = v["dev_loss"].as_f64() {
            dev.push((step, l));
        }
    }
    let max_step = train.iter().chain(&dev).map(|p| p.0).fold(1.0, f64::max);
    let max_loss = train
        .iter()
        .chain(&dev)
        .map(|p| p.1)
        .filter(|l| l.is_finite())
        .fold(1e-9, f64::max);
    let (w, h, left, top) = (480.0, 240.0, 50.0, 20.0);
    let pt = |(x, y): (f64, f64)| {
        format!(
            "{:.1},{:.1}",
            left + w * x / max_step,
            top + h * (1.0 - y / max_loss)
        )
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"10\">\n",
        left + w + 20.0,
        top + h + 40.0
    );
    let _ = writeln!(s, "<rect x=\"{left}\" y=\"{top}\" width=\"{w}\" height=\"{h}\" fill=\"none\" stroke=\"#999\"/>");
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step (max {max_step})</text>",
        left + w / 2.0,
        top + h + 28.0
    );
    let _ = writeln!(s, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{max_loss:.2}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>", left - 4.0, top + 8.0, left - 4.0, top + h);
    let line: Vec<String> = train.iter().map(|&p| pt(p)).collect();
    let _ = writeln!(s, "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1\" points=\"{}\"><title>training loss</title></polyline>", PALETTE[0], line.join(" "));
    let line: Vec<String> = dev.iter().map(|&p| pt(p)).collect();
    let _ = writeln!(s, "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"><title>dev loss</title></polyline>", PALETTE[1], line.join(" "));
    let _ = writeln!(s, "<text x=\"{}\" y=\"12\" fill=\"{}\">training loss</text><text x=\"{}\" y=\"12\" fill=\"{}\">dev loss</text>", left, PALETTE[0], left + 100.0, PALETTE[1]);
    s.push_str("</svg>\n");
    Ok(s)
}

/// Writes `report.md`, `report.json` and `accuracy.svg` into `dir`.
pub fn write(dir: &Path, title: &str, evals: &[Named<'_>]) -> Result<()> {
    let put = |name: &str, text: String| -> Result<()> {
        let path = dir.join(name);
        ferry_io::atomic::write_atomic(&path, |w| {
            use std::io::Write;
            w.write_all(text.as_bytes())
                .map_err(|e| ferry_io::Error::io(&path, e))
        })?;
        Ok(())
    };
    put("report.md", markdown(title, evals))?;
    put(
        "report.json",
        serde_json::to_string_pretty(&json(evals)).map_err(|e| Error::Invalid(e.to_string()))?,
    )?;
    put("accuracy.svg", accuracy_bars_svg(evals))?;
    Ok(())
}

/// Writes `loss.svg` into `dir` from the run's metrics log.
pub fn write_loss_curve(dir: &Path, metrics: &Path) -> Result<()> {
    let svg = loss_curve_svg(metrics)?;
    let path = dir.join("loss.svg");
    ferry_io::atomic::write_atomic(&path, |w| {
        use std::io::Write;
        w.write_all(svg.as_bytes())
            .map_err(|e| ferry_io::Error::io(&path, e))
    })?;
    Ok(())
}
