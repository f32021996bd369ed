//! A safe-to-call wrapper over the `gemm` crate (candle's own matrix multiply) for strided
//! f32 views, used by the fused CPU kernels.

use gemm::Parallelism;

/// A strided view of an `rows x cols` f32 matrix inside a slice.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View {
    /// Offset of element (0, 0).
    pub offset: usize,
    /// Distance between rows.
    pub rs: usize,
    /// Distance between columns.
    pub cs: usize,
}

impl View {
    /// A row-major matrix with `cols` columns starting at `offset`.
    pub fn rows(offset: usize, row_stride: usize) -> Self {
        View {
            offset,
            rs: row_stride,
            cs: 1,
        }
    }

    /// The transpose of this view.
    pub fn t(self) -> Self {
        View {
            offset: self.offset,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Index one past the last element of an `r x c` view.
    fn end(&self, r: usize, c: usize) -> usize {
        if r == 0 || c == 0 {
            return self.offset;
        }
        self.offset + (r - 1) * self.rs + (c - 1) * self.cs + 1
    }
}

/// `dst[m x n] = (accumulate ? dst : 0) + scale * lhs[m x k] * rhs[k x n]`.
///
/// Panics if a view reaches outside its slice (a bug in the caller, never user input).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    d: View,
    accumulate: bool,
    lhs: &[f32],
    l: View,
    rhs: &[f32],
    r: View,
    scale: f32,
    threads: usize,
) {
    assert!(
        d.end(m, n) <= dst.len() && l.end(m, k) <= lhs.len() && r.end(k, n) <= rhs.len(),
        "gemm view out of bounds"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst[d.offset + i * d.rs + j * d.cs] = 0.0;
                }
            }
        }
        return;
    }
    let par = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the three views were checked to lie inside their slices; `dst` is borrowed
    // mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().add(d.offset),
            d.cs as isize,
            d.rs as isize,
            accumulate,
            lhs.as_ptr().add(l.offset),
            l.cs as isize,
            l.rs as isize,
            rhs.as_ptr().add(r.offset),
            r.cs as isize,
            r.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            par,
        )
    }
}

/// Threads candle would give one matrix multiply.
pub(crate) fn threads() -> usize {
    candle_core::utils::get_num_threads()
}
