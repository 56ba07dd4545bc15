//! The Postgres syncer (work in progress).
