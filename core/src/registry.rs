//! The series registry: key -> series id, lock-free for keys already known.
//!
//! Everything is allocated in [`Registry::new`] (lazily zeroed, see `mem.rs`): an open-addressing table of
//! `2 * capacity` (rounded up to a power of two) atomic entries, one packed
//! metadata word per series, and one byte arena for keys and units.
//! Registering takes a `parking_lot` mutex, writes the key bytes and the
//! metadata of the new id, then publishes the id with a release store; a
//! lookup that acquires the entry therefore sees complete key bytes.

use std::cell::UnsafeCell;
use std::hash::BuildHasher;

use parking_lot::Mutex;

use crate::Kind;
use crate::error::Error;
use crate::mem::Zeroed;
use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// A registered series' identity, read from the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesInfo<'a> {
    /// The series id (dense, from 0, in registration order).
    pub id: u32,
    /// The key.
    pub key: &'a str,
    /// The unit.
    pub unit: &'a str,
    /// The kind.
    pub kind: Kind,
}

pub(crate) struct Registry {
    /// Open-addressing table. Entry: `(hash >> 32) << 32 | (id + 1)`; 0 is
    /// empty. Entries are written once (0 -> id) and never removed.
    table: Zeroed<AtomicU64>,
    mask: usize,
    /// Per id: `key_offset: 32 | key_len: 11 | unit_len: 9 | kind: 2`,
    /// written before the id is published. The unit follows the key.
    meta: Zeroed<AtomicU64>,
    /// Key and unit bytes. A byte is written once, under `writer`, before
    /// the id that owns it is published; it is never written again.
    arena: Zeroed<UnsafeCell<u8>>,
    /// Published series count.
    len: AtomicU32,
    /// Held while registering; guards the arena's used length.
    writer: Mutex<usize>,
    hasher: foldhash::fast::FixedState,
}

// SAFETY: the only non-Sync field is the arena's `UnsafeCell<u8>`s. A byte
// is written only under `writer` and only before the id owning it is
// published (release store of a table entry and of `len`); readers reach
// bytes only through a published id (acquire load), so no byte is read
// while it is written and no byte is written twice.
unsafe impl Sync for Registry {}

impl Registry {
    /// `slots` (a power of two above `capacity`) table entries, all zero
    /// (empty), as lazily zeroed memory: nothing is written up front.
    pub(crate) fn new(capacity: usize, slots: usize, key_bytes: usize, seed: u64) -> Result<Registry, Error> {
        debug_assert!(slots.is_power_of_two() && slots > capacity);
        Ok(Registry {
            table: Zeroed::new(slots, "registry table")?,
            mask: slots - 1,
            meta: Zeroed::new(capacity, "registry metadata")?,
            arena: Zeroed::new(key_bytes, "key arena")?,
            len: AtomicU32::new(0),
            writer: Mutex::new(0),
            hasher: foldhash::fast::FixedState::with_seed(seed),
        })
    }

    /// Bytes allocated by the registry.
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.table.len() * 8 + self.meta.len() * 8 + self.arena.len()
    }

    /// Number of registered series.
    #[inline]
    pub(crate) fn len(&self) -> u32 {
        self.len.load(Ordering::Acquire)
    }

    #[inline]
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The bytes `[off, off + len)` of the arena.
    ///
    /// # Safety
    /// The range must belong to a published id (see the `Sync` impl).
    #[inline]
    unsafe fn bytes(&self, off: usize, len: usize) -> &[u8] {
        let cells = &self.arena[off..off + len];
        // SAFETY: `UnsafeCell<u8>` has the layout of `u8`; by the caller's
        // contract these bytes are published and never written again.
        unsafe { std::slice::from_raw_parts(cells.as_ptr() as *const u8, len) }
    }

    /// The identity of a published id.
    #[inline]
    pub(crate) fn info(&self, id: u32) -> Option<SeriesInfo<'_>> {
        if id >= self.len() {
            return None;
        }
        let m = self.meta[id as usize].load(Ordering::Relaxed);
        let off = (m & 0xFFFF_FFFF) as usize;
        let klen = ((m >> 32) & 0x7FF) as usize;
        let ulen = ((m >> 43) & 0x1FF) as usize;
        // SAFETY: `id < len` was read with acquire, so the id and its bytes
        // are published; the bytes were copied from `&str`s, so are UTF-8.
        let (key, unit) = unsafe {
            (
                std::str::from_utf8_unchecked(self.bytes(off, klen)),
                std::str::from_utf8_unchecked(self.bytes(off + klen, ulen)),
            )
        };
        Some(SeriesInfo {
            id,
            key,
            unit,
            kind: Kind::from_bits(m >> 52),
        })
    }

    /// Find a key without locking.
    #[inline]
    pub(crate) fn lookup(&self, key: &str) -> Option<SeriesInfo<'_>> {
        self.lookup_bytes(key.as_bytes())
    }

    /// Find a key given as bytes (no UTF-8 check needed: only valid keys
    /// are ever registered, so a match is valid UTF-8).
    #[inline]
    pub(crate) fn lookup_bytes(&self, key: &[u8]) -> Option<SeriesInfo<'_>> {
        self.find(key, self.hash(key)).map(|(_, info)| info).ok()
    }

    /// `Ok(info)` if found, else `Err(index of the empty entry that ends the
    /// probe)`.
    #[inline]
    fn find(&self, key: &[u8], hash: u64) -> Result<(usize, SeriesInfo<'_>), usize> {
        let tag = hash >> 32;
        let mut i = hash as usize & self.mask;
        loop {
            let e = self.table[i].load(Ordering::Acquire);
            if e == 0 {
                return Err(i);
            }
            if e >> 32 == tag {
                let id = (e & 0xFFFF_FFFF) as u32 - 1;
                let m = self.meta[id as usize].load(Ordering::Relaxed);
                let off = (m & 0xFFFF_FFFF) as usize;
                let klen = ((m >> 32) & 0x7FF) as usize;
                // SAFETY: the entry was acquired, so id and bytes are published.
                if klen == key.len() && unsafe { self.bytes(off, klen) } == key {
                    let ulen = ((m >> 43) & 0x1FF) as usize;
                    // SAFETY: as above; the bytes came from `&str`s.
                    let (key, unit) = unsafe {
                        (
                            std::str::from_utf8_unchecked(self.bytes(off, klen)),
                            std::str::from_utf8_unchecked(self.bytes(off + klen, ulen)),
                        )
                    };
                    return Ok((
                        i,
                        SeriesInfo {
                            id,
                            key,
                            unit,
                            kind: Kind::from_bits(m >> 52),
                        },
                    ));
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Find or add a key. `Err` when the existing entry has another kind or
    /// unit, or capacity is exhausted. Key and unit must be valid.
    pub(crate) fn get_or_register(&self, key: &str, kind: Kind, unit: &str) -> Result<SeriesInfo<'_>, Error> {
        let hash = self.hash(key.as_bytes());
        let info = match self.find(key.as_bytes(), hash) {
            Ok((_, info)) => info,
            Err(_) => {
                // Never inside the lock at a fork (`fork.rs`).
                crate::fork::enter();
                let mut used = self.writer.lock();
                let found = match self.find(key.as_bytes(), hash) {
                    Ok((_, info)) => Ok(info),
                    Err(slot) => self.insert(&mut used, slot, hash, key, kind, unit),
                };
                drop(used);
                crate::fork::exit();
                found?
            }
        };
        if info.kind != kind || info.unit != unit {
            return Err(Error::Conflict {
                key: key.to_owned(),
                existing: (info.kind, info.unit.to_owned()),
                requested: (kind, unit.to_owned()),
            });
        }
        Ok(info)
    }

    fn insert(
        &self,
        used: &mut usize,
        slot: usize,
        hash: u64,
        key: &str,
        kind: Kind,
        unit: &str,
    ) -> Result<SeriesInfo<'_>, Error> {
        let id = self.len.load(Ordering::Relaxed);
        if id as usize >= self.meta.len() {
            return Err(Error::CapacityExhausted {
                what: "series",
                limit: self.meta.len(),
            });
        }
        let need = key.len() + unit.len();
        if *used + need > self.arena.len() {
            return Err(Error::CapacityExhausted {
                what: "key_bytes",
                limit: self.arena.len(),
            });
        }
        let off = *used;
        let dst = &self.arena[off..off + need];
        // SAFETY: `[off, off + need)` lies beyond every published byte (the
        // arena's used length is only advanced under the `writer` lock we
        // hold), so no reader can see it, and no other writer exists.
        unsafe {
            let p = dst.as_ptr() as *mut u8;
            std::ptr::copy_nonoverlapping(key.as_ptr(), p, key.len());
            std::ptr::copy_nonoverlapping(unit.as_ptr(), p.add(key.len()), unit.len());
        }
        *used += need;
        let meta = off as u64 | (key.len() as u64) << 32 | (unit.len() as u64) << 43 | (kind as u64) << 52;
        self.meta[id as usize].store(meta, Ordering::Relaxed);
        // Publish: `len` first so `info(id)` works as soon as lookups can
        // return the id.
        self.len.store(id + 1, Ordering::Release);
        self.table[slot].store((hash >> 32) << 32 | (id as u64 + 1), Ordering::Release);
        Ok(self.info(id).expect("just published"))
    }
}
