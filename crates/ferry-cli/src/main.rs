//! `ferry`: carry trained models across formats, and prove they still compute the same.
//!
//! This binary only parses arguments and composes the library crates (`ferry-io`,
//! `ferry-migrate`, `ferry-data`, `ferry-train`, `ferry-graph`); all real work lives there.

mod args;
mod cmd;
mod progress;
mod units;

use std::process::ExitCode;

/// mimalloc instead of glibc's allocator: tokenizing a corpus allocates and frees a few small
/// buffers per word, and glibc malloc/free took about a third of `ferry data batch`'s time
/// (measured with `perf`, docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc v3's `mi_option_purge_delay` (its index in `mimalloc.h`; libmimalloc-sys 0.1.49
/// names no constant for it).
const MI_OPTION_PURGE_DELAY: i32 = 15;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Carry trained models across formats and prove they still compute the same",
    long_about = "ferry reads PyTorch (.pth/.bin zip and legacy, TorchScript .pt), safetensors (single and \
sharded), GGUF, NumPy (.npy/.npz) and Hugging Face model folders; converts dtypes, quantizes, renames; \
writes safetensors, GGUF, .npz and .pth; and verifies every tensor against its source. It never executes \
code from a checkpoint.",
    after_help = "Examples:\n  ferry migrate                                   # the built-in demo model, end to end\n  ferry inspect model.pth\n  ferry convert model.pth model.safetensors --dtype bf16 --keep f32:'.*norm.*'\n  ferry diff model.pth model.safetensors\n  ferry migrate ./all-MiniLM-L6-v2 --to gguf --quant q8_0 --out minilm-q8\n  ferry data stats corpora/udhr/train.tsv\n  ferry data tokenizer train corpora/udhr/train.tsv --kind unigram --vocab-size 8000 --out tok.json\n  ferry train --config configs/langid-udhr.toml\n  ferry eval --model runs/langid-udhr/best --data corpora/udhr/test.tsv --snippet-words 4\n  ferry optimize model.onnx model.opt.onnx --verify\n  ferry run model.onnx --input x=x.npy --output y.npz\n  ferry devices\n  ferry place target/models/SmolLM2-135M --dtype bf16\n  ferry calibrate target/models/SmolLM2-135M --out smollm2.imatrix.gguf"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a checkpoint's format, tensors, parameter count, tied groups and metadata.
    Inspect(cmd::inspect::Args),
    /// Convert a checkpoint to another format, dtype or quantization, streaming tensor by tensor.
    Convert(cmd::convert::Args),
    /// Compare two checkpoints tensor by tensor.
    Diff(cmd::diff::Args),
    /// Run the migration pipeline: resolve -> convert -> verify -> report.
    Migrate(Box<cmd::migrate::Args>),
    /// Multilingual corpora: stats, language sampling, tokenizers, vocabularies, batches.
    Data(cmd::data::Args),
    /// Train a classifier from a TOML config, with checkpoints, exact resume and a per-language report.
    Train(cmd::train::Args),
    /// Evaluate a trained model per language (accuracy, macro-F1, confusions, zero-shot split).
    Eval(cmd::eval::Args),
    /// Optimize an ONNX graph (constant folding, BatchNorm folding, LayerNorm/GELU/attention fusion, ...) and verify each pass.
    Optimize(cmd::optimize::Args),
    /// Run a model: a Hugging Face folder or GGUF (Llama family, BERT) or an ONNX graph, on text or .npy/.npz inputs.
    Run(cmd::run::Args),
    /// Run the original and the migrated model on multilingual probes and report, per language, how much the migration changed them.
    Verify(cmd::verify::Args),
    /// List this machine's devices (CPU and RAM, CUDA and Metal devices) and what this build can use.
    Devices(cmd::devices::Args),
    /// Plan where a model's units go on the devices (weights, KV cache, activations), load it there and verify it against the f32 CPU run per language.
    Place(cmd::place::Args),
    /// Compute an importance matrix (llama.cpp's imatrix GGUF) from a language-balanced multilingual sample, for `convert --imatrix`.
    Calibrate(cmd::calibrate::Args),
}

/// Says which temporary files of killed ferry runs the writes of this run removed.
fn report_stale_temporaries() {
    let removed = ferry_io::atomic::take_removed_stale();
    if removed.is_empty() || std::env::args().any(|a| a == "--quiet" || a == "-q") {
        return;
    }
    let total: u64 = removed.iter().map(|r| r.1).sum();
    eprintln!(
        "note: removed {} temporary file(s) of interrupted ferry runs ({}):",
        removed.len(),
        units::human_bytes(total)
    );
    for (p, bytes) in removed {
        eprintln!("  {} ({})", p.display(), units::human_bytes(bytes));
    }
}

fn main() -> ExitCode {
    // Die quietly when stdout is a closed pipe (`ferry inspect ... | head`), as Unix tools do,
    // instead of panicking in `println!`.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Before any thread starts: candle's CPU runtime settings (training and graph execution).
    ferry_train::init_cpu_runtime();
    // Keep freed pages instead of returning them to the OS: a training step or a forward pass
    // frees and re-allocates the same large buffers, and each fresh page costs a fault and a
    // zeroing (about 5% of a transformer step, measured: docs/benchmarks.md).
    // SAFETY: sets a process-wide allocator option; no allocation depends on its old value.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Convert(a) => cmd::convert::run(a),
        Command::Diff(a) => cmd::diff::run(a),
        Command::Migrate(a) => cmd::migrate::run(*a),
        Command::Data(a) => cmd::data::run(a),
        Command::Train(a) => cmd::train::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Optimize(a) => cmd::optimize::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Verify(a) => cmd::verify::run(a),
        Command::Devices(a) => cmd::devices::run(a),
        Command::Place(a) => cmd::place::run(a),
        Command::Calibrate(a) => cmd::calibrate::run(a),
    };
    report_stale_temporaries();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command, `ferry data tokenizer encode` as much as `ferry migrate`, takes `--quiet`
    /// and `--json` (issue 19's CLI consistency), so scripts and people get the same choices everywhere.
    #[test]
    fn every_command_takes_quiet_and_json() {
        fn leaves(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
            for sub in cmd.get_subcommands() {
                leaves(sub, format!("{path} {}", sub.get_name()), out);
            }
            if cmd.get_subcommands().next().is_none() {
                out.push((path, cmd.clone()));
            }
        }
        let mut all = Vec::new();
        leaves(&super::Cli::command(), "ferry".into(), &mut all);
        assert!(all.len() >= 15, "{} commands", all.len());
        let mut missing = Vec::new();
        for (path, cmd) in &all {
            for flag in ["quiet", "json"] {
                if !cmd.get_arguments().any(|a| a.get_long() == Some(flag)) {
                    missing.push(format!("{path}: --{flag}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "commands without:\n{}",
            missing.join("\n")
        );
    }
}
