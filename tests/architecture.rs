//! The architecture invariants of ARCHITECTURE.md, checked.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// Lines of code (comments stripped) in `dir` that mention any of `words`.
fn mentions(dir: &str, words: &[&str]) -> Vec<String> {
    let mut hits = Vec::new();
    for f in rust_files(&root().join(dir)) {
        for (i, line) in std::fs::read_to_string(&f).unwrap().lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if words.iter().any(|w| code.contains(w)) {
                hits.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    hits
}

#[test]
fn nothing_depends_on_the_daemon() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-i",
            "soundgated",
            "--workspace",
            "-e",
            "normal,build,dev",
            "--prefix",
            "none",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let dependents: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .skip(1)
        .collect();
    assert!(
        dependents.is_empty(),
        "crates depend on soundgated: {dependents:?}"
    );
}

#[test]
fn only_proto_knows_the_wire_encoding() {
    let hits: Vec<String> = ["daemon", "ctl", "tui"]
        .iter()
        .flat_map(|d| mentions(d, &["postcard"]))
        .collect();
    assert!(
        hits.is_empty(),
        "the encoding leaked out of proto: {hits:#?}"
    );
    for manifest in ["daemon/Cargo.toml", "ctl/Cargo.toml", "tui/Cargo.toml"] {
        let text = std::fs::read_to_string(root().join(manifest)).unwrap();
        assert!(!text.contains("postcard"), "{manifest} depends on postcard");
    }
}

#[test]
fn the_engine_knows_nothing_of_tokio_sockets_or_policy() {
    let hits = mentions(
        "daemon/src/engine",
        &[
            "tokio",
            "crate::policy",
            "crate::core",
            "crate::transport",
            "crate::identity",
            "sock::",
            "wire::Request",
        ],
    );
    assert!(hits.is_empty(), "{hits:#?}");
}

#[test]
fn policy_never_touches_shared_memory_or_io() {
    let hits = mentions(
        "daemon/src/policy",
        &[
            "shm::",
            "ring::",
            "Mapping",
            "std::fs",
            "tokio",
            "crate::engine",
        ],
    );
    assert!(hits.is_empty(), "{hits:#?}");
}

#[test]
fn the_transport_makes_no_access_decision() {
    let hits = mentions("daemon/src/transport", &["policy", "Policy"]);
    assert!(hits.is_empty(), "{hits:#?}");
}

#[test]
fn tools_forbid_unsafe_code() {
    for f in [
        "ctl/src/lib.rs",
        "ctl/src/bin/sgcat.rs",
        "ctl/src/bin/sgctl.rs",
        "tui/src/lib.rs",
        "tui/src/main.rs",
    ] {
        let text = std::fs::read_to_string(root().join(f)).unwrap();
        assert!(
            text.contains("#![forbid(unsafe_code)]"),
            "{f} does not forbid unsafe code"
        );
    }
}

#[test]
fn every_unsafe_block_is_explained() {
    // clippy's undocumented_unsafe_blocks enforces this too; this keeps unsafe in the modules
    // ARCHITECTURE.md lists.
    let allowed = [
        "proto/src/shm.rs",
        "proto/src/ring.rs",
        "proto/src/futex.rs",
        "proto/src/simd.rs",
        "proto/src/sock.rs",
        "daemon/src/identity.rs",
        "daemon/src/memory.rs",
        "daemon/src/engine/rt.rs",
    ];
    for dir in ["proto/src", "daemon/src", "ctl/src", "tui/src"] {
        for f in rust_files(&root().join(dir)) {
            let rel = f
                .strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .to_string();
            let text = std::fs::read_to_string(&f).unwrap();
            let has_unsafe = text.lines().any(|l| {
                let code = l.split("//").next().unwrap_or("");
                code.contains("unsafe {")
                    || code.contains("unsafe impl")
                    || code.contains("unsafe fn")
            });
            if has_unsafe {
                assert!(
                    allowed.iter().any(|a| rel.ends_with(a)),
                    "unsafe code outside the fenced modules: {rel}"
                );
            }
        }
    }
}

#[test]
fn ci_runs_exactly_the_readme_test_command() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    let last = ci
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .unwrap();
    assert!(
        last.starts_with("cargo "),
        "the last command of .ci/run is not the test command: {last}"
    );
    assert!(
        readme.lines().any(|l| l.trim() == last.trim()),
        "README does not give `{last}` as the test command"
    );
}

/// The code of `text` with `//` comments removed (line by line), for the checks below.
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether the byte at `i` of `code` may continue an identifier.
fn ident_byte(code: &[u8], i: usize) -> bool {
    code.get(i)
        .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// Whether the `Decision::…` at `at` (its variant ends at `end`) is a pattern or a comparison —
/// reading a decision — rather than an expression that makes one.
fn reads_a_decision(code: &str, at: usize, end: usize) -> bool {
    let bytes = code.as_bytes();
    // Compared: `x == Decision::Allow`, `x != Decision::Ask`.
    let before = code[..at].trim_end();
    if before.ends_with("==") || before.ends_with("!=") {
        return true;
    }
    // Inside `matches!(…)`: the paren it opened is still open here.
    if let Some(m) = code[..at].rfind("matches!(") {
        let mut depth = 0i32;
        for b in code[m + "matches!".len()..at].bytes() {
            match b {
                b'(' => depth += 1,
                b')' => depth -= 1,
                _ => {}
            }
        }
        if depth > 0 {
            return true;
        }
    }
    // A match arm: `Decision::Deny(reason) =>`, `Decision::Allow |`, `Decision::Ask if …`.
    let mut i = end;
    if bytes.get(i) == Some(&b'(') {
        let mut depth = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        i += 1;
                        break;
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
    let after = code[i.min(code.len())..].trim_start();
    after.starts_with("=>") || after.starts_with('|') || after.starts_with("if ")
}

/// The access decisions made in `text` (the file `rel`, a path under `daemon/src/`) outside
/// the policy: each as `rel:LINE: what`. Empty for the policy itself.
fn access_decisions(rel: &str, text: &str) -> Vec<String> {
    if rel.starts_with("daemon/src/policy/") {
        return Vec::new();
    }
    let code = code_of(text);
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut found = Vec::new();
    // 1. Testing the administrator flag: `subject.admin`, `c.admin`, … (`config.admin` and
    //    `raw.admin` are the `[admin]` section, `cx.admin(…)` its parser, not a subject).
    for (at, _) in code.match_indices(".admin") {
        let end = at + ".admin".len();
        if ident_byte(code.as_bytes(), end) || code.as_bytes().get(end) == Some(&b'(') {
            continue; // `.admin_access(`, `.admin_socket()`, `cx.admin(…)`
        }
        let owner_start = code[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        if matches!(&code[owner_start..at], "config" | "raw") {
            continue;
        }
        found.push(format!("{rel}:{}: tests the admin flag", line_of(at)));
    }
    // 2. Making a decision: constructing `Decision::Allow`, `Deny(…)` or `Ask`.
    for variant in ["Allow", "Deny", "Ask"] {
        let needle = format!("Decision::{variant}");
        for (at, _) in code.match_indices(&needle) {
            let end = at + needle.len();
            if ident_byte(code.as_bytes(), end) || (at > 0 && ident_byte(code.as_bytes(), at - 1)) {
                continue; // `RuleDecision::Allow`, `Decision::Allowed`, …
            }
            if !reads_a_decision(&code, at, end) {
                found.push(format!("{rel}:{}: constructs {needle}", line_of(at)));
            }
        }
    }
    if code.contains("Decision::*") {
        found.push(format!("{rel}: imports Decision's variants"));
    }
    // 3. Root by uid: `uid == 0`, `0 != peer.uid`, `Uid::from_raw(u).is_root()` (the daemon's own
    //    `geteuid().is_root()` picks default paths, it decides no access).
    let squeezed: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    for pat in ["uid==0", "uid!=0", "uid()==0", "uid()!=0"] {
        if squeezed.contains(pat) {
            found.push(format!("{rel}: compares a uid with 0 ({pat})"));
        }
    }
    for (at, _) in squeezed
        .match_indices("0==")
        .chain(squeezed.match_indices("0!="))
    {
        let rest = &squeezed[at + 3..];
        let operand: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '*' | '&'))
            .collect();
        if operand.ends_with("uid") && !ident_byte(squeezed.as_bytes(), at.wrapping_sub(1)) {
            found.push(format!("{rel}: compares a uid with 0 (0=={operand})"));
        }
    }
    for (at, _) in squeezed.match_indices(".is_root()") {
        if !squeezed[..at].ends_with("geteuid()") {
            found.push(format!("{rel}: tests for root with is_root()"));
        }
    }
    // 4. Asking the policy directly: only `core/consent.rs` does (`Core::decide`,
    //    `Core::permitted`), so every check is the same path, with grants and the audit.
    if rel != "daemon/src/core/consent.rs" {
        for pat in [
            "policy.check(",
            "policy.check_explained(",
            "policy.decide(",
            "Policy::check(",
            "Policy::decide(",
        ] {
            if squeezed.contains(pat) {
                found.push(format!("{rel}: calls {pat}…) outside core/consent.rs"));
            }
        }
    }
    found
}

#[test]
fn no_file_outside_the_policy_makes_an_access_decision() {
    let mut found = Vec::new();
    let mut consent_asks = false;
    for f in rust_files(&root().join("daemon/src")) {
        let rel = f
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .to_string();
        let text = std::fs::read_to_string(&f).unwrap();
        if rel == "daemon/src/core/consent.rs" {
            let squeezed: String = code_of(&text)
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            // The policy in force sits in the core's reloadable `Live` (`let live = self.live()`).
            consent_asks = squeezed.contains("live.policy.decide(");
        }
        found.extend(access_decisions(&rel, &text));
    }
    assert!(
        found.is_empty(),
        "access decisions outside policy/: {found:#?}"
    );
    assert!(
        consent_asks,
        "core/consent.rs no longer calls policy.decide: where is the one decision path?"
    );
}

#[test]
fn the_access_decision_checker_finds_planted_violations() {
    let core = "daemon/src/core/streams.rs";
    let planted = [
        "fn f(c: &C) -> bool { if c.subject.admin { return true; } false }",
        "fn f(s: &Subject) -> bool { s.admin }",
        "fn f() -> Decision { Decision::Allow }",
        "fn f() -> Decision { let d = Decision::Deny(format!(\"no\")); d }",
        "fn f() -> Result<Decision, ()> { Ok(Decision::Ask) }",
        "use crate::policy::Decision::*;",
        "fn f(i: &Identity) -> bool { i.uid == 0 }",
        "fn f(i: &Identity) -> bool { 0 != i.uid }",
        "fn f(u: u32) -> bool { nix::unistd::Uid::from_raw(u).is_root() }",
        "fn f(&self) -> bool { self.policy\n    .check(&s, Action::Play, &o) == Decision::Allow }",
    ];
    for p in planted {
        assert!(
            !access_decisions(core, p).is_empty(),
            "the checker missed a planted violation: {p}"
        );
    }
    let clean = [
        "fn f(d: Decision) -> u8 { match d { Decision::Allow => 1, Decision::Deny(reason) => 2, \
         Decision::Ask if x => 3, Decision::Ask => 4 } }",
        "fn f(&self) -> bool { self.permitted(&s, Action::Play, &o) == Decision::Allow }",
        "fn f(&self) -> bool {\n    !matches!(\n        self.permitted(&s, Action::Play, \
         &Object::Sink { name: &s.name }),\n        Decision::Deny(_)\n    )\n}",
        "fn f(&self) { let a = admin_access(&config.admin); x.admin_socket(); }",
        "fn f() -> bool { nix::unistd::geteuid().is_root() }",
        "// if subject.admin { Decision::Allow }",
        "fn f() -> RuleDecision { RuleDecision::Allow }",
    ];
    for c in clean {
        assert_eq!(access_decisions(core, c), Vec::<String>::new(), "{c}");
    }
    // The policy itself and the one decision path are exempt from their own rules.
    let decide = "fn f(&self) { self.policy.decide(&s, a, &o, |_| None); }";
    assert!(access_decisions("daemon/src/core/consent.rs", decide).is_empty());
    assert!(!access_decisions("daemon/src/core/mod.rs", decide).is_empty());
    assert!(access_decisions("daemon/src/policy/mod.rs", "Decision::Allow").is_empty());
}
