//! Latency samples and their percentiles (nearest rank), in milliseconds.

use std::time::Duration;

use serde::Serialize;

/// Latencies recorded during one phase.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    micros: Vec<u64>,
}

/// p50, p99 and max of a phase, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.micros
            .push(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn extend(&mut self, other: Samples) {
        self.micros.extend(other.micros);
    }

    pub fn len(&self) -> usize {
        self.micros.len()
    }

    pub fn is_empty(&self) -> bool {
        self.micros.is_empty()
    }

    /// `None` without samples.
    pub fn percentiles(&self) -> Option<Percentiles> {
        let mut sorted = self.micros.clone();
        sorted.sort_unstable();
        let last = *sorted.last()?;
        let rank = |q: f64| {
            let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
            ms(sorted[i])
        };
        Some(Percentiles {
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            max_ms: ms(last),
        })
    }
}

fn ms(micros: u64) -> f64 {
    (micros as f64 / 1000.0 * 100.0).round() / 100.0
}

/// `n` per `elapsed`, rounded to a tenth.
pub fn rate(n: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    (n as f64 / secs * 10.0).round() / 10.0
}

/// `ours / base`, rounded to a hundredth; `None` when the base is zero.
pub fn ratio(ours: f64, base: f64) -> Option<f64> {
    (base > 0.0).then(|| (ours / base * 100.0).round() / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Samples::default();
        for ms in 1..=100u64 {
            s.push(Duration::from_millis(ms));
        }
        let p = s.percentiles().expect("samples");
        assert_eq!(p.p50_ms, 50.0);
        assert_eq!(p.p99_ms, 99.0);
        assert_eq!(p.max_ms, 100.0);
        assert!(Samples::default().percentiles().is_none());
    }

    #[test]
    fn one_sample_is_every_percentile() {
        let mut s = Samples::default();
        s.push(Duration::from_micros(1500));
        let p = s.percentiles().expect("a sample");
        assert_eq!((p.p50_ms, p.p99_ms, p.max_ms), (1.5, 1.5, 1.5));
    }

    #[test]
    fn rates_and_ratios() {
        assert_eq!(rate(300, Duration::from_secs(2)), 150.0);
        assert_eq!(rate(1, Duration::ZERO), 0.0);
        assert_eq!(ratio(80.0, 100.0), Some(0.8));
        assert_eq!(ratio(1.0, 0.0), None);
    }
}
