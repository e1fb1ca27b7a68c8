//! The committed `man/soundgated.8` must be what the clap definition and the hand-written
//! sections render to. `SOUNDGATE_BLESS=1 cargo test -p soundgated --test man_page` rewrites it.

/// The hand-written sections that follow the generated ones.
const EXTRA: &str = include_str!("../man/soundgated.extra.roff");
/// The committed page.
const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../man/soundgated.8");
/// The date in `.TH` (mandoc -Tlint warns about a page without one).
const PAGE_DATE: &str = "2026-12-02";

/// clap_mangen's sections (NAME, SYNOPSIS, DESCRIPTION, OPTIONS, VERSION), then the hand-written
/// ones. The same ten lines render sgcat(1) in ctl/tests/man_page.rs: the crates share no
/// dev-only code, and `daemon` must not depend on `ctl` or the reverse.
fn render(cmd: clap::Command, extra: &str) -> String {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .section("8")
        .date(PAGE_DATE)
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
    let page = render(soundgated::cli::command(), EXTRA);
    if std::env::var_os("SOUNDGATE_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(PAGE, &page).expect("writing man/soundgated.8");
        return;
    }
    let committed = std::fs::read_to_string(PAGE).unwrap_or_default();
    assert!(
        committed == page,
        "man/soundgated.8 is stale: run `SOUNDGATE_BLESS=1 cargo test -p soundgated --test man_page` and commit it"
    );
}
