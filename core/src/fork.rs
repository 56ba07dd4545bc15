//! Life across `fork()`.
//!
//! A child process has one thread: the one that called `fork()`. Everything
//! else the other threads were doing at that instant is copied mid-flight: a
//! stripe write (its seqlock odd), a shared-path record (a writer counted in
//! the accumulator's stamp), a fold or late record (`EXCLUSIVE` held, the
//! rings half written), a registration (the registry's lock held). None of
//! those threads exists in the child to finish it, so without care the
//! child's first read or record of that series spins forever. The story:
//!
//! 1. **Before the fork** (`pthread_atfork` prepare handler) the forking
//!    thread waits, for at most [`QUIESCE_LIMIT`], until no thread is inside
//!    an exclusive section (fold, late record, a reader's locked read) or a
//!    registration, and holds new ones off until the fork is done. These are
//!    the cold paths (once a minute per series and thread, or a new key), so
//!    normally nothing is inside and the fork is not delayed. Fast-path
//!    records are not held off: they are a few stores each, and the child
//!    discards one caught mid-flight (below).
//! 2. **In the child** (child handler) the process' fork generation is
//!    bumped, and every writer slot held by another thread is marked dead
//!    (`thread_slot.rs`): its stripes are never written again, and dead
//!    slots are never handed out again in this process (so a child's new
//!    threads take the next free slots; beyond [`crate::Config::writers`]
//!    they record through the shared accumulator).
//! 3. **Lazily, per series**: each accumulator remembers the generation its
//!    state belongs to. The first thread of the child that records through
//!    the shared path, folds, or reads the series (`series.rs`) sees an older
//!    generation and repairs it first, alone (others wait a moment): writer
//!    counts of threads that no longer exist are dropped, and if a record or
//!    a fold was in flight the accumulator's pending minute is discarded (and
//!    with a fold caught mid-way, the stripe it was folding). A stripe of a
//!    dead slot found mid-write is read as empty. So the child reads and
//!    records at once, and never shows a torn bucket; what it discards is
//!    one minute's pending records of threads it does not have, which the
//!    parent still holds intact.
//!
//! Only if the prepare handler gave up waiting (a thread stopped inside a
//! fold for longer than [`QUIESCE_LIMIT`]) can a child see a ring bucket
//! that fold had half written, or a registration lock never released (a
//! new key then cannot be registered in that child; known keys still
//! record). The record fast path is unchanged: no check on it.

/// The longest the prepare handler waits for exclusive sections to end.
pub const QUIESCE_LIMIT: std::time::Duration = std::time::Duration::from_millis(100);

#[cfg(all(unix, not(loom), not(miri)))]
mod imp {
    use std::sync::Once;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    use super::QUIESCE_LIMIT;

    /// Bumped in every child; the original process is generation 0.
    static GENERATION: AtomicU64 = AtomicU64::new(0);
    /// Forks in progress (prepare handler ran, parent handler not yet).
    static FORKING: AtomicU64 = AtomicU64::new(0);
    /// Threads inside an exclusive section or a registration.
    static INSIDE: AtomicU64 = AtomicU64::new(0);
    static INSTALL: Once = Once::new();

    extern "C" fn prepare() {
        FORKING.fetch_add(1, Ordering::SeqCst);
        let start = Instant::now();
        while INSIDE.load(Ordering::SeqCst) != 0 && start.elapsed() < QUIESCE_LIMIT {
            std::thread::yield_now();
        }
    }

    extern "C" fn parent() {
        FORKING.fetch_sub(1, Ordering::SeqCst);
    }

    extern "C" fn child() {
        // One thread now: plain stores are enough, and only atomics are
        // touched (async-signal-safe, as a child handler must be).
        FORKING.store(0, Ordering::SeqCst);
        INSIDE.store(0, Ordering::SeqCst);
        GENERATION.fetch_add(1, Ordering::SeqCst);
        crate::thread_slot::after_fork_in_child();
    }

    /// Register the handlers (once per process; inherited by children).
    pub(crate) fn install() {
        INSTALL.call_once(|| {
            // SAFETY: the three handlers are `extern "C" fn()` that never
            // unwind; registering them has no other precondition. A failure
            // (ENOMEM) leaves fork unhandled, as before, and is not fatal.
            unsafe {
                libc::pthread_atfork(Some(prepare), Some(parent), Some(child));
            }
        });
    }

    /// The process' fork generation.
    #[inline(always)]
    pub(crate) fn generation() -> u64 {
        GENERATION.load(Ordering::Acquire)
    }

    /// Enter an exclusive section or a registration: waits while a fork is
    /// being prepared. Pair with [`exit`].
    pub(crate) fn enter() {
        loop {
            while FORKING.load(Ordering::SeqCst) != 0 {
                std::thread::yield_now();
            }
            INSIDE.fetch_add(1, Ordering::SeqCst);
            if FORKING.load(Ordering::SeqCst) == 0 {
                return;
            }
            INSIDE.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Leave what [`enter`] entered.
    pub(crate) fn exit() {
        // In a child whose handler reset the count, a section entered in
        // the parent cannot end (its thread is gone), so no underflow.
        let _ = INSIDE.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }
}

#[cfg(not(all(unix, not(loom), not(miri))))]
mod imp {
    pub(crate) fn install() {}
    #[inline(always)]
    pub(crate) fn generation() -> u64 {
        0
    }
    pub(crate) fn enter() {}
    pub(crate) fn exit() {}
}

pub(crate) use imp::{enter, exit, generation, install};
