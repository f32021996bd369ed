//! `ferry train`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use ferry_train::config::TrainConfig;
use ferry_train::run::{self, Event, RunOptions};

/// Arguments of `ferry train`.
#[derive(clap::Args)]
#[command(
    after_help = "The config names the data, tokenizer, model, optimizer, schedule and loop; see \
configs/langid-udhr.toml and docs/training.md. The run folder receives:\n  \
checkpoints/step-N/  model + optimizer + trainer state (resume from the newest with --resume)\n  \
best/ last/          model folders for `ferry eval` and `ferry migrate`\n  \
metrics.jsonl        one line per step and per dev evaluation\n  \
report.md report.json accuracy.svg coverage.svg loss.svg   the test-set report\n\n\
Examples:\n  ferry train --config configs/langid-udhr.toml\n  ferry train --config configs/langid-udhr.toml --resume\n  ferry train --config run.toml --out runs/try2 --steps 100 --json"
)]
pub struct Args {
    /// The TOML config.
    #[arg(long)]
    config: PathBuf,
    /// Continue from the newest checkpoint in the run folder, exactly where it stopped.
    #[arg(long)]
    resume: bool,
    /// Run folder (overrides [output] dir).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Optimizer steps (overrides [train] steps).
    #[arg(long)]
    steps: Option<u64>,
    /// Threads (overrides [train] threads; default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Stop after this step (as if interrupted; resume later with --resume).
    #[arg(long, hide = true)]
    stop_after: Option<u64>,
    /// Check the config and show the plan; read and write nothing else.
    #[arg(long)]
    dry_run: bool,
    /// Print JSON lines (steps, evaluations, checkpoints, the summary) on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// Sizes the thread pools candle and rayon use, before any work starts.
pub fn set_threads(threads: Option<usize>) {
    if let Some(t) = threads.filter(|&t| t > 0) {
        // candle reads RAYON_NUM_THREADS for its kernels; rayon's global pool is set directly.
        // SAFETY: called before any thread is spawned.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", t.to_string()) };
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global();
    }
}

/// Runs `ferry train`.
pub fn run(a: Args) -> Result<ExitCode> {
    let cfg = configure(&a)?;
    if a.dry_run {
        print_plan(&a, &cfg);
        return Ok(ExitCode::SUCCESS);
    }
    set_threads(cfg.train.threads);
    let spec = cfg
        .train
        .device_spec()
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.config.display()))?;
    let device = ferry_device::open(spec)?;
    let printer = Printer {
        bar: crate::progress::steps_bar(cfg.train.steps, a.quiet || a.json),
        json: a.json,
        quiet: a.quiet,
    };
    let opts = RunOptions {
        resume: a.resume,
        device: device.clone(),
        stop_after: a.stop_after,
    };
    let summary = run::train(&cfg, &opts, &mut |e| printer.event(e))?;
    printer.bar.finish_and_clear();
    let finished = summary.steps >= cfg.train.steps || summary.stopped_early;
    let evals = if finished {
        run::final_report(&cfg, &summary, &device)?
    } else {
        Vec::new()
    };
    if a.json {
        print_summary_json(&summary, &evals);
    } else {
        print_summary(&a, &cfg, &summary, &evals, finished);
    }
    Ok(ExitCode::SUCCESS)
}

/// The config with the command line's overrides, checked.
fn configure(a: &Args) -> Result<TrainConfig> {
    let mut cfg = TrainConfig::load(&a.config)?;
    if let Some(out) = &a.out {
        cfg.output.dir = out.clone();
    }
    if let Some(s) = a.steps {
        cfg.train.steps = s;
    }
    if a.threads.is_some() {
        cfg.train.threads = a.threads;
    }
    cfg.check()
        .map_err(anyhow::Error::msg)
        .with_context(|| a.config.display().to_string())?;
    Ok(cfg)
}

/// What `--dry-run` prints.
fn print_plan(a: &Args, cfg: &TrainConfig) {
    if a.json {
        let plan = serde_json::json!({"dry_run": true, "config": cfg, "resume": a.resume});
        println!("{plan}");
    } else {
        println!(
            "config {} is valid; would train {} steps into {} (resume: {})",
            a.config.display(),
            cfg.train.steps,
            cfg.output.dir.display(),
            a.resume
        );
    }
}

/// Shows a run's events: the progress bar, JSON lines on stdout, or lines on stderr.
struct Printer {
    bar: indicatif::ProgressBar,
    json: bool,
    quiet: bool,
}

impl Printer {
    fn event(&self, e: Event<'_>) {
        let (bar, json, quiet) = (&self.bar, self.json, self.quiet);
        match e {
            Event::Preparing(what) => bar.set_message(format!("preparing {what}")),
            Event::Read {
                file,
                records,
                issues,
            } => {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"event": "read", "file": file, "records": records, "issues": issues})
                    );
                } else if !quiet {
                    bar.suspend(|| super::data::print_issues(file, issues));
                }
            }
            Event::Started {
                start,
                total,
                params,
                examples,
            } => {
                bar.set_position(start);
                bar.set_message(String::new());
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"event": "started", "start": start, "total": total, "params": params, "examples": examples})
                    );
                } else if !quiet {
                    eprintln!(
                        "training {params} parameters on {examples} examples, steps {start}..{total}"
                    );
                }
            }
            Event::Step(r) => {
                bar.set_position(r.step);
                bar.set_message(format!("loss {:.4} lr {:.2e}", r.loss, r.lr));
                if json {
                    println!("{}", serde_json::json!({"event": "step", "record": r}));
                }
            }
            Event::Evaluated(r) => self.evaluated(r),
            Event::Checkpoint(p) => {
                if json {
                    println!("{}", serde_json::json!({"event": "checkpoint", "path": p}));
                }
            }
        }
    }

    fn evaluated(&self, r: &run::EvalRecord) {
        if self.json {
            println!("{}", serde_json::json!({"event": "eval", "record": r}));
        } else if !self.quiet {
            self.bar.suspend(|| {
                eprintln!(
                    "step {}: dev loss {:.4}, accuracy {:.1}%, macro-F1 {:.1}%{}",
                    r.step,
                    r.dev_loss,
                    100.0 * r.dev_accuracy,
                    100.0 * r.dev_macro_f1,
                    if r.best { " (best)" } else { "" }
                )
            });
        }
    }
}

/// The last JSON line: steps, the model folder and every evaluation.
fn print_summary_json(summary: &run::Summary, evals: &[(String, ferry_train::eval::Evaluation)]) {
    let ev: Vec<_> = evals.iter().map(|(n, e)| serde_json::json!({"name": n, "accuracy": e.report.overall.accuracy, "macro_f1": e.report.overall.macro_f1, "n": e.report.overall.n, "issues": e.issues})).collect();
    println!(
        "{}",
        serde_json::json!({"event": "finished", "steps": summary.steps, "stopped_early": summary.stopped_early, "model": summary.model_dir, "evaluations": ev})
    );
}

/// How the run ended, the test file's issues and every evaluation, in words.
fn print_summary(
    a: &Args,
    cfg: &TrainConfig,
    summary: &run::Summary,
    evals: &[(String, ferry_train::eval::Evaluation)],
    finished: bool,
) {
    if !finished && !a.quiet {
        eprintln!(
            "stopped after step {}; continue with --resume",
            summary.steps
        );
    } else if !a.quiet {
        eprintln!(
            "done: {} steps{}; model: {}",
            summary.steps,
            if summary.stopped_early {
                " (early stopping)"
            } else {
                ""
            },
            summary.model_dir.display()
        );
    }
    // Every evaluation reads the test file, so its issues are printed once.
    if let (Some((_, e)), Some(test), false) = (evals.first(), &cfg.data.test, a.quiet) {
        super::data::print_issues(test, &e.issues);
    }
    for (n, e) in evals {
        println!(
            "{n}: accuracy {:.1}%, macro-F1 {:.1}% on {} examples",
            100.0 * e.report.overall.accuracy,
            100.0 * e.report.overall.macro_f1,
            e.report.overall.n
        );
    }
    if !evals.is_empty() {
        println!("report: {}", summary.dir.join("report.md").display());
    }
}
