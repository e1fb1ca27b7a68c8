#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Event subscription (issue 5 row 8): a client hears about its own streams and the devices
//! it may use, and nothing else; an administrator hears about everything; a subscriber that
//! does not read is cut off without slowing anyone.

mod common;

use common::{wait_for, Daemon};
use soundgate_proto::client::{Client, PlaybackOptions};
use soundgate_proto::wire::{DeviceKind, Event, Reply, Request, StreamId};
use soundgate_proto::{SampleFormat, StreamSpec};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SPEC: StreamSpec = StreamSpec {
    format: SampleFormat::F32Le,
    rate: 48_000,
    channels: 2,
};

const LONG: Duration = Duration::from_secs(10);
/// Volume changes of the flood test.
const CHANGES: usize = 3000;

fn null_sink(name: &str) -> String {
    format!(
        "[[sink]]\nname = \"{name}\"\nbackend = \"null\"\nrate = 48000\nchannels = 2\n\
         format = \"f32le\"\nquantum = 256\n"
    )
}

fn subscribe(c: &Client) {
    let (reply, _) = c.request(Request::Subscribe, &[]).unwrap();
    assert_eq!(reply, Reply::Ok);
}

/// Collects `c`'s events until `done` holds for what was collected (or fails after a while).
fn collect_until(c: &Client, what: &str, mut done: impl FnMut(&[Event]) -> bool) -> Vec<Event> {
    let mut all = Vec::new();
    let ok = wait_for(LONG, || {
        all.extend(c.take_events().unwrap());
        done(&all)
    });
    assert!(ok, "{what}: got only {all:#?}");
    all
}

/// Stream ids an event is about.
fn stream_of(ev: &Event) -> Option<StreamId> {
    match ev {
        Event::StreamAdded(i) | Event::StreamChanged(i) => Some(i.id),
        Event::StreamRemoved { stream } => Some(*stream),
        _ => None,
    }
}

fn corked(c: &Client, name: &str) -> soundgate_proto::client::Playback {
    let mut opts = PlaybackOptions::new(name, SPEC);
    opts.corked = true;
    c.playback(opts).unwrap()
}

#[test]
fn a_subscriber_sees_its_own_streams_and_an_admin_sees_everything() {
    let d = Daemon::start(&null_sink("speakers"));
    let admin = d.admin("watcher");
    subscribe(&admin);
    let me = d.client("me");
    subscribe(&me);
    let other = d.client("other");
    let other_id = other.client_id();

    // Another client's stream comes, changes and goes before mine does.
    let theirs = corked(&other, "theirs");
    theirs.set_volume(0.25).unwrap();
    let theirs_id = theirs.id();
    let (reply, _) = other
        .request(Request::DeleteStream { stream: theirs_id }, &[])
        .unwrap();
    assert_eq!(reply, Reply::Ok);

    let mine = corked(&me, "mine");
    let id = mine.id();
    mine.set_volume(0.5).unwrap();
    mine.cork(false).unwrap();
    let (reply, _) = me
        .request(Request::DeleteStream { stream: id }, &[])
        .unwrap();
    assert_eq!(reply, Reply::Ok);

    // Mine: added, changed (volume, then cork), removed — in that order.
    let got = collect_until(&me, "my stream's events", |evs| {
        evs.iter()
            .any(|e| matches!(e, Event::StreamRemoved { stream } if *stream == id))
    });
    let mut seen = got.iter().filter(|e| stream_of(e) == Some(id));
    assert!(
        matches!(seen.next(), Some(Event::StreamAdded(i)) if i.name == "mine" && i.client == me.client_id()),
        "{got:#?}"
    );
    assert!(
        matches!(seen.next(), Some(Event::StreamChanged(i)) if i.volume == 0.5 && i.corked),
        "{got:#?}"
    );
    assert!(
        matches!(seen.next(), Some(Event::StreamChanged(i)) if !i.corked),
        "{got:#?}"
    );
    assert!(
        matches!(seen.next(), Some(Event::StreamRemoved { .. })),
        "{got:#?}"
    );
    // Nothing of the other client's stream (it came and went before mine was removed, so any
    // event about it would have arrived first), and nothing for administrators.
    for e in &got {
        assert_ne!(stream_of(e), Some(theirs_id), "leaked: {e:?}");
        assert!(
            !matches!(
                e,
                Event::ClientAdded(_)
                    | Event::ClientRemoved { .. }
                    | Event::Decision(_)
                    | Event::Xrun { .. }
            ),
            "an administrator's event reached a client: {e:?}"
        );
    }

    // The administrator saw both streams, the other client come and go, and the decisions.
    drop(theirs);
    drop(other);
    let got = collect_until(&admin, "the admin's events", |evs| {
        let removed = |s| {
            evs.iter()
                .any(|e| matches!(e, Event::StreamRemoved { stream } if *stream == s))
        };
        removed(id)
            && removed(theirs_id)
            && evs
                .iter()
                .any(|e| matches!(e, Event::ClientRemoved { client } if *client == other_id))
            && evs
                .iter()
                .any(|e| matches!(e, Event::Decision(l) if l.contains("\"control-stream\"")))
    });
    assert!(
        got.iter().any(|e| matches!(e, Event::ClientAdded(c)
            if c.id == other_id && c.label == "other" && !c.admin && c.app_id.starts_with("exe:"))),
        "{got:#?}"
    );
    for s in [id, theirs_id] {
        assert!(
            got.iter()
                .any(|e| matches!(e, Event::StreamAdded(i) if i.id == s)),
            "{got:#?}"
        );
    }
    assert!(
        got.iter()
            .any(|e| matches!(e, Event::StreamChanged(i) if i.id == theirs_id && i.volume == 0.25)),
        "{got:#?}"
    );
    let line = got
        .iter()
        .find_map(|e| match e {
            Event::Decision(l) => Some(l.clone()),
            _ => None,
        })
        .unwrap();
    for field in ["\"subject\"", "\"action\"", "\"decision\"", "\"by\""] {
        assert!(line.contains(field), "{line}");
    }
}

/// Device events follow the ListSinks filter: a sink the client may not play to is not
/// announced to it.
#[test]
fn device_events_are_filtered_like_the_device_lists() {
    let me = common::exe_id(&std::env::current_exe().unwrap());
    let config = format!(
        "{}{}[[rule]]\napp = \"{me}\"\naction = \"play\"\ntarget = \"secret\"\ndecision = \"deny\"\n",
        null_sink("speakers"),
        null_sink("secret")
    );
    let d = Daemon::start(&config);
    let c = d.client("c");
    assert_eq!(c.sinks().unwrap().len(), 1, "secret must be hidden");
    subscribe(&c);
    let admin = d.admin("admin");
    for sink in ["secret", "speakers"] {
        let (reply, _) = admin
            .request(Request::SetDefaultSink { sink: sink.into() }, &[])
            .unwrap();
        assert_eq!(reply, Reply::Ok);
    }
    // Old default, then new: speakers (no longer default), secret, secret, speakers (default).
    let got = collect_until(&c, "speakers' events", |evs| {
        evs.iter()
            .any(|e| matches!(e, Event::DeviceChanged(i) if i.name == "speakers" && i.is_default))
    });
    assert!(
        got.iter().any(|e| matches!(e, Event::DeviceChanged(i)
            if i.name == "speakers" && !i.is_default && i.kind == DeviceKind::Sink)),
        "{got:#?}"
    );
    for e in &got {
        assert!(
            !matches!(e, Event::DeviceChanged(i) if i.name == "secret"),
            "a hidden sink was announced: {e:?}"
        );
    }
}

/// A subscriber that never reads is cut off once its queue is full; the client causing the
/// events and a playing stream are not slowed down.
#[test]
fn a_subscriber_that_does_not_read_is_cut_off() {
    let d = Daemon::start(&null_sink("speakers"));
    let silent = d.admin("silent");
    subscribe(&silent);
    let listener = d.admin("listener");
    subscribe(&listener);
    // The listener reads all along; `seen` counts the stream changes it got.
    let seen = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (listener, seen) = (listener.clone(), Arc::clone(&seen));
        std::thread::spawn(move || {
            let start = Instant::now();
            while seen.load(Ordering::Relaxed) < CHANGES && start.elapsed() < 3 * LONG {
                let evs = listener
                    .take_events()
                    .expect("the reading subscriber was cut off");
                let n = evs
                    .iter()
                    .filter(|e| matches!(e, Event::StreamChanged(_)))
                    .count();
                seen.fetch_add(n, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };

    let busy = d.client("busy");
    let p = corked(&busy, "flood");
    for i in 0..CHANGES {
        p.set_volume(if i % 2 == 0 { 0.5 } else { 1.0 }).unwrap();
        // Never more than 100 changes ahead of the reading subscriber (whatever the VM's
        // scheduling), far less than a connection's event queue; the silent one falls behind.
        if i % 100 == 99 {
            let behind = wait_for(LONG, || seen.load(Ordering::Relaxed) + 100 > i);
            assert!(behind, "the reading subscriber stopped receiving events");
        }
    }
    let last = p.info().unwrap();
    assert_eq!(last.volume, 1.0);

    // The silent subscriber now reads: it gets part of the events, then the connection ends.
    let mut changes = 0usize;
    let closed = wait_for(LONG, || match silent.take_events() {
        Ok(evs) => {
            changes += evs
                .iter()
                .filter(|e| matches!(e, Event::StreamChanged(i) if i.id == p.id()))
                .count();
            false
        }
        Err(_) => true,
    });
    assert!(closed, "the silent subscriber was not cut off");
    assert!(changes < CHANGES, "it got all {changes} events");
    // Everyone else carries on.
    reader.join().expect("the reading subscriber was cut off");
    assert_eq!(
        seen.load(Ordering::Relaxed),
        CHANGES,
        "the reading subscriber missed changes"
    );
    let (reply, _) = listener.request(Request::ServerInfo, &[]).unwrap();
    assert!(matches!(reply, Reply::ServerInfo(_)));
    assert!(busy.streams().is_ok());
}
