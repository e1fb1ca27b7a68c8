//! sgtop in a real terminal (tmux) against a real daemon: a recording that needs consent pops
//! up with the right app and user, "allow once" lets it record, "deny" refuses the next one
//! with exit code 3, and a playing stream's meter shows a level.
//!
//! Skipped, with a note, when `tmux` is not installed (`.ci/run` installs it).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{wait_for, Daemon};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const CONFIG: &str = r#"
[prompts]
timeout_secs = 60

[[sink]]
name = "out"
backend = "null"

[[rule]]
action = "record"
target = "out.monitor"
decision = "ask"
"#;

/// A private tmux server running one session.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn available() -> bool {
        Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn tmux(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "-f", "/dev/null"]);
        c
    }

    fn start(command: &str) -> Tmux {
        let t = Tmux {
            socket: format!("sgtop-test-{}", std::process::id()),
        };
        let st = t
            .tmux()
            .args([
                "new-session",
                "-d",
                "-x",
                "160",
                "-y",
                "45",
                "-s",
                "sgtop",
                command,
            ])
            .status()
            .unwrap();
        assert!(st.success(), "tmux new-session failed");
        t
    }

    fn capture(&self) -> String {
        let out = self
            .tmux()
            .args(["capture-pane", "-p", "-t", "sgtop"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        let st = self
            .tmux()
            .args(["send-keys", "-t", "sgtop", keys])
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn alive(&self) -> bool {
        self.tmux()
            .args(["has-session", "-t", "sgtop"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Waits until the screen satisfies `cond`; returns the screen.
    fn wait_screen(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let ok = wait_for(Duration::from_secs(20), || {
            last = self.capture();
            cond(&last)
        });
        assert!(ok, "sgtop never showed {what}; the screen:\n{last}");
        last
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").status();
    }
}

/// Waits for `child` to exit (at most 20 s) and collects its output.
fn finish(mut child: Child) -> Output {
    let exited = wait_for(Duration::from_secs(20), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(exited, "sgcat did not finish: {out:?}");
    out
}

fn record(d: &Daemon, file: &Path) -> Child {
    d.sgcat()
        .args([
            "-r",
            "--device",
            "out.monitor",
            "--duration",
            "0.2",
            "--name",
            "Totally Legit Recorder",
        ])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The dBFS figure at the end of the Streams row of stream `name`, if it is a level.
fn stream_level(screen: &str, name: &str) -> Option<f32> {
    let row = screen.lines().find(|l| l.contains(name))?;
    let last = row
        .trim_end()
        .trim_end_matches('│')
        .split_whitespace()
        .last()?;
    last.parse::<f32>().ok().filter(|db| db.is_finite())
}

#[test]
fn prompt_allow_deny_and_meters_in_a_real_terminal() {
    if !Tmux::available() {
        eprintln!("note: tmux is not installed; skipping the sgtop terminal test");
        return;
    }
    let d = Daemon::start(CONFIG);
    let log = d.path("sgtop.log");
    let cmd = format!(
        "{} --admin {} --log {}",
        common::bin("sgtop").display(),
        d.admin_socket().display(),
        log.display()
    );
    let tmux = Tmux::start(&cmd);
    tmux.wait_screen("the connection", |s| s.contains("● connected"));

    // 1. A recording that needs consent: the popup names the app and the user; allow once.
    let app_id = common::exe_id(&common::bin("sgcat"));
    let sgcat = record(&d, &d.path("once.wav"));
    let screen = tmux.wait_screen("the prompt", |s| s.contains("Permission request"));
    assert!(
        screen.contains(&format!("App         {app_id}")),
        "{screen}"
    );
    assert!(
        screen.contains("exe — from the executable path"),
        "{screen}"
    );
    assert!(screen.contains("User        root (uid 0)"), "{screen}");
    assert!(
        screen.contains("“Totally Legit Recorder” (unverified label)"),
        "{screen}"
    );
    assert!(screen.contains("Device      out.monitor"), "{screen}");
    assert!(screen.contains("[o] Allow once"), "{screen}");
    tmux.keys("o");
    let out = finish(sgcat);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "allowed once, sgcat failed: {err}");
    assert_eq!(common::read_wav(&d.path("once.wav")).1.len(), 2 * 9_600);
    tmux.wait_screen("the popup closing", |s| !s.contains("Permission request"));

    // 2. "Once" was once: the next recording asks again; deny it.
    let sgcat = record(&d, &d.path("denied.wav"));
    tmux.wait_screen("the second prompt", |s| s.contains("Permission request"));
    tmux.keys("d");
    let out = finish(sgcat);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("permission denied"), "{err}");
    tmux.wait_screen("the popup closing", |s| !s.contains("Permission request"));

    // 3. A playing stream's meter shows a level, in two captures.
    let tone = d.path("tone.wav");
    common::write_wav(
        &tone,
        48_000,
        2,
        &common::sine(440.0, 48_000, 48_000 * 60, 0.5, 2),
        false,
    );
    let mut player = d
        .sgcat()
        .args(["-p", "--name", "tmux-tone"])
        .arg(&tone)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tmux.keys("1");
    let first = tmux.wait_screen("a level on the playing stream", |s| {
        stream_level(s, "tmux-tone").is_some()
    });
    let row = first.lines().find(|l| l.contains("tmux-tone")).unwrap();
    assert!(row.contains('█'), "no meter bar: {row}");
    assert!(row.contains("play"), "{row}");
    let second = tmux.wait_screen("a level on a later capture", |s| {
        s != first && stream_level(s, "tmux-tone").is_some()
    });
    // A 0.5 sine peaks near -6 dBFS.
    let db = stream_level(&second, "tmux-tone").unwrap();
    assert!((-9.0..=-3.0).contains(&db), "level {db} dBFS:\n{second}");
    let _ = player.kill();
    let _ = player.wait();

    // q quits and gives the terminal back.
    tmux.keys("q");
    assert!(
        wait_for(Duration::from_secs(10), || !tmux.alive()),
        "sgtop did not quit:\n{}",
        tmux.capture()
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("connected"), "{logged}");
    assert!(!logged.contains("panic"), "{logged}");
}
