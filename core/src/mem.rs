//! Fallible, lazily zeroed storage for the aggregator's big arrays.
//!
//! Every array the aggregator allocates (accumulators, ring slots, writer
//! stripes, the registry's table, metadata and key arena) is a [`Zeroed`]:
//! `n` elements whose all-zero bit pattern is their valid empty state. On
//! Linux and the other Unixes a large one is a private anonymous mapping
//! with `MAP_NORESERVE`: the kernel hands out zero pages on first touch, so
//! the pages of series that are never used are never resident, whatever the
//! alignment of the element type (and `MADV_NOHUGEPAGE`, so that holds with
//! transparent huge pages set to "always" too). A small one (and every one under Miri)
//! comes from `std::alloc::alloc_zeroed`. Both report failure as
//! [`Error::AllocationFailed`]; nothing here aborts. Sizes are computed with
//! checked arithmetic by the caller ([`crate::config`]) and again here.

#[cfg(not(loom))]
use std::alloc::Layout;
#[cfg(not(loom))]
use std::marker::PhantomData;
#[cfg(not(loom))]
use std::ptr::NonNull;

use crate::error::Error;

/// A type whose all-zero bit pattern is a valid value.
///
/// # Safety
/// Implementors must be valid (and in their documented empty state) when
/// every byte is zero.
pub(crate) unsafe trait Zeroable {
    /// The empty value, built (loom's atomics are not zero-valid).
    #[cfg(loom)]
    fn empty() -> Self;
}

/// Below this many bytes an array comes from the global allocator (a
/// mapping of its own would waste most of a page).
#[cfg(all(unix, not(miri), not(loom)))]
const MAP_THRESHOLD: usize = 64 * 1024;

/// Under loom: the same interface over a `Box<[T]>` of built values.
#[cfg(loom)]
pub(crate) struct Zeroed<T: Zeroable>(Box<[T]>);

#[cfg(loom)]
impl<T: Zeroable> Zeroed<T> {
    pub(crate) fn new(len: usize, _what: &'static str) -> Result<Self, Error> {
        Ok(Zeroed((0..len).map(|_| T::empty()).collect()))
    }

    pub(crate) fn bytes(&self) -> usize {
        self.0.len() * size_of::<T>()
    }
}

#[cfg(loom)]
impl<T: Zeroable> std::ops::Deref for Zeroed<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.0
    }
}

/// `n` zero-initialised `T`s, fallibly allocated, freed on drop.
#[cfg(not(loom))]
pub(crate) struct Zeroed<T: Zeroable> {
    ptr: NonNull<T>,
    len: usize,
    /// How the memory was obtained (and so how to free it).
    mapped: bool,
    _own: PhantomData<T>,
}

#[cfg(not(loom))]
// SAFETY: `Zeroed<T>` owns its `T`s like a `Box<[T]>` does.
unsafe impl<T: Zeroable + Send> Send for Zeroed<T> {}
#[cfg(not(loom))]
// SAFETY: as for `Box<[T]>`: shared access hands out only `&T`.
unsafe impl<T: Zeroable + Sync> Sync for Zeroed<T> {}

#[cfg(not(loom))]
impl<T: Zeroable> Zeroed<T> {
    /// `len` zeroed elements; `what` names the array in the error.
    pub(crate) fn new(len: usize, what: &'static str) -> Result<Self, Error> {
        let fail = |bytes| Error::AllocationFailed { what, bytes };
        let layout = Layout::array::<T>(len).map_err(|_| fail(usize::MAX))?;
        if layout.size() == 0 {
            return Ok(Zeroed {
                ptr: NonNull::dangling(),
                len,
                mapped: false,
                _own: PhantomData,
            });
        }
        #[cfg(all(unix, not(miri)))]
        if layout.size() >= MAP_THRESHOLD && layout.align() <= 4096 {
            // SAFETY: a fresh private anonymous mapping, no address hint, no
            // file: the call has no preconditions beyond valid flags.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    layout.size(),
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(fail(layout.size()));
            }
            // Keep pages small even where transparent huge pages are on for
            // every mapping ("always"): a 2 MiB page would make the series
            // around a used one resident too. Advice only: a failure is
            // harmless.
            #[cfg(target_os = "linux")]
            // SAFETY: `p` / `size` are the mapping just made.
            unsafe {
                libc::madvise(p, layout.size(), libc::MADV_NOHUGEPAGE);
            }
            // Page-aligned and zero-filled by the kernel; not null (MAP_FAILED
            // is the only failure value).
            return Ok(Zeroed {
                ptr: NonNull::new(p.cast()).ok_or_else(|| fail(layout.size()))?,
                len,
                mapped: true,
                _own: PhantomData,
            });
        }
        // SAFETY: `layout` has a non-zero size (checked above).
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        Ok(Zeroed {
            ptr: NonNull::new(p.cast()).ok_or_else(|| fail(layout.size()))?,
            len,
            mapped: false,
            _own: PhantomData,
        })
    }

    /// Bytes reserved.
    pub(crate) fn bytes(&self) -> usize {
        self.len * size_of::<T>()
    }
}

#[cfg(not(loom))]
impl<T: Zeroable> std::ops::Deref for Zeroed<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` points to `len` initialised (zeroed, `T: Zeroable`)
        // elements that live as long as `self` (or is dangling with a
        // zero-sized allocation, valid for an empty or ZST slice).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

#[cfg(not(loom))]
impl<T: Zeroable> Drop for Zeroed<T> {
    fn drop(&mut self) {
        // The element types hold only atomics: nothing to drop per element.
        let size = self.len * size_of::<T>();
        if size == 0 {
            return;
        }
        if self.mapped {
            #[cfg(all(unix, not(miri)))]
            // SAFETY: `ptr` / `size` are exactly the mapping made in `new`,
            // and no reference into it outlives `self`.
            unsafe {
                libc::munmap(self.ptr.as_ptr().cast(), size);
            }
        } else {
            // SAFETY: allocated in `new` by `alloc_zeroed` with this layout
            // (`Layout::array` succeeded there for the same `len`).
            unsafe {
                std::alloc::dealloc(
                    self.ptr.as_ptr().cast(),
                    Layout::from_size_align_unchecked(size, align_of::<T>()),
                );
            }
        }
    }
}

#[cfg(not(loom))]
impl<T: Zeroable> std::fmt::Debug for Zeroed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Zeroed[{}; {}]", std::any::type_name::<T>(), self.len)
    }
}

// SAFETY: zero is a valid `AtomicU64` (0) and `UnsafeCell<u8>` (0).
unsafe impl Zeroable for crate::sync::AtomicU64 {
    #[cfg(loom)]
    fn empty() -> Self {
        crate::sync::AtomicU64::new(0)
    }
}

// SAFETY: as above.
unsafe impl Zeroable for std::cell::UnsafeCell<u8> {
    #[cfg(loom)]
    fn empty() -> Self {
        std::cell::UnsafeCell::new(0)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sync::AtomicU64;

    #[test]
    fn small_and_large_arrays_are_zero_and_writable() {
        for n in [0, 1, 7, 100_000] {
            let z = Zeroed::<AtomicU64>::new(n, "test").unwrap();
            assert_eq!(z.len(), n);
            assert!(z.iter().all(|a| a.load(crate::sync::Ordering::Relaxed) == 0));
            if let Some(last) = z.last() {
                last.store(5, crate::sync::Ordering::Relaxed);
            }
        }
    }

    #[test]
    fn an_impossible_size_is_an_error() {
        let e = Zeroed::<AtomicU64>::new(usize::MAX / 4, "huge").unwrap_err();
        assert!(matches!(e, Error::AllocationFailed { what: "huge", .. }), "{e}");
    }
}
