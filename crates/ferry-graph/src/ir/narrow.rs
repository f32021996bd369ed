//! ONNX element types that ferry holds in a wider dtype: float8 e4m3fnuz, e5m2 and e5m2fnuz,
//! float4 e2m1 and float8 e8m0 as f32; int4 and int2 as i8; uint4 and uint2 as u8. Every value
//! of these types is exact in the wider one, so most ops never see the difference. The width
//! matters in three places, all here: reading a tensor (the file's bytes are decoded, 4- and
//! 2-bit values unpacked low bits first), writing one (packed back), and making one (Cast and
//! QuantizeLinear round and saturate to the narrow type, as ONNX's reference does through
//! `ml_dtypes`).

use ferry_io::DType;

/// An element type ferry holds wider. The discriminants are ONNX's `TensorProto.DataType`
/// codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Narrow {
    F8E4M3Fnuz = 18,
    F8E5M2 = 19,
    F8E5M2Fnuz = 20,
    U4 = 21,
    I4 = 22,
    F4E2M1 = 23,
    F8E8M0 = 24,
    U2 = 25,
    I2 = 26,
}

/// A small float format: mantissa bits, exponent bias, largest finite value, and which
/// specials it encodes.
struct Minifloat {
    mant: u32,
    exp_bits: u32,
    bias: i32,
    max: f64,
    has_inf: bool,
    has_nan: bool,
    /// NaN is the negative-zero pattern (the `fnuz` types).
    fnuz: bool,
}

const E4M3FN: Minifloat = Minifloat {
    mant: 3,
    exp_bits: 4,
    bias: 7,
    max: 448.0,
    has_inf: false,
    has_nan: true,
    fnuz: false,
};

impl Narrow {
    /// Every narrow type.
    pub const ALL: [Narrow; 9] = [
        Narrow::F8E4M3Fnuz,
        Narrow::F8E5M2,
        Narrow::F8E5M2Fnuz,
        Narrow::U4,
        Narrow::I4,
        Narrow::F4E2M1,
        Narrow::F8E8M0,
        Narrow::U2,
        Narrow::I2,
    ];

    /// The narrow type of an ONNX element type code, `None` for any other code.
    pub fn from_onnx(code: i32) -> Option<Narrow> {
        Narrow::ALL.into_iter().find(|n| n.onnx() == code)
    }

    /// Its ONNX element type code.
    pub fn onnx(self) -> i32 {
        self as i32
    }

    /// ONNX's name for it (`FLOAT8E5M2`).
    pub fn name(self) -> &'static str {
        match self {
            Narrow::F8E4M3Fnuz => "FLOAT8E4M3FNUZ",
            Narrow::F8E5M2 => "FLOAT8E5M2",
            Narrow::F8E5M2Fnuz => "FLOAT8E5M2FNUZ",
            Narrow::U4 => "UINT4",
            Narrow::I4 => "INT4",
            Narrow::F4E2M1 => "FLOAT4E2M1",
            Narrow::F8E8M0 => "FLOAT8E8M0",
            Narrow::U2 => "UINT2",
            Narrow::I2 => "INT2",
        }
    }

    /// The ferry dtype that holds its values.
    pub fn held(self) -> DType {
        match self {
            Narrow::I4 | Narrow::I2 => DType::I8,
            Narrow::U4 | Narrow::U2 => DType::U8,
            _ => DType::F32,
        }
    }

    /// Bits per element in a file.
    pub fn bits(self) -> usize {
        match self {
            Narrow::U4 | Narrow::I4 | Narrow::F4E2M1 => 4,
            Narrow::U2 | Narrow::I2 => 2,
            _ => 8,
        }
    }

    /// The bytes `numel` elements take in a file (packed, the last byte padded); `None` when
    /// that overflows.
    pub fn file_bytes(self, numel: u64) -> Option<u64> {
        Some(numel.checked_mul(self.bits() as u64)?.div_ceil(8))
    }

    /// The range of an integer type, `None` for the float types.
    pub fn int_range(self) -> Option<(i64, i64)> {
        match self {
            Narrow::U4 => Some((0, 15)),
            Narrow::I4 => Some((-8, 7)),
            Narrow::U2 => Some((0, 3)),
            Narrow::I2 => Some((-2, 1)),
            _ => None,
        }
    }

    fn minifloat(self) -> Option<Minifloat> {
        let (mant, exp_bits, bias, max, has_inf, has_nan, fnuz) = match self {
            Narrow::F8E4M3Fnuz => (3, 4, 8, 240.0, false, true, true),
            Narrow::F8E5M2 => (2, 5, 15, 57344.0, true, true, false),
            Narrow::F8E5M2Fnuz => (2, 5, 16, 57344.0, false, true, true),
            Narrow::F4E2M1 => (1, 2, 1, 6.0, false, false, false),
            _ => return None,
        };
        Some(Minifloat {
            mant,
            exp_bits,
            bias,
            max,
            has_inf,
            has_nan,
            fnuz,
        })
    }

    /// The value of one element's bit pattern (the low [`Narrow::bits`] bits of `code`).
    fn decode_one(self, code: u8) -> f64 {
        if let Some((lo, hi)) = self.int_range() {
            let span = hi - lo + 1;
            let v = i64::from(code) & (span - 1);
            return if lo < 0 && v > hi { v - span } else { v } as f64;
        }
        if self == Narrow::F8E8M0 {
            return if code == 0xff {
                f64::NAN
            } else {
                2f64.powi(i32::from(code) - 127)
            };
        }
        decode_minifloat(&self.minifloat().expect("a float type"), code)
    }

    /// Decodes `numel` elements from a file's bytes into the held dtype's little-endian bytes.
    /// `bytes` must hold [`Narrow::file_bytes`] bytes.
    pub fn decode(self, bytes: &[u8], numel: usize) -> Result<Vec<u8>, String> {
        let need = self.file_bytes(numel as u64);
        if need != Some(bytes.len() as u64) {
            return Err(format!(
                "{} bytes of {} but {numel} elements need {}",
                bytes.len(),
                self.name(),
                need.map_or("more than memory holds".into(), |n| n.to_string())
            ));
        }
        let bits = self.bits();
        let per = 8 / bits;
        let mask = ((1u16 << bits) - 1) as u8;
        let codes = (0..numel).map(|i| (bytes[i / per] >> ((i % per) * bits)) & mask);
        Ok(match self.held() {
            DType::F32 => codes
                .flat_map(|c| (self.decode_one(c) as f32).to_le_bytes())
                .collect(),
            _ => codes.map(|c| self.decode_one(c) as i8 as u8).collect(),
        })
    }

    /// Packs held values (the held dtype's little-endian bytes) into a file's bytes; a value
    /// that is not of this type is an error naming it.
    pub fn encode(self, held: &[u8]) -> Result<Vec<u8>, String> {
        let values: Vec<f64> = match self.held() {
            DType::F32 => held
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            DType::I8 => held.iter().map(|&b| f64::from(b as i8)).collect(),
            _ => held.iter().map(|&b| f64::from(b)).collect(),
        };
        let bits = self.bits();
        let codes: Vec<u8> = (0..1u16 << bits).map(|c| c as u8).collect();
        let mut out = vec![0u8; (values.len() * bits).div_ceil(8)];
        for (i, v) in values.iter().enumerate() {
            let code = codes
                .iter()
                .copied()
                .find(|&c| {
                    let d = self.decode_one(c);
                    d == *v && d.is_sign_negative() == v.is_sign_negative()
                        || d.is_nan() && v.is_nan()
                })
                .or_else(|| codes.iter().copied().find(|&c| self.decode_one(c) == *v))
                .ok_or_else(|| format!("{v} is not a {} value", self.name()))?;
            out[i * bits / 8] |= code << ((i * bits) % 8);
        }
        Ok(out)
    }

    /// `x` converted to this type as ONNX's Cast does. Floats round to nearest, ties to even;
    /// past the largest finite value (infinities included) they become it when `saturate`,
    /// else infinity or NaN where the type has them. float8 e8m0 rounds its exponent by
    /// `round_mode` (`up`, `down`, `nearest`). Integers truncate toward zero, and a value out
    /// of range becomes 0 (what the reference's `ml_dtypes` conversion gives).
    pub fn cast(self, x: f64, saturate: bool, round_mode: &str) -> f64 {
        if let Some((lo, hi)) = self.int_range() {
            let t = x.trunc();
            return if x.is_finite() && t >= lo as f64 && t <= hi as f64 {
                t
            } else {
                0.0
            };
        }
        if self == Narrow::F8E8M0 {
            return self.decode_one(e8m0_code(x as f32, saturate, round_mode));
        }
        round_minifloat(&self.minifloat().expect("a float type"), x, saturate)
    }

    /// `x` (already rounded to an integer, for the integer types) saturated or rounded into
    /// this type as QuantizeLinear does.
    pub fn quantize(self, x: f64, saturate: bool) -> f64 {
        match self.int_range() {
            Some((lo, hi)) => x.clamp(lo as f64, hi as f64),
            None => self.cast(x, saturate, "up"),
        }
    }
}

/// `x` rounded to float8 e4m3fn (ONNX type 17, which candle holds natively), as [`Narrow::cast`].
pub fn round_e4m3fn(x: f64, saturate: bool) -> f64 {
    round_minifloat(&E4M3FN, x, saturate)
}

fn decode_minifloat(f: &Minifloat, code: u8) -> f64 {
    let width = 1 + f.exp_bits + f.mant;
    let sign_bit = 1u8 << (width - 1);
    let neg = code & sign_bit != 0;
    let exp = i32::from((code & !sign_bit) >> f.mant);
    let mant = i32::from(code & ((1 << f.mant) - 1));
    let exp_max = (1 << f.exp_bits) - 1;
    if f.fnuz && code == sign_bit {
        return f64::NAN;
    }
    if f.has_inf && exp == exp_max {
        return if mant == 0 {
            if neg {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            }
        } else {
            f64::NAN
        };
    }
    if f.has_nan && !f.fnuz && !f.has_inf && exp == exp_max && mant == (1 << f.mant) - 1 {
        return f64::NAN;
    }
    let m = f64::from(mant) / f64::from(1 << f.mant);
    let v = if exp == 0 {
        m * 2f64.powi(1 - f.bias)
    } else {
        (1.0 + m) * 2f64.powi(exp - f.bias)
    };
    if neg {
        -v
    } else {
        v
    }
}

fn round_minifloat(f: &Minifloat, x: f64, saturate: bool) -> f64 {
    let overflow = |neg: bool| {
        let v = if saturate || (!f.has_inf && !f.has_nan) {
            f.max
        } else if f.has_inf {
            f64::INFINITY
        } else {
            return f64::NAN;
        };
        if neg {
            -v
        } else {
            v
        }
    };
    if x.is_nan() {
        // Without a NaN (float4 e2m1) the reference gives negative zero.
        return if f.has_nan { f64::NAN } else { -0.0 };
    }
    let a = x.abs();
    if a.is_infinite() {
        return overflow(x < 0.0);
    }
    if a == 0.0 {
        return x;
    }
    let exp = ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    let exp = exp.max(1 - f.bias);
    let quantum = 2f64.powi(exp - f.mant as i32);
    let r = (a / quantum).round_ties_even() * quantum;
    if r > f.max {
        return overflow(x < 0.0);
    }
    if x < 0.0 {
        -r
    } else {
        r
    }
}

/// The e8m0 code of `x` as `onnx.numpy_helper.to_float8e8m0` computes it from f32 bits.
fn e8m0_code(x: f32, saturate: bool, round_mode: &str) -> u8 {
    let bits = x.to_bits();
    let exp = (bits >> 23) & 0xff;
    if exp == 0xff {
        return 0xff;
    }
    let up = match round_mode {
        "nearest" => {
            let g = bits & 0x40_0000 != 0;
            let r = bits & 0x20_0000 != 0;
            let s = bits & 0x1f_ffff != 0;
            g && (r || s || exp > 0)
        }
        "down" => false,
        _ => bits & 0x7f_ffff != 0,
    };
    let up = up && !(saturate && exp == 0xfe);
    (exp + u32::from(up)) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code decodes to a value that encodes back to it (NaN to a NaN code), so a
    /// round trip through a file keeps each value.
    #[test]
    fn every_code_decodes_and_encodes_back() {
        for n in Narrow::ALL {
            let bits = n.bits();
            let codes: Vec<u8> = (0..1u16 << bits).map(|c| c as u8).collect();
            let per = 8 / bits;
            let mut packed = vec![0u8; (codes.len() * bits).div_ceil(8)];
            for (i, c) in codes.iter().enumerate() {
                packed[i / per] |= c << ((i % per) * bits);
            }
            let held = n.decode(&packed, codes.len()).unwrap();
            let again = n.encode(&held).unwrap();
            let back = n.decode(&again, codes.len()).unwrap();
            assert_eq!(held, back, "{}", n.name());
        }
    }

    /// Values from ONNX's own Cast test cases (onnx 1.23's backend tests).
    #[test]
    fn casts_round_and_saturate_like_the_reference() {
        let e5m2 = |x| Narrow::F8E5M2.cast(x, true, "up");
        assert_eq!(e5m2(0.47892547), 0.5);
        assert_eq!(e5m2(0.8191054), 0.875);
        assert_eq!(e5m2(1e6), 57344.0);
        assert_eq!(e5m2(f64::NEG_INFINITY), -57344.0);
        assert_eq!(Narrow::F8E5M2.cast(1e6, false, "up"), f64::INFINITY);
        assert!(Narrow::F8E4M3Fnuz.cast(1e6, false, "up").is_nan());
        assert_eq!(Narrow::F8E4M3Fnuz.cast(1e6, true, "up"), 240.0);
        let fp4 = |x| Narrow::F4E2M1.cast(x, true, "up");
        assert_eq!(
            [0.48, 0.25, 1.05, -3.5, -8.0, 9.0, 1e-7].map(fp4),
            [0.5, 0.0, 1.0, -4.0, -6.0, 6.0, 0.0]
        );
        let e8m0 = |x| Narrow::F8E8M0.cast(x, true, "up");
        assert_eq!([0.124, 0.25, 1.1, 2.0].map(e8m0), [0.125, 0.25, 2.0, 2.0]);
        assert_eq!(e8m0(0.0), 2f64.powi(-127));
        let i4 = |x| Narrow::I4.cast(x, true, "up");
        assert_eq!(
            [-9.0, -8.0, 7.0, 8.0, 2.7].map(i4),
            [0.0, -8.0, 7.0, 0.0, 2.0]
        );
        assert_eq!(Narrow::U2.cast(-1.0, true, "up"), 0.0);
        assert_eq!(round_e4m3fn(464.0, true), 448.0);
    }

    #[test]
    fn a_short_buffer_or_a_foreign_value_is_an_error() {
        assert!(Narrow::I4.decode(&[0], 3).is_err());
        assert!(Narrow::F8E5M2.encode(&0.3f32.to_le_bytes()).is_err());
        assert!(Narrow::I4.encode(&[9]).is_err());
    }
}
