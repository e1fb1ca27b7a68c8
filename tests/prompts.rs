//! Consent: requests that need it are parked, every prompt agent (here a test agent on the
//! admin socket) is asked, the first answer wins, a timeout denies, and answers become grants
//! that persist across restarts and can be revoked.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{wait_for, Daemon};
use soundgate_proto::client::{Client, ClientError, RecordOptions};
use soundgate_proto::wire::{ErrorKind, Event, PromptAnswer, PromptInfo, Reply, Request};
use soundgate_proto::{SampleFormat, StreamSpec};
use std::process::Stdio;
use std::time::Duration;

const SPEC: StreamSpec = StreamSpec {
    format: SampleFormat::F32Le,
    rate: 48_000,
    channels: 2,
};

/// A null sink whose monitor asks for consent (a stand-in for a microphone, whose default is
/// "ask" too), with a short prompt timeout.
const CONFIG: &str = r#"
[prompts]
timeout_secs = 3

[[sink]]
name = "out"
backend = "null"

[[rule]]
action = "record"
target = "out.monitor"
decision = "ask"
"#;

/// A prompt agent on the admin socket.
struct Agent {
    client: Client,
}

impl Agent {
    fn new(d: &Daemon) -> Agent {
        let client = d.admin("test-agent");
        let (reply, _) = client.request(Request::SubscribePrompts, &[]).unwrap();
        assert!(matches!(reply, Reply::Prompts(_)), "{reply:?}");
        Agent { client }
    }

    /// Waits for the next prompt.
    fn next_prompt(&self) -> PromptInfo {
        let mut got = None;
        let ok = wait_for(Duration::from_secs(10), || {
            for ev in self.client.take_events().unwrap() {
                if let Event::Prompt(p) = ev {
                    got.get_or_insert(p);
                }
            }
            got.is_some()
        });
        assert!(ok, "no prompt reached the agent");
        got.unwrap()
    }

    fn answer(&self, prompt: u64, answer: PromptAnswer) {
        let (reply, _) = self
            .client
            .request(Request::AnswerPrompt { prompt, answer }, &[])
            .unwrap();
        assert_eq!(reply, Reply::Ok);
    }
}

fn record(client: &Client) -> Result<soundgate_proto::client::Record, ClientError> {
    let mut opts = RecordOptions::new("rec", SPEC);
    opts.device = Some("out.monitor".into());
    client.record(opts)
}

/// Runs `record` on another thread, since it blocks until the prompt is answered.
fn record_in_background(
    d: &Daemon,
    name: &str,
) -> std::thread::JoinHandle<Result<soundgate_proto::client::Record, ClientError>> {
    let client = d.client(name);
    std::thread::spawn(move || record(&client))
}

#[test]
fn prompt_round_trip_once_always_restart_revoke() {
    let d = Daemon::start(CONFIG);
    let agent = Agent::new(&d);
    let second_agent = Agent::new(&d);

    // sgcat asks, says it is waiting, and records once allowed.
    let rec = d.path("rec.wav");
    let sgcat = d
        .sgcat()
        .args([
            "-r",
            "--device",
            "out.monitor",
            "--duration",
            "0.2",
            "--name",
            "Totally Legit Recorder",
        ])
        .arg(&rec)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let prompt = agent.next_prompt();
    assert_eq!(prompt.action, "record");
    assert_eq!(prompt.target, "out.monitor");
    assert_eq!(prompt.app_id, common::exe_id(&common::bin("sgcat")));
    assert_eq!(prompt.app_source, "exe");
    assert_eq!(prompt.uid, 0);
    assert_eq!(prompt.user.as_deref(), Some("root"));
    assert_eq!(prompt.label, "Totally Legit Recorder");
    // Every agent sees it; the first answer wins.
    assert_eq!(second_agent.next_prompt().id, prompt.id);
    agent.answer(prompt.id, PromptAnswer::AllowOnce);
    let late = second_agent.client.request(
        Request::AnswerPrompt {
            prompt: prompt.id,
            answer: PromptAnswer::DenyAlways,
        },
        &[],
    );
    assert_eq!(
        late.unwrap_err().kind(),
        Some(ErrorKind::NotFound),
        "a second answer must lose"
    );
    let out = sgcat.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("waiting for permission"),
        "sgcat did not say it was waiting: {err}"
    );
    assert_eq!(common::read_wav(&rec).1.len(), 2 * 9_600);

    // "Once" was once: the next stream of the same app asks again. Allow always.
    let pending = record_in_background(&d, "again");
    let prompt = agent.next_prompt();
    agent.answer(prompt.id, PromptAnswer::AllowAlways);
    let stream = pending.join().unwrap().expect("allowed always");
    drop(stream);
    let grants = match agent.client.request(Request::ListGrants, &[]).unwrap().0 {
        Reply::Grants(g) => g,
        r => panic!("{r:?}"),
    };
    let always: Vec<_> = grants.iter().filter(|g| g.scope == "always").collect();
    assert_eq!(always.len(), 1, "{grants:?}");
    assert!(always[0].allow && always[0].target.as_deref() == Some("out.monitor"));

    // After a restart the grant still holds: no prompt.
    let d = d.restart();
    let agent = Agent::new(&d);
    let recorder = d.client("after-restart");
    let mut stream = record(&recorder).expect("the persisted grant allows it without a prompt");
    assert!(agent
        .client
        .take_events()
        .unwrap()
        .iter()
        .all(|e| !matches!(e, Event::Prompt(_))));
    let mut buf = Vec::new();
    assert!(stream.read(&mut buf, Some(Duration::from_secs(5))).unwrap() > 0);

    // Revoking it ends the stream at once, with "permission revoked".
    let grant = match agent.client.request(Request::ListGrants, &[]).unwrap().0 {
        Reply::Grants(g) => g.into_iter().find(|g| g.scope == "always").unwrap(),
        r => panic!("{r:?}"),
    };
    agent
        .client
        .request(Request::RevokeGrant { grant: grant.id }, &[])
        .unwrap();
    let ended = loop {
        match stream.read(&mut buf, Some(Duration::from_secs(5))) {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(ended.kind(), Some(ErrorKind::Denied), "{ended}");
    assert!(ended.to_string().contains("permission revoked"), "{ended}");
}

#[test]
fn deny_always_persists_and_timeouts_deny() {
    let d = Daemon::start(CONFIG);
    let agent = Agent::new(&d);
    let pending = record_in_background(&d, "victim-of-deny");
    let prompt = agent.next_prompt();
    agent.answer(prompt.id, PromptAnswer::DenyAlways);
    let e = pending.join().unwrap().unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Denied), "{e}");
    // Denied from now on, without a prompt.
    let e = record(&d.client("again")).unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Denied), "{e}");
    assert!(agent
        .client
        .take_events()
        .unwrap()
        .iter()
        .all(|e| !matches!(e, Event::Prompt(_))));

    // With no answer the prompt times out (3 s here) and the request is denied.
    let d2 = Daemon::start(CONFIG);
    let agent2 = Agent::new(&d2);
    let out = d2
        .sgcat()
        .args(["-r", "--device", "out.monitor", "--duration", "0.2"])
        .arg(d2.path("x.wav"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("no answer"), "{err}");
    // The agent's notice travels on its own connection: wait for it.
    let resolved = wait_for(Duration::from_secs(5), || {
        agent2.client.take_events().unwrap().into_iter().any(
            |e| matches!(e, Event::PromptResolved { ref outcome, .. } if outcome.contains("timed out")),
        )
    });
    assert!(resolved, "agents were not told the prompt timed out");
}

#[test]
fn without_an_agent_consent_is_refused_at_once() {
    let d = Daemon::start(CONFIG);
    let start = std::time::Instant::now();
    let e = record(&d.client("lonely")).unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Denied), "{e}");
    assert!(e.to_string().contains("no prompt agent"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "it waited for a prompt nobody can answer"
    );
}

#[test]
fn control_plane_requests_are_refused_on_the_native_socket() {
    let d = Daemon::start(CONFIG);
    let c = d.client("not-an-agent");
    for req in [
        Request::SubscribePrompts,
        Request::ListPrompts,
        Request::ListGrants,
        Request::AnswerPrompt {
            prompt: 1,
            answer: PromptAnswer::AllowAlways,
        },
        Request::RevokeGrant { grant: 1 },
    ] {
        let e = c.request(req.clone(), &[]).unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::Denied), "{req:?}: {e}");
    }
}

#[test]
fn recording_a_microphone_asks_by_default() {
    let d = Daemon::start("[[sink]]\nname = \"out\"\nbackend = \"null\"\n\n[[source]]\nname = \"mic\"\nbackend = \"null\"\n");
    let victim = common::Victim::start(&d);
    let mic = |c: &Client| {
        let mut opts = RecordOptions::new("rec", SPEC);
        opts.device = Some("mic".into());
        c.record(opts)
    };
    // The microphone is listed (the client may ask for it) …
    let c = d.client("app");
    assert!(c.sources().unwrap().iter().any(|s| s.name == "mic"));
    // … but with nobody to ask, recording it is refused at once.
    let e = mic(&c).unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Denied), "{e}");
    assert!(
        e.to_string()
            .contains("recording from mic needs the user's consent"),
        "{e}"
    );
    // With an agent, the request becomes a prompt; "deny once" refuses it.
    let agent = Agent::new(&d);
    let client = d.client("app2");
    let pending = std::thread::spawn(move || mic(&client).map(drop));
    let prompt = agent.next_prompt();
    assert_eq!(
        (prompt.action.as_str(), prompt.target.as_str()),
        ("record", "mic")
    );
    agent.answer(prompt.id, PromptAnswer::DenyOnce);
    let e = pending.join().unwrap().unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Denied), "{e}");
    victim.check();
}
