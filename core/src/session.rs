//! Who an aggregator's data belongs to in storage.
//!
//! Rows in Chancy's tables hold absolute bucket values under a session id,
//! so the same data written under two session ids counts twice, and two
//! writers of one session can overwrite each other's newer values with
//! older ones. A [`Session`] therefore lives as long as the aggregator:
//! its id is fixed the first time a writer asks for it, every later writer
//! (a restarted syncer) continues it, and at most one writer holds it at a
//! time. It also remembers the process that created the aggregator: after
//! `fork()` the child holds a copy of the parent's data, which the parent
//! saves, so a child may record and read but not write it.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

/// An aggregator's storage identity.
pub struct Session {
    /// The session id, set once by [`Session::adopt`].
    id: OnceLock<u128>,
    /// True while a writer holds the session ([`Session::claim`]).
    claimed: AtomicBool,
    /// The process that created the aggregator.
    pid: u32,
    /// What the last writer remembered of what it saved, and where it
    /// saved it: the next writer to the same place starts from there
    /// instead of sending everything again.
    memory: Mutex<Option<(String, Box<dyn Any + Send>)>>,
}

/// Why a writer cannot take a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// The session already has this other id.
    OtherId(u128),
    /// Another writer holds the session.
    Claimed,
    /// The aggregator was created by another process (this is a forked
    /// child); its data belongs to that process.
    Forked {
        /// The creating process.
        owner: u32,
    },
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id())
            .field("claimed", &self.is_claimed())
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionError::OtherId(id) => write!(
                f,
                "this aggregator's data is already saved under session {:032x}; writing it under another session would count it twice",
                id
            ),
            SessionError::Claimed => f.write_str("this aggregator already has a running syncer (one at a time)"),
            SessionError::Forked { owner } => write!(
                f,
                "this aggregator was created by process {owner}: after fork() the child holds a copy of data the parent saves; create a new aggregator in the child"
            ),
        }
    }
}

impl std::error::Error for SessionError {}

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

impl Session {
    /// A session with no id yet, owned by the calling process.
    pub fn new() -> Session {
        Session {
            id: OnceLock::new(),
            claimed: AtomicBool::new(false),
            pid: std::process::id(),
            memory: Mutex::new(None),
        }
    }

    /// The session id, once a writer has fixed it.
    pub fn id(&self) -> Option<u128> {
        self.id.get().copied()
    }

    /// Fix the id to `wanted` (or to `fresh()` when `wanted` is `None`) if
    /// it is not set yet; returns the session's id. A `wanted` id that
    /// differs from the one already fixed is refused.
    pub fn adopt(&self, wanted: Option<u128>, fresh: impl FnOnce() -> u128) -> Result<u128, SessionError> {
        self.check_process()?;
        let id = *self.id.get_or_init(|| wanted.unwrap_or_else(fresh));
        match wanted {
            Some(w) if w != id => Err(SessionError::OtherId(id)),
            _ => Ok(id),
        }
    }

    /// Take the session for one writer; [`Session::release`] gives it back.
    pub fn claim(&self) -> Result<(), SessionError> {
        self.check_process()?;
        self.claimed
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(|_| SessionError::Claimed)
    }

    /// Give back a claim taken with [`Session::claim`].
    pub fn release(&self) {
        self.claimed.store(false, Ordering::Release);
    }

    /// Whether a writer holds the session.
    pub fn is_claimed(&self) -> bool {
        self.claimed.load(Ordering::Acquire)
    }

    /// Keep a writer's memory of what it saved to `target` for the next
    /// writer (see [`Session::unstash`]).
    pub fn stash(&self, target: String, memory: Box<dyn Any + Send>) {
        *self.memory.lock().unwrap_or_else(|e| e.into_inner()) = Some((target, memory));
    }

    /// The memory the last writer stashed, and whether it wrote to
    /// `target` (what it saved elsewhere is not saved at `target`).
    pub fn unstash(&self, target: &str) -> Option<(bool, Box<dyn Any + Send>)> {
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.take().map(|(t, m)| (t == target, m))
    }

    /// Refuse writers in a process other than the creator (a forked child).
    pub fn check_process(&self) -> Result<(), SessionError> {
        if std::process::id() == self.pid {
            Ok(())
        } else {
            Err(SessionError::Forked { owner: self.pid })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_id_sticks_and_one_writer_at_a_time() {
        let s = Session::new();
        assert_eq!(s.id(), None);
        assert_eq!(s.adopt(None, || 7), Ok(7));
        assert_eq!(s.adopt(None, || 8), Ok(7));
        assert_eq!(s.adopt(Some(7), || 8), Ok(7));
        assert_eq!(s.adopt(Some(9), || 8), Err(SessionError::OtherId(7)));
        assert_eq!(s.claim(), Ok(()));
        assert_eq!(s.claim(), Err(SessionError::Claimed));
        s.release();
        assert_eq!(s.claim(), Ok(()));
    }
}
