//! The PulseAudio socket's decoders, as the daemon runs them: the input is the byte stream a
//! client writes to `pulse/native` (after a first byte that picks the negotiated protocol
//! version, 8..=VERSION). Each frame descriptor goes through the transport's own
//! `check_frame_header`, each control packet through its own `parse_command` (the crate's
//! tagstruct decoder inside the transport's `catch_unwind` guard), exactly as the frame reader
//! and the connection do; a rejected descriptor or a short payload ends the input, as it ends
//! the connection.
//!
//! Holds: no panic escapes the transport's functions (a panic the guard catches is a verdict,
//! not a crash — the panic hook is silenced for it, and anything that escapes aborts); every
//! accepted descriptor is within the limits (length 1..=MAX_PACKET for a control packet,
//! 1..=MAX_MEMBLOCK for a memblock, flags 0 on control packets, no SHM bits and a seek mode
//! ≤ 3 on memblocks); and every verdict that names a tag names the packet's own tag (the
//! error reply goes to the request that caused it).
#![no_main]
use libfuzzer_sys::fuzz_target;
use pulseaudio::protocol::{TagStructReader, DESCRIPTOR_SIZE};
use soundgated::transport::pulse::{
    check_frame_header, parse_command, Parsed, MAX_MEMBLOCK, MAX_PACKET, VERSION,
};
use std::cell::RefCell;
use std::io::Cursor;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// The last panic message, kept for the report if a panic escapes.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// libfuzzer-sys's hook aborts on every panic, even one the transport catches; this one only
/// records it. A panic that escapes is caught below and aborts, so it is still a crash.
fn quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        panic::set_hook(Box::new(|info| {
            LAST_PANIC.with(|l| *l.borrow_mut() = Some(info.to_string()));
        }))
    });
}

/// The packet's own (command, tag), as a tagstruct reader sees them, if it has them.
fn head(payload: &[u8], version: u16) -> Option<(u32, u32)> {
    let mut c = Cursor::new(payload);
    let mut ts = TagStructReader::new(&mut c, version);
    Some((ts.read_u32().ok()?, ts.read_u32().ok()?))
}

fn frames(mut rest: &[u8], version: u16) {
    while rest.len() >= DESCRIPTOR_SIZE {
        let header: &[u8; DESCRIPTOR_SIZE] = rest[..DESCRIPTOR_SIZE].try_into().expect("20 bytes");
        rest = &rest[DESCRIPTOR_SIZE..];
        let Ok(h) = check_frame_header(header) else {
            return; // the connection ends
        };
        let limit = if h.is_control() {
            MAX_PACKET
        } else {
            MAX_MEMBLOCK
        };
        assert!(h.length >= 1 && h.length <= limit, "accepted {h:?}");
        if h.is_control() {
            assert_eq!(h.flags, 0, "accepted {h:?}");
        } else {
            assert_eq!(h.flags & 0xff00_0000, 0, "accepted SHM frame {h:?}");
            assert!(h.flags & 0xff <= 3, "accepted seek mode {h:?}");
        }
        let len = h.length as usize;
        if rest.len() < len {
            return; // EOF mid-frame
        }
        let (payload, tail) = rest.split_at(len);
        rest = tail;
        if !h.is_control() {
            continue; // memblocks go to a stream's converter, not a decoder
        }
        let own = head(payload, version).map(|(_, tag)| tag);
        match parse_command(payload, version) {
            Parsed::Ok(tag, _) | Parsed::Unknown(tag, _) | Parsed::Unimplemented(tag) => {
                assert_eq!(Some(tag), own, "verdict for another tag")
            }
            Parsed::Bad(Some(tag), _) => assert_eq!(Some(tag), own, "verdict for another tag"),
            Parsed::Bad(None, _) => assert_eq!(own, None, "tag readable but not reported"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    quiet_hook();
    let Some((&v, rest)) = data.split_first() else {
        return;
    };
    let version = 8 + u16::from(v) % (VERSION - 7);
    if panic::catch_unwind(AssertUnwindSafe(|| frames(rest, version))).is_err() {
        let msg = LAST_PANIC.with(|l| l.borrow_mut().take());
        eprintln!(
            "panic escaped the pulse transport: {}",
            msg.unwrap_or_default()
        );
        std::process::abort();
    }
});
