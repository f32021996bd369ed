//! Shared helpers for ferry benches.
