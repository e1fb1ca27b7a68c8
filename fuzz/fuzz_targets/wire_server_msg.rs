//! Every datagram a server can send: `ServerMsg` (replies and events).
//! Holds: decoding never panics; what decodes re-encodes canonically and round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;
use soundgate_proto::wire::ServerMsg;

fuzz_target!(|data: &[u8]| {
    let _ = soundgate_fuzz::round_trip::<ServerMsg>(data);
});
