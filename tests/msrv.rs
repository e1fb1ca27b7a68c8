//! The minimum supported Rust version (`rust-version` in the workspace Cargo.toml) is true.
//!
//! Only one toolchain is installed here, so `cargo +MSRV check` cannot run. Two checks stand in
//! for it: clippy's `incompatible_msrv` lint (on by default once a crate has `rust-version`;
//! `.ci/run` runs clippy with `-D warnings`) catches a std API newer than the MSRV in our code,
//! and the tests below make sure every crate declares the MSRV, nothing allows that lint away,
//! and no locked dependency needs a newer compiler.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// "1.88" or "1.88.0" → (1, 88, 0).
fn version(v: &str) -> (u64, u64, u64) {
    let mut parts = v.split('.').map(|p| p.parse::<u64>().unwrap());
    (
        parts.next().unwrap(),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn workspace_msrv() -> String {
    let toml = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let line = toml
        .lines()
        .find(|l| l.starts_with("rust-version = "))
        .expect("the workspace declares rust-version");
    line.trim_start_matches("rust-version = ")
        .trim_matches('"')
        .to_string()
}

#[test]
fn every_workspace_crate_declares_the_msrv() {
    let msrv = workspace_msrv();
    let m = metadata();
    let members: Vec<&str> = m["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut checked = 0;
    for p in m["packages"].as_array().unwrap() {
        if !members.contains(&p["id"].as_str().unwrap()) {
            continue;
        }
        // Without rust-version clippy does not know the MSRV and the lint stays silent.
        assert_eq!(
            p["rust_version"].as_str(),
            Some(msrv.as_str()),
            "{} must inherit rust-version from the workspace",
            p["name"]
        );
        checked += 1;
    }
    assert_eq!(
        checked, 6,
        "proto, daemon, ctl, tui, bench and the test package"
    );
}

#[test]
fn no_locked_dependency_needs_a_newer_compiler() {
    let msrv = version(&workspace_msrv());
    let m = metadata();
    let too_new: Vec<String> = m["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            let v = p["rust_version"].as_str()?;
            (version(v) > msrv).then(|| format!("{} {} needs {v}", p["name"], p["version"]))
        })
        .collect();
    assert!(
        too_new.is_empty(),
        "raise rust-version or pin older versions: {too_new:?}"
    );
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if p.is_dir() {
            if name != "target" && !name.starts_with('.') {
                files(&p, out);
            }
        } else if name.ends_with(".rs") || name.ends_with(".toml") {
            out.push(p);
        }
    }
}

#[test]
fn the_msrv_lint_is_not_allowed_away() {
    let mut all = Vec::new();
    files(root(), &mut all);
    assert!(all.len() > 20, "found only {} files", all.len());
    // Spelled in two halves so that this file does not match itself.
    let needles = [
        format!("{}_msrv", "incompatible"),
        format!("{}-msrv", "incompatible"),
    ];
    let hits: Vec<String> = all
        .iter()
        .filter(|f| !f.ends_with("tests/msrv.rs"))
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            needles.iter().any(|n| text.contains(n.as_str()))
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(hits.is_empty(), "the MSRV lint is configured in {hits:?}");
    // clippy.toml's `msrv` would override Cargo.toml's rust-version.
    let clippy = std::fs::read_to_string(root().join("clippy.toml")).unwrap_or_default();
    assert!(!clippy.contains("msrv"), "clippy.toml sets its own msrv");
}
