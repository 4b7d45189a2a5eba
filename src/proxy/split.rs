//! Choosing a backend by weight. Pure: the random draw comes in as an argument (a thread-local
//! generator in production, a seeded one in tests), and the table is built once per snapshot.

/// Cumulative weights of one route's backends, in file order.
///
/// Invariant: the total is positive, so every draw in `0..total` names a backend, and a backend
/// of weight 0 is never named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightTable {
    cumulative: Box<[u64]>,
}

impl WeightTable {
    /// Returns `None` when the weights sum to 0 (validation refuses such a route).
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Option<WeightTable> {
        let mut sum = 0u64;
        let cumulative: Box<[u64]> = weights
            .into_iter()
            .map(|w| {
                sum += u64::from(w);
                sum
            })
            .collect();
        (sum > 0).then_some(WeightTable { cumulative })
    }

    pub fn total(&self) -> u64 {
        *self
            .cumulative
            .last()
            .expect("a weight table is never empty")
    }

    /// The backend index for `draw`, which must be below [`WeightTable::total`].
    pub fn pick(&self, draw: u64) -> usize {
        debug_assert!(draw < self.total());
        // Routes have a handful of backends: a linear scan beats a binary search here.
        self.cumulative
            .iter()
            .position(|&c| draw < c)
            .expect("draw < total")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn counts(weights: &[u32], draws: usize, seed: u64) -> Vec<usize> {
        let table = WeightTable::new(weights.iter().copied()).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut counts = vec![0; weights.len()];
        for _ in 0..draws {
            counts[table.pick(rng.random_range(0..table.total()))] += 1;
        }
        counts
    }

    #[test]
    fn every_draw_maps_to_the_backend_owning_that_slice() {
        let t = WeightTable::new([90, 0, 10]).unwrap();
        assert_eq!(t.total(), 100);
        assert_eq!(t.pick(0), 0);
        assert_eq!(t.pick(89), 0);
        assert_eq!(t.pick(90), 2);
        assert_eq!(t.pick(99), 2);
    }

    #[test]
    fn zero_sum_is_refused() {
        assert_eq!(WeightTable::new([0, 0]), None);
        assert_eq!(WeightTable::new([]), None);
    }

    #[test]
    fn ninety_ten_split_is_within_five_standard_deviations() {
        // 10,000 draws at p = 0.1: sd = sqrt(10000 * 0.1 * 0.9) = 30; allow 5 sd = 150.
        let c = counts(&[90, 10], 10_000, 7);
        assert!((c[1] as i64 - 1_000).abs() <= 150, "{c:?}");
    }

    #[test]
    fn weight_zero_gets_nothing_and_full_weight_gets_everything() {
        assert_eq!(counts(&[100, 0], 10_000, 1), vec![10_000, 0]);
        assert_eq!(counts(&[0, 100], 10_000, 2), vec![0, 10_000]);
    }

    #[test]
    fn three_way_split_follows_the_weights() {
        // p = 0.5, 0.3, 0.2 over 30,000 draws: sd <= sqrt(30000 * 0.25) = 87; allow 5 sd.
        let c = counts(&[50, 30, 20], 30_000, 3);
        for (got, want) in c.iter().zip([15_000i64, 9_000, 6_000]) {
            assert!((*got as i64 - want).abs() <= 435, "{c:?}");
        }
    }
}
