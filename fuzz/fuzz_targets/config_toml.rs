//! The config file: TOML text → validated `Config`.
//! Holds: never a panic; every error names the file and a line that exists in the text
//! (1 ..= lines + 1, the last for "at end of input"); an accepted config has a sink.
#![no_main]
use libfuzzer_sys::fuzz_target;
use soundgated::config::Config;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, Path::new("fuzz.toml")) {
        Ok(cfg) => assert!(!cfg.sinks.is_empty(), "a valid config always has a sink"),
        Err(e) => {
            let line = e.line().expect("a parse error is about a line");
            let lines = text.split('\n').count();
            assert!(
                (1..=lines + 1).contains(&line),
                "error line {line} outside the {lines}-line text: {e}"
            );
            let shown = e.to_string();
            assert!(shown.starts_with(&format!("fuzz.toml:{line}: ")), "{shown}");
        }
    }
});
