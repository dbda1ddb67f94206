//! The harness's pseudo-random numbers: SplitMix64, written out here rather than
//! taken from a crate so that a seed replays the same schedule and the same
//! client choices whatever version of any dependency is in use.

use std::time::Duration;

/// A seeded SplitMix64 generator.
#[derive(Debug, Clone)]
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> SeededRng {
        SeededRng { state: seed }
    }

    /// A generator for one part of a run (a client, a watcher, the schedule),
    /// independent of the others' streams for the same seed.
    pub fn derive(seed: u64, stream: u64) -> SeededRng {
        let mut mixer = SeededRng::new(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        SeededRng::new(mixer.next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (0 if `bound` is 0).
    pub fn below(&mut self, bound: usize) -> usize {
        if bound == 0 {
            return 0;
        }
        let bound = bound as u64;
        // Rejection keeps every value equally likely.
        let zone = u64::MAX - u64::MAX % bound;
        loop {
            let value = self.next_u64();
            if value < zone {
                return (value % bound) as usize;
            }
        }
    }

    /// Whether an event of probability `numerator / denominator` happens.
    pub fn chance(&mut self, numerator: usize, denominator: usize) -> bool {
        self.below(denominator) < numerator
    }

    /// A duration in `low..=high`, to the millisecond.
    pub fn duration_between(&mut self, low: Duration, high: Duration) -> Duration {
        let low_ms = low.as_millis() as usize;
        let span_ms = high.as_millis().saturating_sub(low.as_millis()) as usize;
        Duration::from_millis((low_ms + self.below(span_ms + 1)) as u64)
    }

    /// Shuffles `items` (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for last in (1..items.len()).rev() {
            let other = self.below(last + 1);
            items.swap(last, other);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_numbers() {
        let first: Vec<u64> = {
            let mut rng = SeededRng::new(42);
            (0..5).map(|_| rng.next_u64()).collect()
        };
        let again: Vec<u64> = {
            let mut rng = SeededRng::new(42);
            (0..5).map(|_| rng.next_u64()).collect()
        };
        assert_eq!(first, again);
        let mut other = SeededRng::derive(42, 1);
        assert_ne!(other.next_u64(), first[0]);
    }

    #[test]
    fn ranges_are_respected() {
        let mut rng = SeededRng::new(7);
        for _ in 0..1000 {
            assert!(rng.below(3) < 3);
            let duration =
                rng.duration_between(Duration::from_millis(500), Duration::from_millis(900));
            assert!((500..=900).contains(&duration.as_millis()));
        }
        assert_eq!(rng.below(0), 0);
    }
}
