//! soundgate-proto: everything a soundgate client and server share.
//!
//! - [`wire`]: message types and their compact encoding (the only module that knows it);
//! - [`sock`]: `SOCK_SEQPACKET` sockets with SCM_RIGHTS fd passing and a size cap;
//! - [`shm`] and [`ring`]: sealed memfds and the shared-memory ring layout;
//! - [`convert`]: sample format conversion and resampling for the client library;
//! - [`client`]: the blocking client library used by `sgcat` and the tests.

pub mod client;
pub mod convert;
pub mod format;
pub mod futex;
pub mod resample;
pub mod ring;
pub mod samples;
pub mod shm;
pub mod simd;
pub mod sock;
pub mod wire;

pub use format::{SampleFormat, StreamSpec};
