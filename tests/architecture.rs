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
