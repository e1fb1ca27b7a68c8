//! The real `soundgated --check-config` on every fixture in `tests/configs/`.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::process::Command;

fn fixtures(kind: &str) -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/configs")
        .join(kind);
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    assert!(!v.is_empty());
    v
}

fn check(path: &Path) -> std::process::Output {
    Command::new(common::bin("soundgated"))
        .arg("--check-config")
        .arg("--config")
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn valid_configs_pass_the_real_binary() {
    for f in fixtures("valid") {
        let out = check(&f);
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn invalid_configs_fail_with_file_line_and_reason() {
    for f in fixtures("invalid") {
        let text = std::fs::read_to_string(&f).unwrap();
        // First line: `# expect: LINE: FRAGMENT`.
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap();
        let (line, fragment) = expect.split_once(": ").unwrap();
        let out = check(&f);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", f.display());
        let prefix = format!("soundgated: {}:{line}: ", f.display());
        let last = err.lines().last().unwrap_or("");
        assert!(
            last.starts_with(&prefix),
            "{}: expected {prefix:?}…, got {last:?}",
            f.display()
        );
        assert!(
            last.contains(fragment),
            "{}: expected {fragment:?} in {last:?}",
            f.display()
        );
    }
}
