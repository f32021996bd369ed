//! The migration report: what went in, what came out, each stage with its timing, and every
//! tensor's verification result. Rendered as Markdown (for people) and JSON (for machines).

use std::fmt::Write as _;

use ferry_io::compare::TensorComparison;
use ferry_io::convert::PlanEntry;
use ferry_io::quant::QuantError;
use ferry_io::rename::RenameReport;
use serde::Serialize;

/// A file that went in or came out.
#[derive(Debug, Clone, Serialize)]
pub struct FileRecord {
    /// Where it is (or `embedded:NAME`).
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256, lower-case hex.
    pub sha256: String,
}

/// One stage of the pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct StageRecord {
    /// Stage name (`resolve`, `convert`, `verify`, `report`).
    pub name: String,
    /// Wall time in seconds.
    pub seconds: f64,
    /// One line on what it did.
    pub summary: String,
}

/// One output tensor: what conversion planned for it, and how the written tensor compares
/// with its source.
#[derive(Debug, Clone, Serialize)]
pub struct TensorRecord {
    /// Names, dtypes, shape, action, ties (flattened into the JSON object).
    #[serde(flatten)]
    pub planned: PlanEntry,
    /// Comparison of the written tensor with the source tensor.
    pub check: TensorComparison,
    /// Quantization error measured while writing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quant_error: Option<QuantError>,
}

/// Everything a migration did, for the report files and `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationReport {
    /// ferry's version.
    pub ferry_version: String,
    /// The options, enough to replay the run.
    pub options: serde_json::Value,
    /// Input format (`pytorch-zip`...).
    pub input_format: String,
    /// Input files (weights, then companions).
    pub inputs: Vec<FileRecord>,
    /// Output files (weights, then companions).
    pub outputs: Vec<FileRecord>,
    /// Stages in order.
    pub stages: Vec<StageRecord>,
    /// Every output tensor.
    pub tensors: Vec<TensorRecord>,
    /// What renaming did.
    pub rename: RenameReport,
    /// Tied groups found in the input.
    pub tied_groups: Vec<Vec<String>>,
    /// Source tensors missing from the output, or output tensors nobody asked for.
    pub missing: Vec<String>,
    /// Parameter count.
    pub parameters: u64,
    /// For a model trained by ferry: per-language accuracy before and after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_eval: Option<crate::TaskEval>,
    /// For a model the runtime runs: both models on multilingual probes, per language.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs_check: Option<crate::OutputsRecord>,
    /// For a graph input: the optimization pipeline and the end-to-end output check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph: Option<GraphRecord>,
    /// Whether every tensor (for a graph: every output) verified within its tolerance.
    pub ok: bool,
}

/// What a graph migration did.
#[derive(Debug, Clone, Serialize)]
pub struct GraphRecord {
    /// The passes, each with its diagnostics and its verification.
    pub pipeline: ferry_graph::passes::PipelineReport,
    /// The original graph's outputs against the written file's, on seeded inputs.
    pub end_to_end: Vec<ferry_io::compare::TensorComparison>,
}

fn fmt_num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(0.0) => "0".into(),
        Some(x) => format!("{x:.3e}"),
    }
}

impl MigrationReport {
    /// `; outputs within tolerance ... in N of M languages`, when outputs were verified.
    fn outputs_summary(&self) -> String {
        let Some(r) = self.outputs_check.as_ref().and_then(|o| o.report.as_ref()) else {
            return String::new();
        };
        let v = &r.result;
        let ok = v.languages.iter().filter(|l| l.ok()).count();
        format!(
            "; outputs within tolerance {} in {ok} of {} languages",
            v.budget,
            v.languages.len()
        )
    }

    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let verdict = if self.ok { "PASSED" } else { "FAILED" };
        let _ = writeln!(s, "# ferry migration report\n");
        if let Some(g) = &self.graph {
            g.markdown(&mut s, verdict, &self.ferry_version);
        } else {
            let _ = writeln!(
            s,
            "**Verification {verdict}**: {} of {} tensors within tolerance; {} bit-exact{}. ferry {}.\n",
            self.tensors.iter().filter(|t| t.check.ok).count(),
            self.tensors.len(),
            self.tensors.iter().filter(|t| t.check.bit_exact).count(),
            self.outputs_summary(),
            self.ferry_version
        );
        }
        let _ = writeln!(
            s,
            "Input format: `{}`; {} parameters.\n",
            self.input_format, self.parameters
        );
        for (title, files) in [("Inputs", &self.inputs), ("Outputs", &self.outputs)] {
            let _ = writeln!(s, "## {title}\n\n| file | bytes | sha256 |\n|---|---:|---|");
            for f in files {
                let _ = writeln!(s, "| `{}` | {} | `{}` |", f.path, f.bytes, f.sha256);
            }
            s.push('\n');
        }
        if let Some(o) = &self.outputs_check {
            match (&o.skipped, &o.report) {
                (Some(why), _) => {
                    let _ = writeln!(
                        s,
                        "## Outputs, per language

Skipped: {why}.
"
                    );
                }
                (_, Some(r)) => {
                    let body = ferry_verify::report::markdown(r);
                    // The verification's own title becomes a section of this report.
                    let body = body.replacen("# ferry verify", "## Outputs, per language", 1);
                    let _ = writeln!(s, "{}", body.replace("\n## Where", "\n### Where"));
                }
                _ => {}
            }
        }
        if let Some(t) = &self.task_eval {
            let _ = writeln!(
                s,
                "## Task check: {}\n\nAccuracy {:.2}% before, {:.2}% after; macro-F1 {:.2}% before, {:.2}% after.\n\n| language | examples | accuracy before % | accuracy after % |\n|---|---:|---:|---:|",
                t.data.display(),
                100.0 * t.accuracy_before,
                100.0 * t.accuracy_after,
                100.0 * t.macro_f1_before,
                100.0 * t.macro_f1_after
            );
            for (lang, d) in &t.per_language {
                let _ = writeln!(
                    s,
                    "| {lang} | {} | {:.1} | {:.1} |",
                    d.n,
                    100.0 * d.before,
                    100.0 * d.after
                );
            }
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "## Stages\n\n| stage | seconds | what happened |\n|---|---:|---|"
        );
        for st in &self.stages {
            let _ = writeln!(s, "| {} | {:.3} | {} |", st.name, st.seconds, st.summary);
        }
        s.push('\n');
        if !self.missing.is_empty() {
            let _ = writeln!(s, "## Missing or unexpected tensors\n");
            for m in &self.missing {
                let _ = writeln!(s, "- `{m}`");
            }
            s.push('\n');
        }
        if !self.tied_groups.is_empty() {
            let _ = writeln!(s, "## Tied tensors (one storage)\n");
            for g in &self.tied_groups {
                let _ = writeln!(
                    s,
                    "- {}",
                    g.iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(" = ")
                );
            }
            s.push('\n');
        }
        if !self.rename.rules.is_empty() {
            let _ = writeln!(s, "## Renaming\n\n| rule | names changed |\n|---|---:|");
            for r in &self.rename.rules {
                let _ = writeln!(s, "| `{}` | {} |", r.rule, r.applied);
            }
            let _ = writeln!(
                s,
                "\n{} names untouched by any rule.\n",
                self.rename.untouched.len()
            );
        }
        let _ = writeln!(
            s,
            "## Tensors\n\n| tensor | from | to | shape | action | bit-exact | max abs | max rel | cosine | ok |\n|---|---|---|---|---|---|---:|---:|---:|---|"
        );
        for TensorRecord {
            planned: t, check, ..
        } in &self.tensors
        {
            let name = if t.source == t.name {
                format!("`{}`", t.name)
            } else {
                format!("`{}` ← `{}`", t.name, t.source)
            };
            let mut note = String::new();
            if let Some(r) = &t.kept_float {
                let _ = write!(note, " (kept float: {r})");
            }
            if let Some(r) = &t.fallback {
                let _ = write!(note, " (fallback: {r})");
            }
            if t.imatrix == Some(ferry_io::convert::ImatrixUse::Used) {
                note.push_str(" (imatrix)");
            }
            if let Some(tied) = &t.tied_to {
                let _ = write!(note, " (tied to `{tied}`)");
            }
            let _ = writeln!(
                s,
                "| {name}{note} | {} | {} | {:?} | {:?} | {} | {} | {} | {} | {} |",
                t.from,
                t.to,
                t.shape,
                t.action,
                if check.bit_exact { "yes" } else { "no" },
                fmt_num(check.max_abs),
                fmt_num(check.max_rel),
                check
                    .cosine
                    .map(|c| format!("{c:.6}"))
                    .unwrap_or_else(|| "-".into()),
                if check.ok { "yes" } else { "**NO**" },
            );
        }
        s
    }
}

impl GraphRecord {
    fn markdown(&self, s: &mut String, verdict: &str, version: &str) {
        let p = &self.pipeline;
        let ok = self.end_to_end.iter().filter(|c| c.ok).count();
        let _ = writeln!(
            s,
            "**Verification {verdict}**: {ok} of {} output checks within tolerance (original graph vs the written file){}. ferry {version}.\n",
            self.end_to_end.len(),
            p.failed.as_ref().map(|f| format!("; pass `{f}` broke the tolerance, nothing was written")).unwrap_or_default()
        );
        let _ = writeln!(s, "## Graph\n\n| op | before | after |\n|---|---:|---:|");
        for (op, b, a) in p.op_counts() {
            let _ = writeln!(s, "| `{op}` | {b} | {a} |");
        }
        let _ = writeln!(s, "\n## Passes\n\n| pass | nodes | rewrites | left alone | max abs after | ok |\n|---|---|---:|---:|---:|---|");
        for r in &p.passes {
            let (m, ok) = r.verified.as_ref().map_or(("-".to_string(), "-"), |v| {
                (fmt_num(Some(v.max_abs)), if v.ok { "yes" } else { "NO" })
            });
            let _ = writeln!(
                s,
                "| {} | {} -> {} | {} | {} | {m} | {ok} |",
                r.pass,
                r.nodes.0,
                r.nodes.1,
                r.matched.len(),
                r.skipped.len()
            );
        }
        for r in p
            .passes
            .iter()
            .filter(|r| !r.matched.is_empty() || !r.skipped.is_empty())
        {
            let _ = writeln!(s, "\n### {}\n", r.pass);
            for m in &r.matched {
                let _ = writeln!(s, "- fused: {m}");
            }
            for k in &r.skipped {
                let _ = writeln!(s, "- left alone: `{}`: {}", k.node, k.reason);
            }
        }
        let _ = writeln!(s, "\n## Outputs, original vs written\n\n| output | shape | max abs | max rel | ok |\n|---|---|---:|---:|---|");
        for c in &self.end_to_end {
            let _ = writeln!(
                s,
                "| `{}` | {:?} | {} | {} | {} |",
                c.name,
                c.shapes.0,
                fmt_num(c.max_abs),
                fmt_num(c.max_rel),
                c.ok
            );
        }
        s.push('\n');
    }
}
