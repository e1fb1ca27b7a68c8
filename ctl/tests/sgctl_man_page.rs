//! The committed `man/sgctl.1` must be what the clap definition and the hand-written sections
//! render to. `SOUNDGATE_BLESS=1 cargo test -p soundgate-ctl --test sgctl_man_page` rewrites it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;

/// The hand-written sections that follow the generated ones.
const EXTRA: &str = include_str!("../man/sgctl.extra.roff");
/// The committed page.
const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../man/sgctl.1");

/// clap_mangen's sections (NAME, SYNOPSIS, DESCRIPTION, OPTIONS, SUBCOMMANDS, VERSION)
/// followed by hand-written roff.
fn render(cmd: clap::Command, extra: &str) -> String {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out).unwrap();
    let mut page = String::from_utf8(out).unwrap();
    if !page.ends_with('\n') {
        page.push('\n');
    }
    page.push_str(extra);
    page
}

#[test]
fn sgctl_man_page_is_current() {
    let page = render(soundgate_ctl::sgctl::command(), EXTRA);
    if std::env::var_os("SOUNDGATE_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(PAGE, &page).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(Path::new(PAGE)).unwrap_or_default();
    assert!(
        committed == page,
        "man/sgctl.1 is stale: run `SOUNDGATE_BLESS=1 cargo test -p soundgate-ctl --test sgctl_man_page` and commit it"
    );
}

#[test]
fn every_subcommand_is_in_the_page() {
    let page = render(soundgate_ctl::sgctl::command(), EXTRA);
    for sub in soundgate_ctl::sgctl::command().get_subcommands() {
        let name = sub.get_name();
        assert!(
            page.contains(&format!("sgctl\\-{name}")) || page.contains(&format!("\\fB{name}\\fR")),
            "subcommand {name} is missing from the man page"
        );
    }
}
