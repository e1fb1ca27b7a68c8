//! Every `Request` a native client can send, with 0..=4 fds of any kind, through the real
//! `Core::handle` of a daemon core with a null sink (as the transport calls it after decoding).
//!
//! Input: `[fd count][fd kinds…][ClientMsg bytes]` (see `soundgate_fuzz::FdKind`).
//! Holds: never a panic; the fd-count rules: a playback stream needs exactly 1 fd (its ring
//! memfd; wake-ups go through the ring's futex word) and a sample upload exactly 1, so any other count is refused; a refused request
//! leaves no fd behind (what it was sent is closed); a non-admin's admin request is refused.
#![no_main]
use libfuzzer_sys::fuzz_target;
use soundgate_fuzz::{open_fds, FdKind, HONEST_LIMIT};
use soundgate_proto::ring;
use soundgate_proto::wire::{self, ClientMsg, Request};
use soundgated::config::Config;
use soundgated::core::{Core, Handled};
use soundgated::identity::{identify_peer, Identity};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;

struct World {
    core: Core,
    me: Identity,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let core = Core::new(&Config::builtin_default()).expect("a null sink opens");
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let me = identify_peer(a.as_fd()).expect("identify self");
        World { core, me }
    })
}

/// The fds an honest client would send for `req`: (size, ring geometry or none for a sample).
fn honest(req: &Request) -> Option<(usize, Option<(u64, usize)>)> {
    match req {
        Request::CreatePlayback {
            spec,
            capacity_frames,
            ..
        } => {
            let size = ring::ring_bytes(*capacity_frames, spec.frame_bytes()).ok()?;
            (size <= HONEST_LIMIT).then_some((size, Some((*capacity_frames, spec.frame_bytes()))))
        }
        Request::UploadSample { spec, frames, .. } => {
            let size = usize::try_from(*frames)
                .ok()?
                .checked_mul(spec.frame_bytes())?;
            (size > 0 && size <= HONEST_LIMIT).then_some((size, None))
        }
        _ => None,
    }
}

fn is_admin_only(req: &Request) -> bool {
    matches!(
        req,
        Request::SetDefaultSink { .. }
            | Request::SuspendDevice { .. }
            | Request::SetDeviceVolume { .. }
            | Request::SetDeviceMute { .. }
            | Request::SetDefaultSource { .. }
            | Request::CreateDevice { .. }
            | Request::RemoveDevice { .. }
            | Request::ListClients
            | Request::KillClient { .. }
            | Request::SubscribeMeters { .. }
            | Request::AuditTail { .. }
            | Request::AddGrant { .. }
            | Request::SubscribePrompts
            | Request::AnswerPrompt { .. }
            | Request::ListPrompts
            | Request::ListGrants
            | Request::RevokeGrant { .. }
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&count, mut rest)) = data.split_first() else {
        return;
    };
    let count = (count % 5) as usize;
    let mut kinds = Vec::new();
    for _ in 0..count {
        match FdKind::take(&mut rest) {
            Some(k) => kinds.push(k),
            None => return,
        }
    }
    let Ok(msg) = wire::decode::<ClientMsg>(rest) else {
        return;
    };
    // Hello is the transport's business (handshake), never passed to the core.
    if matches!(msg.req, Request::Hello { .. }) {
        return;
    }
    let w = world();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
    let client = w
        .core
        .connect(w.me.clone(), "fuzz", tx, false)
        .expect("connect");
    let before = open_fds();
    let honest = honest(&msg.req);
    let fds: Vec<OwnedFd> = kinds.iter().filter_map(|k| k.make(honest)).collect();
    let sent = fds.len();
    let req = msg.req.clone();
    let out = match w.core.handle(client, msg.req, fds) {
        Handled::Done(out) => out,
        Handled::Ask(_) => panic!("no prompt agent is connected, so nothing may wait: {req:?}"),
    };
    match &req {
        Request::CreatePlayback { .. } if sent != 1 => {
            assert!(out.result.is_err(), "playback accepted with {sent} fds")
        }
        Request::UploadSample { .. } if sent != 1 => {
            assert!(out.result.is_err(), "upload accepted with {sent} fds")
        }
        r if is_admin_only(r) => {
            assert!(out.result.is_err(), "non-admin did an admin request: {r:?}")
        }
        _ => {}
    }
    if out.result.is_err() {
        assert!(out.fds.is_empty(), "an error reply carries fds");
        assert_eq!(
            open_fds(),
            before,
            "a refused request leaked an fd: {req:?}"
        );
    }
    drop(out);
    w.core.disconnect(client);
    for i in 0..w.core.sinks().len() {
        w.core.reap(i);
    }
    while rx.try_recv().is_ok() {}
});
