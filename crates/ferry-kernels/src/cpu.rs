//! The one place ferry asks what the CPU can do. Every SIMD path dispatches on [`features`]:
//! this crate's AVX-512 kernels (packed GEMM, int8 GEMM, attention heads, GELU) and
//! ferry-io's AVX2 quantization kernels, so `FERRY_PORTABLE_KERNELS=1` turns all of them off
//! at once: the portable loops and candle's kernels run instead (to compare the two, to chase
//! a numerical difference, or to test what an older CPU runs on one that has more), and
//! `FERRY_NO_AVX512=1` turns off only the AVX-512 ones (the AVX2 paths then run, as on a CPU
//! without AVX-512). Read once per process.

/// The instruction sets the kernels use, as detected (all off under
/// `FERRY_PORTABLE_KERNELS`, the AVX-512 ones under `FERRY_NO_AVX512`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    /// AVX-512 Foundation.
    pub avx512f: bool,
    /// AVX-512 byte and word instructions.
    pub avx512bw: bool,
    /// AVX-512 on 256-bit registers (and 32 of them): ferry-io's k-quant kernels have a build
    /// with it beside their AVX2 and portable ones.
    pub avx512vl: bool,
    /// AVX-512 VNNI (int8 dot products).
    pub avx512vnni: bool,
    /// Fused multiply-add.
    pub fma: bool,
    /// AVX2 (ferry-io's quantization kernels; with FMA, the causal attention and the int8 GEMM
    /// without AVX-512).
    pub avx2: bool,
}

/// What this CPU offers the kernels (see the module docs).
pub fn features() -> Features {
    static ON: std::sync::OnceLock<Features> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        if std::env::var_os("FERRY_PORTABLE_KERNELS").is_some() {
            return Features::default();
        }
        let mut f = detect();
        if std::env::var_os("FERRY_NO_AVX512").is_some() {
            f.avx512f = false;
            f.avx512bw = false;
            f.avx512vl = false;
            f.avx512vnni = false;
        }
        f
    })
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Features {
    Features {
        avx512f: std::arch::is_x86_feature_detected!("avx512f"),
        avx512bw: std::arch::is_x86_feature_detected!("avx512bw"),
        avx512vl: std::arch::is_x86_feature_detected!("avx512vl"),
        avx512vnni: std::arch::is_x86_feature_detected!("avx512vnni"),
        fma: std::arch::is_x86_feature_detected!("fma"),
        avx2: std::arch::is_x86_feature_detected!("avx2"),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Features {
    Features::default()
}
