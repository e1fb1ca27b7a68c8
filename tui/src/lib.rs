//! sgtop, the soundgate control center, as a library (the binary is `src/main.rs`).
//!
//! The structure follows gitui: all daemon traffic runs on one background thread
//! ([`worker`]) that feeds the UI a closed [`event::AppEvent`] enum over a channel; the
//! [`app::App`] folds events into [`state::State`] and draws [`components`], each of which
//! says whether it consumed a key; every key binding and user-facing string is in [`keys`].
//! Tests drive `App` directly and draw it into ratatui's `TestBackend`.

#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
pub mod components;
pub mod event;
pub mod keys;
pub mod state;
pub mod worker;
