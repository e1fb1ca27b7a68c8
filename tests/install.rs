//! `make install` honours DESTDIR and PREFIX and lays out exactly the expected tree;
//! `make uninstall` removes it again.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::bin;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under `dir`, relative, with its mode.
fn tree(dir: &Path) -> BTreeMap<String, u32> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, u32>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().to_string();
                let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
                out.insert(rel, mode);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn make(target: &str, destdir: &Path, builddir: &Path) -> std::process::Output {
    Command::new("make")
        .arg("--no-print-directory")
        .arg(target)
        .arg(format!("DESTDIR={}", destdir.display()))
        .arg("PREFIX=/usr")
        .arg(format!("BUILDDIR={}", builddir.display()))
        .current_dir(root())
        .output()
        .unwrap()
}

#[test]
fn make_install_lays_out_the_tree_and_uninstall_removes_it() {
    let builddir: PathBuf = bin("soundgated").parent().unwrap().to_path_buf();
    for b in ["sgcat", "sgctl", "sgtop"] {
        bin(b);
    }
    let dest = tempfile::tempdir().unwrap();
    let out = make("install", dest.path(), &builddir);
    assert!(
        out.status.success(),
        "make install: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let expected: BTreeMap<String, u32> = [
        ("usr/bin/soundgated", 0o755),
        ("usr/bin/sgcat", 0o755),
        ("usr/bin/sgctl", 0o755),
        ("usr/bin/sgtop", 0o755),
        ("usr/share/man/man1/sgcat.1", 0o644),
        ("usr/share/man/man1/sgctl.1", 0o644),
        ("usr/share/man/man1/sgtop.1", 0o644),
        ("usr/share/man/man5/soundgate.toml.5", 0o644),
        ("usr/share/man/man7/soundgate-security.7", 0o644),
        ("usr/share/man/man8/soundgated.8", 0o644),
        ("usr/lib/systemd/system/soundgated.service", 0o644),
        ("usr/lib/sysusers.d/soundgate.conf", 0o644),
        ("usr/lib/tmpfiles.d/soundgate.conf", 0o644),
        ("usr/share/bash-completion/completions/sgcat", 0o644),
        ("usr/share/bash-completion/completions/sgctl", 0o644),
        ("usr/share/zsh/site-functions/_sgcat", 0o644),
        ("usr/share/zsh/site-functions/_sgctl", 0o644),
        ("usr/share/fish/vendor_completions.d/sgcat.fish", 0o644),
        ("usr/share/fish/vendor_completions.d/sgctl.fish", 0o644),
        ("usr/share/doc/soundgate/soundgate.toml.example", 0o644),
    ]
    .into_iter()
    .map(|(p, m)| (p.to_string(), m))
    .collect();
    let got = tree(dest.path());
    assert_eq!(got, expected, "installed tree");

    let d = |rel: &str| dest.path().join(rel);
    // Binaries and pages are the built ones, byte for byte.
    for b in ["soundgated", "sgcat", "sgctl", "sgtop"] {
        assert_eq!(
            std::fs::read(d(&format!("usr/bin/{b}"))).unwrap(),
            std::fs::read(builddir.join(b)).unwrap(),
            "{b}"
        );
    }
    assert_eq!(
        std::fs::read(d("usr/share/man/man7/soundgate-security.7")).unwrap(),
        std::fs::read(root().join("man/soundgate-security.7")).unwrap()
    );
    // The unit runs the installed daemon (PREFIX, not DESTDIR, goes into it).
    let unit = std::fs::read_to_string(d("usr/lib/systemd/system/soundgated.service")).unwrap();
    assert!(
        unit.lines().any(|l| l == "ExecStart=/usr/bin/soundgated"),
        "{unit}"
    );
    assert!(!unit.contains("@BINDIR@") && !unit.contains(&*dest.path().to_string_lossy()));
    // Completions are real scripts for the right program.
    for (file, needle) in [
        ("usr/share/bash-completion/completions/sgcat", "sgcat"),
        ("usr/share/bash-completion/completions/sgctl", "sgctl"),
        ("usr/share/zsh/site-functions/_sgcat", "#compdef sgcat"),
        ("usr/share/zsh/site-functions/_sgctl", "#compdef sgctl"),
        (
            "usr/share/fish/vendor_completions.d/sgcat.fish",
            "complete -c sgcat",
        ),
        (
            "usr/share/fish/vendor_completions.d/sgctl.fish",
            "complete -c sgctl",
        ),
    ] {
        let text = std::fs::read_to_string(d(file)).unwrap();
        assert!(text.contains(needle), "{file}");
    }
    let bash = std::fs::read_to_string(d("usr/share/bash-completion/completions/sgcat")).unwrap();
    assert!(bash.contains("--playback") && bash.contains("--device"));
    // The example config is valid.
    let out = Command::new(d("usr/bin/soundgated"))
        .arg("--check-config")
        .arg("--config")
        .arg(d("usr/share/doc/soundgate/soundgate.toml.example"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "example config: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = make("uninstall", dest.path(), &builddir);
    assert!(
        out.status.success(),
        "make uninstall: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree(dest.path()), BTreeMap::new(), "files left behind");
}

#[test]
fn make_install_refuses_without_built_binaries() {
    let dest = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let out = make("install", dest.path(), empty.path());
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("run make first"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree(dest.path()), BTreeMap::new());
}
