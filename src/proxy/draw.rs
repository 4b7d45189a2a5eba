//! The random draws of the request path (a weighted pick, a mirror's sample, an endpoint pick
//! during a slow-start ramp): one generator per worker thread, so a draw costs a few nanoseconds
//! and takes no lock. The pure pickers take the draw as an argument; this is what production
//! passes them.

use std::cell::RefCell;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// A uniform draw in `0..n`; `n` is above 0.
pub fn random_below(n: u64) -> u64 {
    RNG.with_borrow_mut(|rng| rng.random_range(0..n))
}
