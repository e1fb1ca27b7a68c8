//! Every datagram a client can send: `ClientMsg` with any `Request`.
//! Holds: decoding never panics; what decodes re-encodes canonically and round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;
use soundgate_proto::wire::ClientMsg;

fuzz_target!(|data: &[u8]| {
    let _ = soundgate_fuzz::round_trip::<ClientMsg>(data);
});
