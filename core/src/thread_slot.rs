//! Which writer stripe the current thread owns.
//!
//! A thread that records gets a process-wide slot number on its first
//! record: the lowest free one, claimed from a bitmap and kept until the
//! thread exits. Slot `w` is the thread's stripe `w` in every aggregator
//! (see `stripe.rs`), so a stripe has exactly one writer at a time and its
//! owner updates it with plain stores, no read-modify-write.
//!
//! Claiming and releasing never touch the heap: the slot lives in a
//! constant-initialised thread-local (no destructor to register) and is
//! released by a `pthread_key_t` destructor, whose value sits in the
//! thread's static key block. A record made after that destructor ran (from
//! another key's destructor) finds the slot retired and takes the shared
//! path. The release is a `Release` store and the claim an `Acquire`
//! read-modify-write, so a new owner of a slot sees everything the previous
//! owner wrote into its stripes.
//!
//! After `fork()` (see `fork.rs`) the child's handler marks every slot
//! held by another thread dead: those threads do not exist in the child,
//! their stripes are never written again, and the slots stay taken (never
//! handed out again in that process), so a stripe found mid-write for a dead
//! slot is known to stay so and is read as empty.
//!
//! Recording from a signal handler is not supported: the handler could
//! interrupt its own thread in the middle of a stripe update.

/// How many slots exist; a thread beyond them records through the shared
/// path.
pub(crate) const MAX_SLOTS: usize = 1024;

/// The thread holds no slot (it never asked, or it is exiting).
pub(crate) const NONE: u32 = u32::MAX;

#[cfg(all(unix, not(loom)))]
mod imp {
    use std::cell::Cell;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::{MAX_SLOTS, NONE};

    const WORDS: usize = MAX_SLOTS / 64;
    /// Never asked: claim on the next record.
    const UNCLAIMED: u32 = u32::MAX - 1;

    /// Bit `w` set: slot `w` has a live owner (or a dead one, below).
    static TAKEN: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];
    /// Bit `w` set: slot `w` was held, at a `fork()`, by a thread other
    /// than the forking one: its owner does not exist in this process.
    static DEAD: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];

    #[cfg(not(miri))] // no fork under Miri (`fork.rs`)
    /// In a fork child's handler (one thread): every taken slot but the
    /// forking thread's is dead, and stays taken.
    pub(crate) fn after_fork_in_child() {
        let own = SLOT.with(Cell::get) as usize;
        for (i, (taken, dead)) in TAKEN.iter().zip(&DEAD).enumerate() {
            let mut others = taken.load(Ordering::Relaxed);
            if own / 64 == i {
                others &= !(1u64 << (own % 64));
            }
            dead.fetch_or(others, Ordering::Release);
        }
    }

    /// Whether slot `w`'s owner died in a `fork()` (see the module doc).
    #[inline]
    pub(crate) fn is_dead(w: usize) -> bool {
        w < MAX_SLOTS && DEAD[w / 64].load(Ordering::Acquire) & (1 << (w % 64)) != 0
    }

    thread_local! {
        /// This thread's slot, [`UNCLAIMED`] or [`NONE`].
        static SLOT: Cell<u32> = const { Cell::new(UNCLAIMED) };
    }

    /// The key whose destructor releases a thread's slot; `None` when the
    /// key could not be created (every thread then records shared).
    static KEY: OnceLock<Option<libc::pthread_key_t>> = OnceLock::new();

    extern "C" fn release(value: *mut libc::c_void) {
        let slot = value.addr().wrapping_sub(1);
        if slot < MAX_SLOTS {
            // Later records on this exiting thread go shared.
            SLOT.with(|s| s.set(NONE));
            TAKEN[slot / 64].fetch_and(!(1u64 << (slot % 64)), Ordering::Release);
        }
    }

    fn key() -> Option<libc::pthread_key_t> {
        *KEY.get_or_init(|| {
            let mut key: libc::pthread_key_t = 0;
            // SAFETY: `key` is a valid out pointer; `release` is an
            // `extern "C" fn(*mut c_void)` as the destructor must be.
            let rc = unsafe { libc::pthread_key_create(&mut key, Some(release)) };
            (rc == 0).then_some(key)
        })
    }

    #[cold]
    fn claim(cell: &Cell<u32>) -> u32 {
        let slot = claim_bit().map_or(NONE, |slot| {
            let registered = key().is_some_and(|key| {
                // SAFETY: `key` came from `pthread_key_create`; the value is
                // an integer in a pointer, never dereferenced.
                unsafe { libc::pthread_setspecific(key, std::ptr::without_provenance(slot as usize + 1)) == 0 }
            });
            if registered {
                slot
            } else {
                // Nobody would release it: give it back, record shared.
                TAKEN[slot as usize / 64].fetch_and(!(1u64 << (slot % 64)), Ordering::Release);
                NONE
            }
        });
        cell.set(slot);
        slot
    }

    fn claim_bit() -> Option<u32> {
        for (i, word) in TAKEN.iter().enumerate() {
            let mut cur = word.load(Ordering::Relaxed);
            while cur != u64::MAX {
                let bit = (!cur).trailing_zeros();
                match word.compare_exchange_weak(cur, cur | (1 << bit), Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => return Some((i * 64) as u32 + bit),
                    Err(x) => cur = x,
                }
            }
        }
        None
    }

    /// The current thread's slot ([`NONE`] if it has none).
    #[inline]
    pub(crate) fn current() -> u32 {
        SLOT.with(|s| match s.get() {
            UNCLAIMED => claim(s),
            slot => slot,
        })
    }

    /// The current thread's slot without claiming one.
    pub(crate) fn peek() -> u32 {
        match SLOT.with(Cell::get) {
            UNCLAIMED => NONE,
            slot => slot,
        }
    }
}

#[cfg(all(not(unix), not(loom)))]
mod imp {
    /// No `fork()` here.
    pub(crate) fn is_dead(_: usize) -> bool {
        false
    }

    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::{MAX_SLOTS, NONE};

    const WORDS: usize = MAX_SLOTS / 64;
    static TAKEN: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];

    /// Owns a slot; releases it when the thread's locals are destroyed.
    struct Owned(Cell<u32>);

    impl Drop for Owned {
        fn drop(&mut self) {
            let slot = self.0.get() as usize;
            if slot < MAX_SLOTS {
                TAKEN[slot / 64].fetch_and(!(1u64 << (slot % 64)), Ordering::Release);
            }
        }
    }

    thread_local! {
        static SLOT: Owned = const { Owned(Cell::new(u32::MAX - 1)) };
    }

    fn claim_bit() -> u32 {
        for (i, word) in TAKEN.iter().enumerate() {
            let mut cur = word.load(Ordering::Relaxed);
            while cur != u64::MAX {
                let bit = (!cur).trailing_zeros();
                match word.compare_exchange_weak(cur, cur | (1 << bit), Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => return (i * 64) as u32 + bit,
                    Err(x) => cur = x,
                }
            }
        }
        NONE
    }

    #[inline]
    pub(crate) fn current() -> u32 {
        SLOT.try_with(|s| match s.0.get() {
            v if v == u32::MAX - 1 => {
                let slot = claim_bit();
                s.0.set(slot);
                slot
            }
            slot => slot,
        })
        .unwrap_or(NONE)
    }

    pub(crate) fn peek() -> u32 {
        match SLOT.try_with(|s| s.0.get()) {
            Ok(slot) if slot < MAX_SLOTS as u32 => slot,
            _ => NONE,
        }
    }
}

/// Under loom: slots numbered in the order threads first record, never
/// released (a model's threads all live to its end).
#[cfg(loom)]
mod imp {
    use std::cell::Cell;

    use loom::sync::atomic::{AtomicU32, Ordering};

    loom::lazy_static! {
        static ref NEXT: AtomicU32 = AtomicU32::new(0);
    }
    loom::thread_local! {
        static SLOT: Cell<u32> = Cell::new(u32::MAX - 1);
    }

    pub(crate) fn current() -> u32 {
        SLOT.with(|s| {
            if s.get() == u32::MAX - 1 {
                s.set(NEXT.fetch_add(1, Ordering::Relaxed));
            }
            s.get()
        })
    }

    pub(crate) fn peek() -> u32 {
        match SLOT.with(|s| s.get()) {
            v if v == u32::MAX - 1 => super::NONE,
            v => v,
        }
    }

    pub(crate) fn is_dead(_: usize) -> bool {
        false
    }
}

#[cfg(all(unix, not(loom), not(miri)))]
pub(crate) use imp::after_fork_in_child;
pub(crate) use imp::{current, is_dead, peek};
