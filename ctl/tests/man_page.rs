//! The committed `man/sgcat.1` and `man/sgctl.1` must be what the clap definitions and the
//! hand-written sections render to. `SOUNDGATE_BLESS=1 cargo test -p soundgate-ctl --test
//! man_page` rewrites them.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
/// The date in `.TH` (mandoc -Tlint warns about a page without one).
const PAGE_DATE: &str = "2026-12-02";

/// clap_mangen's sections for `cmd` (NAME, SYNOPSIS, DESCRIPTION, OPTIONS, SUBCOMMANDS,
/// VERSION) followed by hand-written roff.
fn render(cmd: clap::Command, extra: &str) -> String {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .date(PAGE_DATE)
        .render(&mut out)
        .unwrap();
    let mut page = String::from_utf8(out).unwrap();
    if !page.ends_with('\n') {
        page.push('\n');
    }
    page.push_str(extra);
    page
}

/// Compares (or, with `SOUNDGATE_BLESS=1`, rewrites) `man/<page>`.
fn check(page_name: &str, rendered: &str) {
    let path = format!("{}/../man/{page_name}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("SOUNDGATE_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, rendered).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == rendered,
        "man/{page_name} is stale: run `SOUNDGATE_BLESS=1 cargo test -p soundgate-ctl --test man_page` and commit it"
    );
}

#[test]
fn sgcat_man_page_is_current() {
    check(
        "sgcat.1",
        &render(
            soundgate_ctl::sgcat::command(),
            include_str!("../man/sgcat.extra.roff"),
        ),
    );
}

#[test]
fn sgctl_man_page_is_current() {
    check(
        "sgctl.1",
        &render(
            soundgate_ctl::sgctl::command(),
            include_str!("../man/sgctl.extra.roff"),
        ),
    );
}

#[test]
fn every_sgctl_subcommand_is_in_its_page() {
    let page = render(
        soundgate_ctl::sgctl::command(),
        include_str!("../man/sgctl.extra.roff"),
    );
    for sub in soundgate_ctl::sgctl::command().get_subcommands() {
        let name = sub.get_name();
        assert!(
            page.contains(&format!("sgctl\\-{name}")) || page.contains(&format!("\\fB{name}\\fR")),
            "subcommand {name} is missing from the man page"
        );
    }
}
