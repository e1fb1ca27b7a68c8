//! The committed `man/sgcat.1` must be what the clap definition and the hand-written sections
//! render to. `SOUNDGATE_BLESS=1 cargo test -p soundgate-ctl --test man_page` rewrites it.

use std::path::Path;

/// The hand-written sections that follow the generated ones.
const EXTRA: &str = include_str!("../man/sgcat.extra.roff");
/// The committed page.
const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../man/sgcat.1");

/// clap_mangen's sections for `cmd` (NAME, SYNOPSIS, DESCRIPTION, OPTIONS, VERSION) followed by
/// hand-written roff. (For a section-8 page: `Man::new(cmd).section("8")`.)
fn render(cmd: clap::Command, extra: &str) -> String {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .expect("rendering to memory cannot fail");
    let mut page = String::from_utf8(out).expect("clap_mangen writes UTF-8");
    if !page.ends_with('\n') {
        page.push('\n');
    }
    page.push_str(extra);
    page
}

#[test]
fn man_page_is_current() {
    let page = render(soundgate_ctl::sgcat::command(), EXTRA);
    if std::env::var_os("SOUNDGATE_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(PAGE, &page).expect("writing man/sgcat.1");
        return;
    }
    let committed = std::fs::read_to_string(Path::new(PAGE)).unwrap_or_default();
    assert!(
        committed == page,
        "man/sgcat.1 is stale: run `SOUNDGATE_BLESS=1 cargo test -p soundgate-ctl --test man_page` and commit it"
    );
}
