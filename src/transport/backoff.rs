//! Reconnect delays: exponential from [`BASE`] up to a ceiling, with full jitter, so a thousand
//! agents that lost the server together come back spread over the whole window instead of in
//! lock-step.
use std::time::Duration;

/// First retry window.
pub const BASE: Duration = Duration::from_millis(500);

/// The delay before retry number `attempt` (0-based): uniform in `[0, min(ceiling, BASE·2^n)]`.
pub fn delay(attempt: u32, ceiling: Duration, unit_random: f64) -> Duration {
    let window = BASE.saturating_mul(1u32 << attempt.min(20)).min(ceiling);
    window.mul_f64(unit_random.clamp(0.0, 1.0))
}

/// [`delay`] with a fresh random draw.
pub fn jittered(attempt: u32, ceiling: Duration) -> Duration {
    delay(attempt, ceiling, rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_to_the_ceiling_and_jitters_over_the_window() {
        let ceiling = Duration::from_secs(60);
        assert_eq!(delay(0, ceiling, 1.0), Duration::from_millis(500));
        assert_eq!(delay(3, ceiling, 1.0), Duration::from_secs(4));
        assert_eq!(delay(30, ceiling, 1.0), ceiling);
        assert_eq!(delay(5, ceiling, 0.0), Duration::ZERO);
        assert_eq!(delay(5, ceiling, 0.5), Duration::from_secs(8));
    }

    #[test]
    fn a_thousand_restarts_spread_over_the_window() {
        let ceiling = Duration::from_secs(60);
        let delays: Vec<Duration> = (0..1000).map(|_| jittered(6, ceiling)).collect();
        let in_first_tenth = delays.iter().filter(|d| **d < Duration::from_secs(3)).count();
        // Uniform over 32s: about 94 of 1000 land in the first 3s; a stampede would put all there.
        assert!(in_first_tenth < 300, "{in_first_tenth} of 1000 retried in the first 3s");
    }
}
