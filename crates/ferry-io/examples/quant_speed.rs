//! Conversion speed of every GGML quantization type on one input, in process: the library
//! calls `ferry convert IN OUT.gguf --quant TYPE` makes (open, prepare, plan, write with the
//! error statistics), timed per type, with each type's ratio to q4_0 in the same round.
//!
//! ```sh
//! # a 0.77 GB synthetic checkpoint: 46 f32 matrices of 2048 x 2048, roughly normal values
//! cargo run --release -p ferry-io --example quant_speed -- make /tmp/q/synthetic.safetensors
//! # each type once to warm up, then --repeat rounds; types interleaved within a round
//! cargo run --release -p ferry-io --example quant_speed -- time /tmp/q/synthetic.safetensors \
//!     /tmp/q --types q4_0,q2_k,q3_k,q4_k,q5_k,q6_k --repeat 3
//! # the kernels alone (quantize_measured on 64 MiB in memory), GiB/s of f32 read
//! cargo run --release -p ferry-io --example quant_speed -- kernel --types q4_0,q4_k
//! # on 1 MiB (in cache), best of 400 rounds: short rounds, so the best escapes a noisy VM
//! cargo run --release -p ferry-io --example quant_speed -- kernel --types q4_0,q6_k --mib 1 --repeat 400
//! ```

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ferry_io::convert::{self, ConvertOptions, Plan, TargetFormat};
use ferry_io::{quant, Checkpoint, DType, Metadata, OutTensor};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let types: Vec<DType> = flag("--types")
        .unwrap_or_else(|| "q4_0,q2_k,q3_k,q4_k,q5_k,q6_k".into())
        .split(',')
        .map(|t| t.parse::<DType>().map_err(anyhow::Error::from))
        .collect::<Result<_>>()?;
    let repeat: usize = flag("--repeat").map_or(Ok(3), |r| r.parse())?;
    match args.first().map(String::as_str) {
        Some("make") => {
            let out = args.get(1).context("make OUT.safetensors")?;
            let n: usize = flag("--tensors").map_or(Ok(46), |r| r.parse())?;
            let side: usize = flag("--side").map_or(Ok(2048), |r| r.parse())?;
            make(Path::new(out), n, side)
        }
        Some("time") => {
            let input = PathBuf::from(args.get(1).context("time IN OUTDIR")?);
            let dir = PathBuf::from(args.get(2).context("time IN OUTDIR")?);
            time_convert(&input, &dir, &types, repeat)
        }
        Some("kernel") => {
            let mib: usize = flag("--mib").map_or(Ok(64), |r| r.parse())?;
            time_kernels(&types, repeat, mib)
        }
        _ => bail!("usage: quant_speed make|time|kernel ... (see the file's doc comment)"),
    }
}

/// Roughly normal values (sum of four uniforms), deterministic per seed.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            let mut acc = 0f32;
            for _ in 0..4 {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                acc += (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            }
            acc * 0.05
        })
        .collect()
}

fn make(out: &Path, n: usize, side: usize) -> Result<()> {
    let data: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            values(side * side, i as u64 + 1)
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        })
        .collect();
    let outs: Vec<OutTensor<'_>> = data
        .iter()
        .enumerate()
        .map(|(i, d)| {
            OutTensor::new(
                format!("layers.{i}.weight"),
                DType::F32,
                vec![side, side],
                move || Ok(Cow::Borrowed(d.as_slice())),
            )
        })
        .collect();
    ferry_io::formats::safetensors::write(out, &outs, &Metadata::new(), &mut |_, _| {})?;
    println!(
        "wrote {} ({n} x {side} x {side} f32, {:.3} GB)",
        out.display(),
        (n * side * side * 4) as f64 / 1e9
    );
    Ok(())
}

/// One `ferry convert IN OUT.gguf --quant dtype`, as the CLI runs it; returns the seconds.
fn convert_once(input: &Path, out: &Path, dtype: DType) -> Result<f64> {
    let start = Instant::now();
    let opts = ConvertOptions {
        quant: Some(dtype),
        ..Default::default()
    };
    let ck = Checkpoint::open(input)?;
    let (ck, layout) = convert::prepare(ck, TargetFormat::Gguf, false)?;
    let mut plan = Plan::new(&ck, TargetFormat::Gguf, &opts)?;
    plan.layout = layout;
    let metadata = convert::output_metadata(&ck, &plan)?;
    convert::write(&plan, &ck, out, &metadata, None, &mut |_, _| {})?;
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(!plan.quant_errors().is_empty(), "nothing was quantized");
    Ok(secs)
}

fn time_convert(input: &Path, dir: &Path, types: &[DType], repeat: usize) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut secs: Vec<Vec<f64>> = vec![Vec::new(); types.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); types.len()];
    for round in 0..=repeat {
        for (i, &t) in types.iter().enumerate() {
            let out = dir.join(format!("out-{t}.gguf"));
            // Flush earlier writes first so one run's writeback does not land in the next.
            std::process::Command::new("sync").status()?;
            let c0 = cpu_seconds();
            let s = convert_once(input, &out, t)?;
            let c = cpu_seconds() - c0;
            std::fs::remove_file(&out)?;
            if round > 0 {
                secs[i].push(s);
                cpu[i].push(c);
            }
        }
    }
    report(types, &secs, "wall s");
    println!();
    report(types, &cpu, "CPU s");
    Ok(())
}

/// CPU seconds (user + system) this process has used: on a shared machine, less disturbed by
/// other processes than the wall clock.
fn cpu_seconds() -> f64 {
    // SAFETY: `getrusage` fills the zeroed struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn time_kernels(types: &[DType], repeat: usize, mib: usize) -> Result<()> {
    let x = values(mib << 18, 7);
    let mut secs: Vec<Vec<f64>> = vec![Vec::new(); types.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); types.len()];
    for round in 0..=repeat {
        for (i, &t) in types.iter().enumerate() {
            let (start, c0) = (Instant::now(), cpu_seconds());
            let (q, _) = quant::quantize_measured(&x, t)?;
            let (s, c) = (start.elapsed().as_secs_f64(), cpu_seconds() - c0);
            std::hint::black_box(q);
            if round > 0 {
                secs[i].push(s);
                cpu[i].push(c);
            }
        }
    }
    report(types, &secs, &format!("s for {mib} MiB"));
    println!();
    report(types, &cpu, &format!("CPU s for {mib} MiB"));
    Ok(())
}

/// Best, median and worst per type, and the ratio of each round's time to q4_0's in that round.
fn report(types: &[DType], secs: &[Vec<f64>], unit: &str) {
    let base = types.iter().position(|&t| t == DType::Q4_0);
    println!(
        "| type | best {unit} | median | worst | best / q4_0 best | per-round / q4_0 (min-max) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (i, t) in types.iter().enumerate() {
        let mut v = secs[i].clone();
        v.sort_by(f64::total_cmp);
        let (best, med, worst) = (v[0], v[v.len() / 2], v[v.len() - 1]);
        let (ratio, spread) = match base {
            Some(b) => {
                let mut bv = secs[b].clone();
                bv.sort_by(f64::total_cmp);
                let r: Vec<f64> = secs[i].iter().zip(&secs[b]).map(|(a, b)| a / b).collect();
                let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = r.iter().copied().fold(0.0, f64::max);
                (
                    format!("{:.2}x", best / bv[0]),
                    format!("{lo:.2}x-{hi:.2}x"),
                )
            }
            None => ("-".into(), "-".into()),
        };
        // Three significant digits at least (1 MiB rounds take about a millisecond).
        let digits = if best < 0.01 { 5 } else { 3 };
        println!(
            "| {t} | {best:.digits$} | {med:.digits$} | {worst:.digits$} | {ratio} | {spread} |"
        );
    }
}
