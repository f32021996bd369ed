//! Evaluation reports: Markdown for people, JSON for scripts, SVG plots (per-language
//! accuracy bars, the coverage/accuracy curve, the loss curve). Plots are written by hand: a
//! few rectangles and a polyline need no plotting library.

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
        md.push_str(&transfer_markdown(evals));
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
    md.push_str(&selective_markdown(evals));
    md
}

/// Seen against zero-shot languages within each family and script.
fn transfer_markdown(evals: &[Named<'_>]) -> String {
    let mut md = String::from(
        "\n## Zero-shot transfer by family and script\n\nMean accuracy of the languages seen in \
         training and of the unseen ones in the same group (`transfer.svg` plots the first \
         evaluation).\n\n| evaluation | by | group | seen | seen acc % | zero-shot | zero-shot acc % |\n|---|---|---|---:|---:|---:|---:|\n",
    );
    let cell = |g: &Option<crate::eval::GroupScores>| match g {
        Some(g) => (g.languages.to_string(), pct(g.accuracy)),
        None => ("0".into(), "-".into()),
    };
    for n in evals {
        for t in n.eval.transfer_groups() {
            let ((sn, sa), (zn, za)) = (cell(&t.seen), cell(&t.zero_shot));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {sn} | {sa} | {zn} | {za} |",
                n.name, t.by, t.group
            );
        }
    }
    md
}

/// Paired bars per family and script: seen languages' mean accuracy beside the zero-shot
/// ones'.
pub fn transfer_svg(eval: &Evaluation) -> String {
    let groups = eval.transfer_groups();
    let (row, left, top, w) = (16.0, 170.0, 24.0, 300.0);
    let h = row * groups.len() as f64;
    let mut s = plot_frame((left, top, w, h), "mean accuracy (0 to 100%)", ("", ""));
    for (i, t) in groups.iter().enumerate() {
        let y = top + row * i as f64;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{} {}</text>",
            left - 4.0,
            y + 11.0,
            t.by,
            escape(&t.group)
        );
        for (k, g) in [&t.seen, &t.zero_shot].into_iter().enumerate() {
            if let Some(g) = g {
                let _ = writeln!(
                    s,
                    "<rect x=\"{left}\" y=\"{:.1}\" width=\"{:.1}\" height=\"6\" fill=\"{}\"><title>{} {}: {} languages, {}%</title></rect>",
                    y + 2.0 + 7.0 * k as f64,
                    w * g.accuracy,
                    PALETTE[k],
                    escape(&t.group),
                    ["seen", "zero-shot"][k],
                    g.languages,
                    pct(g.accuracy)
                );
            }
        }
    }
    let _ = writeln!(s, "<text x=\"{left}\" y=\"14\" fill=\"{}\">seen in training</text><text x=\"{}\" y=\"14\" fill=\"{}\">zero-shot</text>", PALETTE[0], left + 120.0, PALETTE[1]);
    s.push_str("</svg>\n");
    s
}

/// Top-k accuracy and the coverage/accuracy curve ("unknown" below a confidence).
fn selective_markdown(evals: &[Named<'_>]) -> String {
    let mut md =
        String::from("\n## Selective prediction\n\n| evaluation | top-k accuracy % |\n|---|---|\n");
    for n in evals {
        let ks: Vec<String> = n
            .eval
            .selective
            .top_k
            .iter()
            .map(|(k, a)| format!("top-{k} {}", pct(*a)))
            .collect();
        let _ = writeln!(md, "| {} | {} |", n.name, ks.join(", "));
    }
    md.push_str(
        "\nAnswering \"unknown\" below a confidence (the top class probability): the share \
         answered (coverage) and the accuracy on it.\n\n| evaluation | confidence >= | coverage % | accuracy % |\n|---|---:|---:|---:|\n",
    );
    for n in evals {
        let sel = &n.eval.selective;
        let asked = sel.reject_below.iter().map(|p| (p, " (--reject-below)"));
        for (p, note) in sel.curve.iter().map(|p| (p, "")).chain(asked) {
            let _ = writeln!(
                md,
                "| {}{note} | {} | {} | {} |",
                n.name,
                p.threshold,
                pct(p.coverage),
                pct(p.accuracy)
            );
        }
    }
    md
}

/// The JSON report: every evaluation with its zero-shot split, overall and by family and
/// script.
pub fn json(evals: &[Named<'_>]) -> Value {
    Value::Array(
        evals
            .iter()
            .map(|n| {
                json!({"name": n.name, "evaluation": n.eval, "zero_shot": n.eval.zero_shot_split(),
                            "transfer": n.eval.transfer_groups()})
            })
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

/// An SVG's opening: the plot box `(left, top, width, height)`, the x-axis label and the y
/// axis's top and bottom labels.
fn plot_frame((left, top, w, h): (f64, f64, f64, f64), x_label: &str, y: (&str, &str)) -> String {
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"10\">\n",
        left + w + 20.0,
        top + h + 40.0
    );
    let _ = writeln!(s, "<rect x=\"{left}\" y=\"{top}\" width=\"{w}\" height=\"{h}\" fill=\"none\" stroke=\"#999\"/>");
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
        left + w / 2.0,
        top + h + 28.0,
        escape(x_label)
    );
    let _ = writeln!(s, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>", left - 4.0, top + 8.0, y.0, left - 4.0, top + h, y.1);
    s
}

/// Accuracy against coverage as the "unknown" threshold rises, one line per evaluation.
pub fn coverage_svg(evals: &[Named<'_>]) -> String {
    let (w, h, left, top) = (360.0, 240.0, 50.0, 24.0);
    let floor = evals
        .iter()
        .flat_map(|n| n.eval.selective.curve.iter().map(|p| p.accuracy))
        .fold(1.0f64, f64::min)
        .min(0.99);
    let lo = (floor * 20.0).floor() / 20.0;
    let pt = |c: f64, a: f64| {
        format!(
            "{:.1},{:.1}",
            left + w * c,
            top + h * (1.0 - (a - lo) / (1.0 - lo).max(1e-9))
        )
    };
    let mut s = plot_frame(
        (left, top, w, h),
        "coverage (share answered; the rest is \"unknown\")",
        ("100%", &format!("{:.0}%", 100.0 * lo)),
    );
    for (i, n) in evals.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let pts: Vec<String> = n
            .eval
            .selective
            .curve
            .iter()
            .filter(|p| p.coverage > 0.0)
            .map(|p| pt(p.coverage, p.accuracy))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"><title>{}</title></polyline>",
            pts.join(" "),
            escape(n.name)
        );
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"14\" fill=\"{colour}\">{}</text>",
            left + 160.0 * i as f64,
            escape(n.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The training loss per step (and dev loss at evaluations) from a `metrics.jsonl`.
pub fn loss_curve_svg(metrics: &Path) -> Result<String> {
    let text = std::fs::read_to_string(metrics).map_err(|e| Error::io(metrics, e))?;
    let mut train = Vec::new();
    let mut dev = Vec::new();
    for line in text.lines() {
        let v: Value =
            serde_json::from_str(line).map_err(|e| Error::malformed(metrics, e.to_string()))?;
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
    let mut s = plot_frame(
        (left, top, w, h),
        &format!("step (max {max_step})"),
        (&format!("{max_loss:.2}"), "0"),
    );
    let line: Vec<String> = train.iter().map(|&p| pt(p)).collect();
    let _ = writeln!(s, "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1\" points=\"{}\"><title>training loss</title></polyline>", PALETTE[0], line.join(" "));
    let line: Vec<String> = dev.iter().map(|&p| pt(p)).collect();
    let _ = writeln!(s, "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"><title>dev loss</title></polyline>", PALETTE[1], line.join(" "));
    let _ = writeln!(s, "<text x=\"{}\" y=\"12\" fill=\"{}\">training loss</text><text x=\"{}\" y=\"12\" fill=\"{}\">dev loss</text>", left, PALETTE[0], left + 100.0, PALETTE[1]);
    s.push_str("</svg>\n");
    Ok(s)
}

/// Writes `report.md`, `report.json`, `accuracy.svg` and `coverage.svg` into `dir`, and
/// `transfer.svg` when the first evaluation has zero-shot languages.
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
    put("coverage.svg", coverage_svg(evals))?;
    if let Some(first) = evals
        .first()
        .filter(|n| n.eval.zero_shot_split().contains_key("zero_shot"))
    {
        put("transfer.svg", transfer_svg(first.eval))?;
    }
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
