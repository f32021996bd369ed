//! The executor's memory budget: the most bytes one tensor may take when an op sizes it from
//! its inputs' values or its attributes (ConstantOfShape, Expand, Tile, Range, Reshape, Concat,
//! Gather, MatMul, broadcasting, padding, convolution and pooling outputs...) and when a probe
//! or a verification run makes up inputs from the graph's declared dimensions.
//!
//! A 200-byte graph can ask for terabytes: every such size is computed with overflow checks and
//! compared with the budget before anything is allocated. Ops whose outputs are no larger than
//! an input (element-wise functions, reductions, slices, transposes) are not checked: their
//! inputs already were. Expand's view is checked at its full size, as whoever reads it writes
//! it out.
//!
//! It is the budget ferry-io's readers use for one tensor ([`ferry_io::budget::TENSOR`]):
//! 4 GiB, or `FERRY_MAX_TENSOR_BYTES` when set to a byte count (`16GiB`, `512MiB`, `1000000`).

use candle_core::DType;

use crate::error::BudgetExceeded;

/// The most bytes one tensor an op materializes may take (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    bytes: u64,
}

impl MemoryBudget {
    /// `bytes` per tensor.
    pub fn new(bytes: u64) -> Self {
        MemoryBudget { bytes }
    }

    /// `FERRY_MAX_TENSOR_BYTES` when set to a byte count, else 4 GiB.
    pub fn from_env() -> Self {
        Self::new(ferry_io::budget::TENSOR.bytes())
    }

    /// The budget in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The smaller of two budgets.
    pub fn min(self, other: Self) -> Self {
        Self::new(self.bytes.min(other.bytes))
    }

    /// `Ok` when a tensor of `shape` and `dtype` fits; else what it would have taken. `what`
    /// names the tensor for the error ("its output").
    pub fn check(
        &self,
        what: &'static str,
        shape: &[usize],
        dtype: DType,
    ) -> Result<(), BudgetExceeded> {
        let bytes = shape
            .iter()
            .try_fold(dtype.size_in_bytes() as u128, |n, &d| {
                n.checked_mul(d as u128)
            });
        if bytes.is_some_and(|b| b <= u128::from(self.bytes)) {
            return Ok(());
        }
        Err(BudgetExceeded {
            what,
            shape: shape.to_vec(),
            dtype,
            bytes,
            budget: self.bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_without_overflow() {
        let b = MemoryBudget::new(16);
        assert!(b.check("x", &[2, 2], DType::F32).is_ok());
        assert!(b.check("x", &[0, usize::MAX], DType::F32).is_ok());
        let e = b.check("its output", &[2, 3], DType::F32).unwrap_err();
        assert_eq!(e.bytes, Some(24));
        let e = b
            .check("x", &[usize::MAX, usize::MAX, usize::MAX], DType::F64)
            .unwrap_err();
        assert_eq!(e.bytes, None);
        assert!(e.to_string().contains("more than 2^128 bytes"), "{e}");
        let e = MemoryBudget::new(4 << 30)
            .check("its output", &[65536, 65536], DType::F32)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("its output [65536, 65536] f32 would take 16.0 GiB (17179869184 bytes)")
                && e.contains("memory budget of 4.0 GiB per tensor")
                && e.contains("FERRY_MAX_TENSOR_BYTES=BYTES"),
            "{e}"
        );
    }
}
