//! The verification report: `report.json` (what a machine replays), `report.md` (what a
//! person reads) and `report.svg` (one bar pair per language).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ferry_io::FileError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::probes::Probe;
use crate::run::Verification;

/// A file the verification read, by content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    /// As given.
    pub path: PathBuf,
    /// SHA-256 of its bytes (of every regular file in it, in name order, for a folder).
    pub sha256: String,
}

/// Everything needed to re-run a verification and what it found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyReport {
    /// ferry's version.
    pub ferry_version: String,
    /// The original model.
    pub original: Input,
    /// The migrated model.
    pub migrated: Input,
    /// The tokenizer both were fed through.
    pub tokenizer: Input,
    /// Where the probes came from (`embedded:udhr-test` or a corpus path).
    pub probe_source: String,
    /// The probes themselves (so a replay needs no corpus).
    pub probes: Vec<Probe>,
    /// Where the migrated model ran, when it was placed on devices (ferry-device's plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<serde_json::Value>,
    /// The outcome.
    pub result: Verification,
}

/// SHA-256 of a file, or of a folder's regular files in name order (names included).
pub fn sha256_of(path: &Path) -> Result<String> {
    let err = |e: std::io::Error| FileError::io(path, e);
    let mut h = Sha256::new();
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(err)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for f in files {
            h.update(
                f.file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or_default(),
            );
            hash_file(&f, &mut h)?;
        }
    } else {
        hash_file(path, &mut h)?;
    }
    Ok(format!("{:x}", h.finalize()))
}

fn hash_file(path: &Path, h: &mut Sha256) -> Result<()> {
    let mut f = std::fs::File::open(path).map_err(|e| FileError::io(path, e))?;
    std::io::copy(&mut f, h).map_err(|e| FileError::io(path, e))?;
    Ok(())
}

impl Input {
    /// Records `path` with its hash.
    pub fn of(path: &Path) -> Result<Input> {
        Ok(Input {
            path: path.to_path_buf(),
            sha256: sha256_of(path)?,
        })
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// The report a person reads.
pub fn markdown(r: &VerifyReport) -> String {
    let v = &r.result;
    let mut s = String::new();
    let _ = writeln!(s, "# ferry verify\n");
    let _ = writeln!(
        s,
        "- original: `{}`\n- migrated: `{}`\n- probes: {} texts from {} ({} languages), first {} tokens each\n- quantized matrices: {}\n- tolerance: {}\n- result: **{}**\n",
        r.original.path.display(),
        r.migrated.path.display(),
        r.probes.len(),
        r.probe_source,
        v.languages.len(),
        v.max_tokens,
        match v.kernels {
            ferry_runtime::Kernels::F32 => "dequantized to f32 at load (transformers' numerics)",
            ferry_runtime::Kernels::Ggml => "candle's GGML kernels, 8-bit activations (llama.cpp's CPU numerics)",
        },
        v.budget,
        if v.ok { "every language within tolerance".to_string() } else {
            format!("{} of {} languages outside tolerance", v.languages.iter().filter(|l| !l.ok()).count(), v.languages.len())
        }
    );
    let mut rows = v.languages.clone();
    rows.push(v.overall.clone());
    if v.kind == "decoder" {
        let _ = writeln!(s, "| language | tokens | mean KLD ± | KLD p99 | KLD max | same top-1 | RMS Δp | PPL orig | PPL new | ln ratio | verdict |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
        for l in &rows {
            if let Some(d) = &l.decoder {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.5} ± {:.5} | {:.4} | {:.4} | {} | {} | {:.2} | {:.2} | {:+.4} | {} |",
                    l.lang, d.tokens, d.kld_mean, d.kld_stderr, d.kld.p99, d.kld_max,
                    pct(d.same_top1), pct(d.rms_dp), d.ppl_original, d.ppl_migrated,
                    d.ln_ppl_ratio, verdict(l)
                );
            }
        }
    } else if v.kind == "classifier" {
        let _ = writeln!(s, "| language | texts | same class | mean KLD | KLD max | accuracy orig | accuracy new | verdict |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        let acc = |a: Option<f64>| a.map_or("-".into(), pct);
        for l in &rows {
            if let Some(c) = &l.classifier {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.2e} | {:.2e} | {} | {} | {} |",
                    l.lang,
                    c.texts,
                    pct(c.agreement),
                    c.kld_mean,
                    c.kld_max,
                    acc(c.accuracy_original),
                    acc(c.accuracy_migrated),
                    verdict(l)
                );
            }
        }
    } else {
        let _ = writeln!(s, "| language | texts | mean cosine | min cosine | max abs error | neighbour agreement | verdict |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        for l in &rows {
            if let Some(e) = &l.encoder {
                let nn = e.neighbour_agreement.map_or("-".into(), pct);
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.6} | {:.6} | {:.3e} | {} | {} |",
                    l.lang,
                    e.texts,
                    e.cosine_mean,
                    e.cosine_min,
                    e.max_abs,
                    nn,
                    verdict(l)
                );
            }
        }
    }
    if !v.layers.is_empty() {
        let _ = writeln!(
            s,
            "\n## Where the error enters (SQNR per layer, all probes)\n"
        );
        let worst = v
            .layers
            .iter()
            .filter_map(|l| Some((l, l.sqnr_db?)))
            .max_by(|a, b| a.0.drop_db.total_cmp(&b.0.drop_db));
        if let Some((w, db)) = worst {
            let _ = writeln!(
                s,
                "Largest drop: **{}**, SQNR falls {:.1} dB to {db:.1} dB.\n",
                w.layer, w.drop_db
            );
        }
        let _ = writeln!(s, "| layer | SQNR (dB) | change (dB) |\n|---|---|---|");
        for l in &v.layers {
            let db = l.sqnr_db.map_or("identical".into(), |d| format!("{d:.1}"));
            let _ = writeln!(s, "| {} | {db} | {:+.1} |", l.layer, -l.drop_db);
        }
    }
    s
}

fn verdict(l: &crate::run::LanguageResult) -> String {
    if l.ok() {
        "ok".into()
    } else {
        format!("FAIL: {}", l.failed.join("; "))
    }
}

/// One bar pair per language: mean KLD (left axis, scaled to the largest) and same top-1
/// (decoders) or same class (classifiers), or 1 - min cosine and neighbour agreement
/// (encoders).
pub fn svg(v: &Verification) -> String {
    let n = v.languages.len().max(1);
    let (w, h, pad) = (24 * n + 80, 260usize, 40usize);
    let vals: Vec<(f64, f64)> = v
        .languages
        .iter()
        .map(|l| match (&l.decoder, &l.encoder, &l.classifier) {
            (Some(d), _, _) => (d.kld_mean, d.same_top1),
            (_, Some(e), _) => (1.0 - e.cosine_min, e.neighbour_agreement.unwrap_or(1.0)),
            (_, _, Some(c)) => (c.kld_mean, c.agreement),
            _ => (0.0, 0.0),
        })
        .collect();
    let max = vals.iter().map(|v| v.0).fold(1e-12, f64::max);
    let (a, b) = if v.kind == "decoder" {
        ("mean KLD", "same top-1")
    } else if v.kind == "classifier" {
        ("mean KLD", "same class")
    } else {
        ("1 - min cosine", "neighbour agreement")
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"10\">\n<text x=\"{pad}\" y=\"14\">{a} (red, max {max:.3e}) and {b} (blue, 0..1) per language</text>\n",
        h + 40
    );
    let plot = (h - pad) as f64;
    for (i, (l, (x, y))) in v.languages.iter().zip(&vals).enumerate() {
        let x0 = pad + 24 * i;
        let hx = plot * x / max;
        let hy = plot * y;
        let _ = writeln!(
            s,
            "<rect x=\"{x0}\" y=\"{:.1}\" width=\"10\" height=\"{hx:.1}\" fill=\"#c0392b\"><title>{} {a} {x:.5}</title></rect>\n<rect x=\"{}\" y=\"{:.1}\" width=\"10\" height=\"{hy:.1}\" fill=\"#2e6da4\"><title>{} {b} {y:.3}</title></rect>\n<text x=\"{x0}\" y=\"{}\">{}</text>",
            h as f64 - hx, l.lang, x0 + 11, h as f64 - hy, l.lang, h + 14, l.lang
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Writes `report.json`, `report.md` and `report.svg` into `dir` (each atomically).
pub fn write(dir: &Path, r: &VerifyReport) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| FileError::io(dir, e))?;
    let json = serde_json::to_string_pretty(r)
        .map_err(|e| FileError::malformed(dir.join("report.json"), e.to_string()))?;
    let files = [
        ("report.json", json + "\n"),
        ("report.md", markdown(r)),
        ("report.svg", svg(&r.result)),
    ];
    let mut out = Vec::new();
    for (name, text) in files {
        let p = dir.join(name);
        ferry_io::atomic::write_atomic(&p, |w| {
            std::io::Write::write_all(w, text.as_bytes()).map_err(|e| ferry_io::Error::io(&p, e))
        })?;
        out.push(p);
    }
    Ok(out)
}

/// Reads a `report.json`.
pub fn read(path: &Path) -> Result<VerifyReport> {
    let text = std::fs::read(path).map_err(|e| FileError::io(path, e))?;
    Ok(serde_json::from_slice(&text)
        .map_err(|e| FileError::malformed(path, format!("not a ferry verify report: {e}")))?)
}
