//! Every man page renders without a warning (groff -ww, with tbl and UTF-8 input as man(1)
//! runs it, and mandoc -Tlint at warning level), and every test that soundgate-security(7)
//! cites as evidence exists.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn pages() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("man"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x.len() == 1 && x.to_string_lossy().as_bytes()[0].is_ascii_digit())
        })
        .collect();
    v.sort();
    assert!(v.len() >= 6, "{v:?}");
    v
}

fn have(tool: &str) -> bool {
    let ok = Command::new(tool).arg("--version").output().is_ok()
        || Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: {tool} is not installed (.ci/run installs groff and mandoc)");
    }
    ok
}

#[test]
fn every_page_renders_without_groff_warnings() {
    if !have("groff") {
        return;
    }
    for page in pages() {
        let out = Command::new("groff")
            .args(["-k", "-t", "-man", "-ww", "-z", "-Tutf8"])
            .arg(&page)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && err.trim().is_empty(),
            "{}: {err}",
            page.display()
        );
    }
}

#[test]
fn every_page_passes_mandoc_lint() {
    if !have("mandoc") {
        return;
    }
    for page in pages() {
        // -W warning: mandoc's STYLE notes (line length, trailing blanks in clap_mangen's
        // output) are left out; warnings and errors fail.
        let out = Command::new("mandoc")
            .args(["-Tlint", "-W", "warning"])
            .arg(&page)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.trim().is_empty(),
            "{}: {text}",
            page.display()
        );
    }
}

#[test]
fn the_linters_catch_a_bad_page() {
    if !have("groff") || !have("mandoc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.7");
    std::fs::write(
        &bad,
        ".TH BAD 7 2026-12-02\n.SH NAME\nbad\n.XY unknown macro\n",
    )
    .unwrap();
    let groff = Command::new("groff")
        .args(["-k", "-t", "-man", "-ww", "-z", "-Tutf8"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!groff.stderr.is_empty(), "groff saw nothing wrong");
    let mandoc = Command::new("mandoc")
        .args(["-Tlint", "-W", "warning"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!mandoc.status.success(), "mandoc saw nothing wrong");
}

/// `file::name` citations in soundgate-security(7), with roff escapes undone.
fn citations() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("man/soundgate-security.7")).unwrap();
    let text = text.replace("\\-", "-");
    let mut out = Vec::new();
    for word in text.split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',') {
        if let Some((file, name)) = word.split_once("::") {
            if file.ends_with(".rs") {
                out.push((file.to_string(), name.trim_end_matches('.').to_string()));
            }
        }
    }
    out
}

#[test]
fn every_test_the_security_page_cites_exists() {
    let cited = citations();
    assert!(cited.len() > 30, "only {} citations", cited.len());
    for (file, name) in cited {
        let path = root().join(&file);
        let source = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("soundgate-security(7) cites {file}: {e}"));
        // The function must be a test: `#[test]` right above `fn name(`.
        let lines: Vec<&str> = source.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.trim_start().starts_with(&format!("fn {name}(")))
            .unwrap_or_else(|| panic!("soundgate-security(7) cites {file}::{name}: no such fn"));
        assert!(
            at > 0 && lines[at - 1].trim() == "#[test]",
            "{file}::{name} is not a #[test]"
        );
    }
}
