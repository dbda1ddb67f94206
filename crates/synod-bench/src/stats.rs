//! What each client measures, and the merge of all clients' measurements.
//!
//! Every client records into its own histogram and counters, with no shared state
//! on the hot path beyond one relaxed counter for the progress line; the histograms
//! are added together once the run is over.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::error::BenchError;

/// Largest latency the histograms hold (one hour in microseconds); longer samples
/// are recorded as this.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;

/// Significant decimal digits the histograms keep (0.1% relative error).
pub const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// An empty latency histogram in microseconds.
pub fn latency_histogram() -> Result<Histogram<u64>, BenchError> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, LATENCY_SIGNIFICANT_DIGITS)
        .map_err(|error| BenchError::Runtime(format!("cannot create a histogram: {error:?}")))
}

/// One client's (or watcher's) measurements.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency of each measured operation, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Operations that got an answer (a compare-and-swap that lost counts here).
    pub ops: u64,
    /// Operations that failed: an error status, a timeout, a broken stream.
    pub errors: u64,
    /// Answered operations whose condition did not hold (txn-cas only).
    pub failures: u64,
    /// The first error seen, to show a person what went wrong.
    pub first_error: Option<String>,
}

impl Stats {
    /// Empty measurements.
    pub fn new() -> Result<Stats, BenchError> {
        Ok(Stats {
            latency_us: latency_histogram()?,
            ops: 0,
            errors: 0,
            failures: 0,
            first_error: None,
        })
    }

    /// Records an answered operation that took `latency`.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(LATENCY_MAX_US);
        self.latency_us.saturating_record(micros.max(1));
        self.ops += 1;
    }

    /// Records a failed operation.
    pub fn record_error(&mut self, message: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(message());
        }
    }

    /// Adds `other`'s measurements to these.
    pub fn merge(&mut self, other: &Stats) {
        // Both histograms have the same bounds, so adding cannot fail; if it ever
        // did, the samples would be lost from the percentiles but still counted.
        let _ = self.latency_us.add(&other.latency_us);
        self.ops += other.ops;
        self.errors += other.errors;
        self.failures += other.failures;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_counts_and_samples() {
        let (Ok(mut one), Ok(mut two)) = (Stats::new(), Stats::new()) else {
            panic!("histograms with fixed bounds are always valid");
        };
        one.record(Duration::from_micros(100));
        two.record(Duration::from_millis(5));
        two.record(Duration::from_nanos(10));
        two.record_error(|| "first".into());
        two.record_error(|| "second".into());
        two.failures = 1;
        one.merge(&two);
        assert_eq!(one.ops, 3);
        assert_eq!(one.errors, 2);
        assert_eq!(one.failures, 1);
        assert_eq!(one.first_error.as_deref(), Some("first"));
        assert_eq!(one.latency_us.len(), 3);
        assert_eq!(
            one.latency_us.min(),
            1,
            "sub-microsecond samples count as 1 us"
        );
        assert!(one.latency_us.max() >= 4_990);
    }
}
