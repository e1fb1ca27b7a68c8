//! The committed `man/sgtop.1` must be what the clap definition and the hand-written sections
//! render to. `SOUNDGATE_BLESS=1 cargo test -p sgtop --test man_page` rewrites it.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;

/// The hand-written sections that follow the generated ones.
const EXTRA: &str = include_str!("../man/sgtop.extra.roff");
/// The committed page.
const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../man/sgtop.1");
/// The date in `.TH` (mandoc -Tlint warns about a page without one).
const PAGE_DATE: &str = "2026-12-02";

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

#[test]
fn man_page_is_current() {
    let page = render(sgtop::cli::command(), EXTRA);
    assert!(page.contains("\\-\\-admin") && page.contains("SOUNDGATE_ADMIN"));
    if std::env::var_os("SOUNDGATE_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(PAGE, &page).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(Path::new(PAGE)).unwrap_or_default();
    assert!(
        committed == page,
        "man/sgtop.1 is stale: run `SOUNDGATE_BLESS=1 cargo test -p sgtop --test man_page` and commit it"
    );
}
