//! Which serving thread runs the caller. With thread per core (`server::start_on`) each thread
//! has its own runtime, and an upstream connection is registered with the runtime that opened
//! it: used from another thread, its every readiness would wait for that thread to poll its
//! driver, and each wake-up would cross threads. So the upstream pools keep a part per thread,
//! indexed by [`index`], and a thread takes and returns connections in its own part only.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many threads serve; set once when weir starts, before the first pools are built.
static COUNT: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// Sets how many threads serve (at least 1). Pools built afterwards keep a part per thread.
pub fn set_count(threads: usize) {
    COUNT.store(threads.max(1), Ordering::Relaxed);
}

/// How many threads serve.
pub fn count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

/// Marks the calling thread as serving thread `index` (the first, 0, is every unmarked thread).
pub fn enter(index: usize) {
    INDEX.set(index);
}

/// The calling thread's part of something kept in `parts` parts (0 on an unmarked thread).
pub fn part(parts: usize) -> usize {
    INDEX.get() % parts.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_finds_its_own_part_and_an_unmarked_one_the_first() {
        assert_eq!(part(4), 0);
        let parts = std::thread::spawn(|| {
            enter(3);
            (part(4), part(2), part(1), part(0))
        })
        .join()
        .unwrap();
        assert_eq!(parts, (3, 1, 0, 0));
        // Marking another thread left this one alone.
        assert_eq!(part(4), 0);
    }
}
