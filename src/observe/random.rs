//! The random numbers behind request IDs, trace IDs and span IDs: one small generator per thread,
//! seeded from the operating system once, so a draw takes no lock and makes no system call.
//!
//! The IDs need to be unique, not secret: a request ID or a trace ID is sent in clear to
//! upstreams and logged. Xoshiro256++ (`SmallRng`) gives 2^256 states per thread; two threads
//! (or two weir processes) repeat each other's stream only with a negligible chance.

use std::cell::RefCell;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// 64 random bits from this thread's generator.
pub fn u64() -> u64 {
    RNG.with_borrow_mut(|rng| rng.next_u64())
}

/// 128 random bits from this thread's generator.
pub fn u128() -> u128 {
    RNG.with_borrow_mut(|rng| (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64()))
}
