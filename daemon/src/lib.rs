//! soundgated: the soundgate daemon, as a library so that benches and tests reach its parts.
//!
//! Layers, top to bottom (see ARCHITECTURE.md): [`transport`] parses bytes into core requests;
//! [`identity`] says who a peer is; [`core`] owns the objects and asks [`policy`] before every
//! action; [`engine`] mixes in real time; [`backend`] talks to the device.

pub mod backend;
pub mod cli;
pub mod config;
pub mod core;
pub mod engine;
pub mod identity;
pub mod memory;
pub mod notify;
pub mod policy;
pub mod ratelimit;
pub mod transport;
