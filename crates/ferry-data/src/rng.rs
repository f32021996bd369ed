//! A seeded random number generator whose whole state serializes, so sampling and
//! shuffling resume exactly: `rand_xoshiro`'s xoshiro256** (seeded through SplitMix64, its
//! state saved by serde), with ferry's sub-streams, unbiased bounded integers and
//! Fisher–Yates shuffle on top. The streams and the saved form (`{"s": [..4 words..]}`) are
//! those of the generator ferry carried before it used the crate, so old checkpoints resume.

use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256StarStar;

/// xoshiro256** with a serializable state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Rng(Xoshiro256StarStar);

/// One SplitMix64 step: mixes the parts of a sub-stream's seed.
fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator seeded from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(Xoshiro256StarStar::seed_from_u64(seed))
    }

    /// A generator for a sub-stream (`seed`, `a`, `b`): independent of the others.
    pub fn derived(seed: u64, a: u64, b: u64) -> Self {
        let mut x = seed ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let y = splitmix(&mut x) ^ b.wrapping_mul(0xd1b5_4a32_d192_ed03);
        Rng::new(y)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A uniform float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform integer in [0, n) (`n > 0`), without modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// Shuffles `v` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_resumable() {
        let mut a = Rng::new(7);
        let first: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let saved = serde_json::to_string(&a).unwrap();
        let next = a.next_u64();
        let mut b: Rng = serde_json::from_str(&saved).unwrap();
        assert_eq!(b.next_u64(), next);
        let mut c = Rng::new(7);
        assert_eq!((0..5).map(|_| c.next_u64()).collect::<Vec<_>>(), first);
        assert_ne!(Rng::new(8).next_u64(), first[0]);
    }

    #[test]
    fn the_stream_and_saved_form_are_the_ones_checkpoints_hold() {
        // Values of ferry's own xoshiro256** before it used rand_xoshiro: a checkpoint saved
        // then resumes with the same draws.
        let mut r = Rng::new(3);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"s":[2092789425003139053,12918135221727111561,11307387092600937729,1344154044715485647]}"#
        );
        let first = r.next_u64();
        let mut again: Rng = serde_json::from_str(
            r#"{"s":[2092789425003139053,12918135221727111561,11307387092600937729,1344154044715485647]}"#,
        )
        .unwrap();
        assert_eq!(again.next_u64(), first);
    }

    #[test]
    fn uniform_enough() {
        let mut r = Rng::new(1);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[r.below(10) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
        let mut v: Vec<u32> = (0..100).collect();
        r.shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(v, sorted);
    }
}
