//! GGML's block formats read into 32-element int8 blocks `w = s * q + o` (`q` in int8, one
//! scale `s` and one offset `o` per block), exactly: the values are the ones candle's (and
//! llama.cpp's) dequantization computes, in the same f32 operations. Layouts from ggml's
//! `ggml-common.h` and `dequantize_row_*` in `ggml-quants.c`.

use candle_core::quantized::GgmlDType;
use half::f16;

/// One 32-element block: `w[i] = s * q[i] + o`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Block32 {
    /// The integers.
    pub q: [i8; 32],
    /// The scale.
    pub s: f32,
    /// The offset (0 for the symmetric types).
    pub o: f32,
}

/// The GGML types read exactly into int8 blocks of 32, with their bytes per GGML block and
/// elements per GGML block. k-quants with 16-element sub-blocks (q2_k, q3_k, q6_k) have two
/// scales per 32 elements and are not among them.
pub fn layout(dtype: GgmlDType) -> Option<(usize, usize)> {
    Some(match dtype {
        GgmlDType::Q4_0 => (18, 32),
        GgmlDType::Q4_1 => (20, 32),
        GgmlDType::Q5_0 => (22, 32),
        GgmlDType::Q5_1 => (24, 32),
        GgmlDType::Q8_0 => (34, 32),
        GgmlDType::Q4K => (144, 256),
        GgmlDType::Q5K => (176, 256),
        _ => return None,
    })
}

/// Whether the type has offsets (`o != 0`).
pub fn has_offsets(dtype: GgmlDType) -> bool {
    matches!(
        dtype,
        GgmlDType::Q4_1 | GgmlDType::Q5_1 | GgmlDType::Q4K | GgmlDType::Q5K
    )
}

fn half(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// The 6-bit scale and min of sub-block `j` of a q4_k/q5_k super-block (ggml's
/// `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Reads one GGML block (`bytes` of the length [`layout`] gives) into 32-element blocks,
/// appended to `out`.
pub fn decode(dtype: GgmlDType, b: &[u8], out: &mut Vec<Block32>) {
    let mut q = [0i8; 32];
    match dtype {
        GgmlDType::Q8_0 => {
            for (d, &s) in q.iter_mut().zip(&b[2..34]) {
                *d = s as i8;
            }
            out.push(Block32 {
                q,
                s: half(b),
                o: 0.0,
            });
        }
        GgmlDType::Q4_0 | GgmlDType::Q4_1 => {
            let (qs, s, o, bias) = match dtype {
                GgmlDType::Q4_0 => (&b[2..18], half(b), 0.0, 8),
                _ => (&b[4..20], half(b), half(&b[2..]), 0),
            };
            for j in 0..16 {
                q[j] = (qs[j] & 0xF) as i8 - bias;
                q[j + 16] = (qs[j] >> 4) as i8 - bias;
            }
            out.push(Block32 { q, s, o });
        }
        GgmlDType::Q5_0 | GgmlDType::Q5_1 => {
            let (qh, qs, s, o, bias) = match dtype {
                GgmlDType::Q5_0 => (&b[2..6], &b[6..22], half(b), 0.0, 16),
                _ => (&b[4..8], &b[8..24], half(b), half(&b[2..]), 0),
            };
            let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
            for j in 0..16 {
                let h0 = (((qh >> j) << 4) & 0x10) as u8;
                let h1 = ((qh >> (j + 12)) & 0x10) as u8;
                q[j] = ((qs[j] & 0xF) | h0) as i8 - bias;
                q[j + 16] = ((qs[j] >> 4) | h1) as i8 - bias;
            }
            out.push(Block32 { q, s, o });
        }
        GgmlDType::Q4K | GgmlDType::Q5K => {
            let (d, dmin, scales) = (half(b), half(&b[2..]), &b[4..16]);
            let (qh, qs) = match dtype {
                GgmlDType::Q4K => (None, &b[16..144]),
                _ => (Some(&b[16..48]), &b[48..176]),
            };
            for j in 0..4 {
                let ql = &qs[32 * j..32 * (j + 1)];
                for half_ in 0..2 {
                    let (sc, m) = scale_min_k4(2 * j + half_, scales);
                    let shift = 4 * half_;
                    for l in 0..32 {
                        let mut v = (ql[l] >> shift) & 0xF;
                        if let Some(qh) = qh {
                            let bit = 1u8 << (2 * j + half_);
                            if qh[l] & bit != 0 {
                                v += 16;
                            }
                        }
                        q[l] = v as i8;
                    }
                    // As ggml: d1 = d * sc, m1 = dmin * m, w = d1 * q - m1.
                    out.push(Block32 {
                        q,
                        s: d * sc as f32,
                        o: -(dmin * m as f32),
                    });
                }
            }
        }
        _ => unreachable!("layout() admits only the types above"),
    }
}
