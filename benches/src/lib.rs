//! Shared helpers for ferry's benches: synthetic checkpoints written by ferry itself, and the
//! command-line handling of the side-by-side benchmark binaries.

use std::borrow::Cow;
use std::path::Path;

use ferry_io::{DType, Metadata, OutTensor};

/// Deterministic pseudo-random f32 values in [-1, 1) (xorshift; no dependency).
pub fn synthetic_f32(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Writes `tensors` square f32 matrices of side `side` to `path` as a PyTorch zip checkpoint.
pub fn write_synthetic_pth(path: &Path, tensors: usize, side: usize) {
    let data: Vec<Vec<u8>> = (0..tensors)
        .map(|i| bytemuck_bytes(&synthetic_f32(side * side, i as u64)))
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
    ferry_io::formats::pytorch::write(path, &outs, &Metadata::new(), &mut |_, _| {})
        .expect("write synthetic pth");
}

fn bytemuck_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub mod train;

/// Whether `args` ask for help (`--help` or `-h`); if so, prints `usage` (the binary's doc)
/// on stdout. A benchmark binary's `main` returns when this is true.
pub fn help_requested(args: &[String], usage: &str) -> bool {
    let asked = args.iter().skip(1).any(|a| a == "--help" || a == "-h");
    if asked {
        println!("{}", usage.trim_end());
    }
    asked
}

/// The value after `name` on a benchmark binary's command line.
pub fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The products `--shapes "m,k,n m,k,n"` names in `args`, else `default`. Panics on a
/// malformed list (the benchmark's caller has to fix the command).
pub fn shapes_arg(
    args: &[String],
    default: &[(usize, usize, usize)],
) -> Vec<(usize, usize, usize)> {
    let Some(list) = arg(args, "--shapes") else {
        return default.to_vec();
    };
    list.split_whitespace()
        .map(|t| {
            match t
                .split(',')
                .map(str::parse)
                .collect::<Result<Vec<usize>, _>>()
            {
                Ok(v) if v.len() == 3 => (v[0], v[1], v[2]),
                _ => panic!("--shapes: {t:?} is not m,k,n"),
            }
        })
        .collect()
}

/// mimalloc v3's `mi_option_purge_delay` (its index in `mimalloc.h`; libmimalloc-sys 0.1.49
/// names no constant for it).
const MI_OPTION_PURGE_DELAY: i32 = 15;

/// The allocator setting the `ferry` binary uses: freed pages are kept, not returned to the OS
/// (a step or forward pass re-allocates the same large buffers; each fresh page costs a fault
/// and a zeroing). Call at the start of `main`.
pub fn keep_freed_pages() {
    // SAFETY: sets a process-wide allocator option; no allocation depends on its old value.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Runs candle and rayon on `threads` threads (`--threads`); call before any thread starts.
pub fn set_threads(threads: &str) {
    let t: usize = threads.parse().expect("--threads N");
    // SAFETY: called before any thread is spawned.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", t.to_string()) };
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(t)
        .build_global();
}

/// The best of `runs` timed calls of `f` in milliseconds, after one untimed warm-up call.
pub fn best_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..runs)
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_is_asked_by_flag_not_by_the_program_name() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(help_requested(
            &args(&["bench", "--runs", "3", "--help"]),
            "usage"
        ));
        assert!(help_requested(&args(&["bench", "-h"]), "usage"));
        assert!(
            !help_requested(&args(&["-h"]), "usage"),
            "argv[0] is the program"
        );
        assert!(!help_requested(&args(&["bench", "--runs", "3"]), "usage"));
    }
}
