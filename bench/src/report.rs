//! Output: one JSON object per line (SPEC §7), and percentiles.
use serde_json::json;

/// Prints one figure. `baseline` is measured in the same run; `ratio` is value / baseline.
pub fn emit(bench: &str, metric: &str, value: f64, unit: &str, baseline: Option<f64>) {
    let ratio = baseline.filter(|b| *b > 0.0).map(|b| round(value / b));
    println!(
        "{}",
        json!({"bench": bench, "metric": metric, "value": round(value), "unit": unit, "baseline": baseline.map(round), "ratio": ratio})
    );
}

/// Prints a note (a string value): what ran where.
pub fn note(bench: &str, metric: &str, text: &str) {
    println!(
        "{}",
        json!({"bench": bench, "metric": metric, "value": text, "unit": "text", "baseline": null, "ratio": null})
    );
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Sorted samples with nearest-rank percentiles.
pub struct Samples(Vec<f64>);

impl Samples {
    /// Sorts the samples.
    pub fn new(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        Self(values)
    }

    /// The p-th percentile (0..=100), nearest rank; 0 when empty.
    pub fn p(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil().max(1.0) as usize;
        self.0[rank.min(self.0.len()) - 1]
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Samples::new((1..=100).rev().map(f64::from).collect());
        assert_eq!((s.p(50.0), s.p(99.0), s.p(100.0), s.p(0.0)), (50.0, 99.0, 100.0, 1.0));
        assert_eq!(Samples::new(vec![]).p(50.0), 0.0);
    }
}
