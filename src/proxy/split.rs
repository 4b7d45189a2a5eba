//! Choosing a backend: overrides first, then the sticky key, then the weights (at random or in
//! smooth round robin). Pure: the random draw comes in as an argument (a thread-local generator
//! in production, a seeded one in tests), and each route's [`Table`] is compiled once per
//! snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderMap;

use crate::config::{
    Condition, Expect, MAX_ROUND_ROBIN_CYCLE, Pick, StickyKey, gcd, round_robin_cycle,
};

/// One route's choice, compiled: its overrides, sticky key, weights and pick mode.
pub struct Table {
    overrides: Box<[Override]>,
    sticky: Option<StickyKey>,
    weights: WeightTable,
    picker: Picker,
    /// Set when `round_robin` was asked for but the weights' cycle is too long (see
    /// [`Table::new`]): the cycle's length.
    fallback: Option<u64>,
}

/// Requests meeting every condition go to `backend`.
pub struct Override {
    pub conditions: Box<[Condition]>,
    pub backend: usize,
}

/// How a request without an override or sticky key is given a backend.
enum Picker {
    Random,
    /// One precomputed smooth cycle and one shared counter: shares are exact across all worker
    /// threads, for one relaxed atomic add per request.
    RoundRobin {
        sequence: Box<[u32]>,
        next: AtomicU64,
    },
}

impl Table {
    /// The table for backends of `weights` (in the route's order; the sum must be positive,
    /// which validation guarantees), `overrides` naming indexes into them, and `pick`.
    ///
    /// The round-robin rule: a smooth cycle is precomputed only when its length (the weight sum
    /// over the weights' gcd) is at most [`MAX_ROUND_ROBIN_CYCLE`]. Validation refuses configured
    /// weights that break it, but a rollout's weights can (a 3:1 pair of stables at 10 %: 27/9/4
    /// is fine, 900001/99999 is not); such a table picks at random, with the same shares on
    /// average, and [`Table::round_robin_fallback`] says so for the caller to log.
    pub fn new(
        weights: &[u32],
        overrides: Vec<Override>,
        sticky: Option<StickyKey>,
        pick: Pick,
    ) -> Option<Table> {
        let table = WeightTable::new(weights.iter().copied())?;
        let cycle = round_robin_cycle(weights);
        let (picker, fallback) = match pick {
            Pick::Random => (Picker::Random, None),
            Pick::RoundRobin if cycle > MAX_ROUND_ROBIN_CYCLE => (Picker::Random, Some(cycle)),
            Pick::RoundRobin => (
                Picker::RoundRobin {
                    sequence: round_robin_sequence(weights),
                    next: AtomicU64::new(0),
                },
                None,
            ),
        };
        Some(Table {
            overrides: overrides.into(),
            sticky,
            weights: table,
            picker,
            fallback,
        })
    }

    pub fn weights(&self) -> &WeightTable {
        &self.weights
    }

    /// The cycle length that made a `round_robin` table pick at random, if it did.
    pub fn round_robin_fallback(&self) -> Option<u64> {
        self.fallback
    }

    /// A draw below the weights' total for `health::live_pick`, when the backend [`choose`] gave
    /// has no endpoint: the sticky key's draw when the request has one (so it keeps its place
    /// among the live backends), else `random(total)`.
    pub fn fallback_draw(&self, headers: &HeaderMap, random: impl FnOnce(u64) -> u64) -> u64 {
        let total = self.weights.total();
        match self.sticky.as_ref().and_then(|k| sticky_key(k, headers)) {
            Some(key) => sticky_draw(sticky_hash(key), total),
            None => random(total),
        }
    }
}

/// The backend index for a request with these headers and query: the first override whose
/// conditions all hold, else the sticky key's bucket, else the weights. `random(n)` must return
/// a number below `n`.
pub fn choose(
    table: &Table,
    headers: &HeaderMap,
    query: Option<&str>,
    random: impl FnOnce(u64) -> u64,
) -> usize {
    choose_pinned(table, headers, query, None, random)
}

/// [`choose`] with a session affinity pin (a backend the client's cookie holds it to, already
/// checked to take traffic): after the overrides, before the sticky key and the weights.
pub fn choose_pinned(
    table: &Table,
    headers: &HeaderMap,
    query: Option<&str>,
    pin: Option<usize>,
    random: impl FnOnce(u64) -> u64,
) -> usize {
    if let Some(o) = table
        .overrides
        .iter()
        .find(|o| o.conditions.iter().all(|c| holds(c, headers, query)))
    {
        return o.backend;
    }
    if let Some(b) = pin {
        return b;
    }
    let total = table.weights.total();
    if let Some(key) = table.sticky.as_ref().and_then(|k| sticky_key(k, headers)) {
        return table.weights.pick(sticky_draw(sticky_hash(key), total));
    }
    match &table.picker {
        Picker::Random => table.weights.pick(random(total)),
        Picker::RoundRobin { sequence, next } => {
            let n = next.fetch_add(1, Ordering::Relaxed);
            sequence[(n % sequence.len() as u64) as usize] as usize
        }
    }
}

fn sticky_key<'a>(key: &StickyKey, headers: &'a HeaderMap) -> Option<&'a [u8]> {
    match key {
        StickyKey::Header(name) => headers.get(name).map(|v| v.as_bytes()),
        StickyKey::Cookie(name) => cookie(headers, name).map(str::as_bytes),
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n == name).then_some(v)
        })
}

/// The raw (not percent-decoded) value of query parameter `name`; `""` for a bare `name`.
fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (n == name).then_some(v)
    })
}

fn holds(c: &Condition, headers: &HeaderMap, query: Option<&str>) -> bool {
    let (found, expect): (Option<&[u8]>, &Expect) = match c {
        Condition::Header(name, e) => (headers.get(name).map(|v| v.as_bytes()), e),
        Condition::Cookie(name, e) => (cookie(headers, name).map(str::as_bytes), e),
        Condition::Query(name, e) => (query_param(query, name).map(str::as_bytes), e),
    };
    match expect {
        Expect::Equals(want) => found == Some(want.as_bytes()),
        Expect::Present(present) => found.is_some() == *present,
    }
}

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

// === sticky keys ===

/// 64-bit FNV-1a with the standard offset basis and prime.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The sticky hash: FNV-1a 64 of the key's bytes, then the SplitMix64 finalizer. No seed, so
/// every weir process on every machine puts a key in the same place. The finalizer matters:
/// FNV-1a alone leaves its top bits nearly unchanged between keys that differ in their last
/// bytes (`user-1`, `user-2`), and the draw reads the top bits.
pub fn sticky_hash(key: &[u8]) -> u64 {
    let mut h = fnv1a64(key);
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The draw for a sticky key: the hash's fraction of the 64-bit space, scaled to `0..total`.
/// A key keeps its fraction whatever the weights are, so when a later backend's share grows the
/// boundary moves past keys in one direction only: with `[stable, canary]`, keys move from stable
/// to canary as the canary grows, never back.
pub fn sticky_draw(hash: u64, total: u64) -> u64 {
    ((u128::from(hash) * u128::from(total)) >> 64) as u64
}

// === smooth weighted round robin ===

/// One cycle of nginx's smooth weighted round robin: each step adds every weight to its
/// backend's running score, picks the highest (the first on ties) and takes the total from it.
/// Over any `n` consecutive picks every backend is within one pick of its exact share.
/// Requires `round_robin_cycle(weights) <= MAX_ROUND_ROBIN_CYCLE` and a positive sum.
pub fn round_robin_sequence(weights: &[u32]) -> Box<[u32]> {
    let g = weights.iter().fold(0, |g, &w| gcd(g, u64::from(w))).max(1);
    let w: Vec<i64> = weights.iter().map(|&x| (u64::from(x) / g) as i64).collect();
    let total: i64 = w.iter().sum();
    let mut score = vec![0i64; w.len()];
    (0..total)
        .map(|_| {
            let mut best = 0;
            for i in 0..w.len() {
                score[i] += w[i];
                if score[i] > score[best] {
                    best = i;
                }
            }
            score[best] -= total;
            best as u32
        })
        .collect()
}

#[cfg(test)]
mod pick_tests {
    use super::*;

    const STICKY_USER_1: u64 = 14_166_554_182_431_137_624;

    #[test]
    fn the_sticky_hash_is_fnv1a_64_then_splitmix64_and_never_changes() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        // Pinned: a change here moves every user of every deployment.
        assert_eq!(sticky_hash(b"user-1"), STICKY_USER_1);
    }

    #[test]
    fn similar_keys_spread_over_the_whole_range() {
        let t = WeightTable::new([90, 10]).unwrap();
        let canary = (0..10_000)
            .filter(|k| {
                t.pick(sticky_draw(
                    sticky_hash(format!("user-{k}").as_bytes()),
                    100,
                )) == 1
            })
            .count();
        // p = 0.1 over 10,000 keys: sd = 30; allow 5 sd.
        assert!((canary as i64 - 1_000).abs() <= 150, "{canary}");
    }

    #[test]
    fn raising_the_canary_moves_keys_only_from_stable_to_canary() {
        let pick = |ws: u32, wc: u32, key: &str| {
            let t = WeightTable::new([ws, wc]).unwrap();
            t.pick(sticky_draw(sticky_hash(key.as_bytes()), t.total()))
        };
        let mut moved = 0;
        for k in 0..10_000 {
            let key = format!("user-{k}");
            let mut was = pick(90, 10, &key);
            for (ws, wc) in [(80, 20), (90, 30), (50, 50), (1, 9), (0, 1)] {
                let now = pick(ws, wc, &key);
                assert!(now >= was, "{key} moved back to stable at {ws}/{wc}");
                moved += usize::from(now > was);
                was = now;
            }
            assert_eq!(was, 1);
        }
        assert!(moved > 8_000, "{moved}");
    }

    #[test]
    fn smooth_round_robin_is_exact_and_interleaved() {
        let seq = round_robin_sequence(&[90, 10]);
        assert_eq!(seq.len(), 10);
        assert_eq!(seq.iter().filter(|&&b| b == 1).count(), 1);
        assert_eq!(&*round_robin_sequence(&[5, 1, 1]), &[0, 0, 1, 0, 2, 0, 0]);
        // Within one pick of the exact share after any prefix.
        let seq = round_robin_sequence(&[50, 30, 20]);
        for n in 1..=seq.len() {
            for (b, w) in [(0u32, 0.5), (1, 0.3), (2, 0.2)] {
                let got = seq[..n].iter().filter(|&&x| x == b).count() as f64;
                assert!((got - w * n as f64).abs() <= 1.0, "{n} {b}");
            }
        }
    }
}

#[cfg(test)]
mod choose_tests {
    use super::*;

    /// A request: its headers and query.
    struct Request {
        headers: &'static [(&'static str, &'static str)],
        query: Option<&'static str>,
    }

    const PLAIN: Request = Request {
        headers: &[],
        query: None,
    };

    /// The backend `table` gives each request, with the random draw fixed to `draw`.
    fn check(table: &Table, draw: u64, cases: &[(Request, usize)]) {
        for (i, (req, want)) in cases.iter().enumerate() {
            let mut headers = HeaderMap::new();
            for (k, v) in req.headers {
                headers.append(*k, v.parse().unwrap());
            }
            let got = choose(table, &headers, req.query, |n| draw % n);
            assert_eq!(got, *want, "case {i}");
        }
    }

    fn header_override(name: &'static str, value: &str, backend: usize) -> Override {
        Override {
            conditions: vec![Condition::Header(
                http::HeaderName::from_static(name),
                Expect::Equals(value.to_owned()),
            )]
            .into(),
            backend,
        }
    }

    #[test]
    fn overrides_come_first_then_the_sticky_key_then_the_weights() {
        // Three backends 90/10/0: backend 2 is reachable only by its override.
        let table = Table::new(
            &[90, 10, 0],
            vec![
                header_override("x-canary", "always", 1),
                header_override("x-shadow", "1", 2),
            ],
            Some(StickyKey::Header(http::HeaderName::from_static("x-user"))),
            Pick::Random,
        )
        .unwrap();
        // user-1's sticky draw lands in stable's 90 (see pick_tests' pinned hash).
        let sticky_user = sticky_draw(sticky_hash(b"user-1"), 100);
        let user_backend = usize::from(sticky_user >= 90);
        check(
            &table,
            95,
            &[
                // No override, no key: the draw (95 of 100) picks the canary.
                (PLAIN, 1),
                // The key wins over the draw.
                (
                    Request {
                        headers: &[("x-user", "user-1")],
                        query: None,
                    },
                    user_backend,
                ),
                // An override wins over the key, the first that holds wins.
                (
                    Request {
                        headers: &[
                            ("x-user", "user-1"),
                            ("x-shadow", "1"),
                            ("x-canary", "always"),
                        ],
                        query: None,
                    },
                    1,
                ),
                (
                    Request {
                        headers: &[("x-shadow", "1")],
                        query: None,
                    },
                    2,
                ),
                // A condition that does not hold is no override.
                (
                    Request {
                        headers: &[("x-canary", "sometimes")],
                        query: Some("x-canary=always"),
                    },
                    1,
                ),
            ],
        );
        check(&table, 5, &[(PLAIN, 0)]);
    }

    #[test]
    fn round_robin_is_exact_and_falls_back_to_random_past_its_cycle_limit() {
        let rr = Table::new(&[3, 1], Vec::new(), None, Pick::RoundRobin).unwrap();
        assert_eq!(rr.round_robin_fallback(), None);
        let picks: Vec<usize> = (0..8)
            .map(|_| choose(&rr, &HeaderMap::new(), None, |_| unreachable!("no draw")))
            .collect();
        assert_eq!(picks, [0, 0, 1, 0, 0, 0, 1, 0]);

        // 900001/99999 needs a cycle of 1,000,000 picks: random draws, the same shares on
        // average, and the caller is told.
        let long = Table::new(&[900_001, 99_999], Vec::new(), None, Pick::RoundRobin).unwrap();
        assert_eq!(long.round_robin_fallback(), Some(1_000_000));
        check(&long, 950_000, &[(PLAIN, 1)]);
        check(&long, 10, &[(PLAIN, 0)]);
        assert!(Table::new(&[0, 0], Vec::new(), None, Pick::Random).is_none());
    }
}
