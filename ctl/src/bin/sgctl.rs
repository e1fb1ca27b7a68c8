//! `sgctl`: control a soundgate server on its admin socket. See `sgctl(1)`.

#![forbid(unsafe_code)]

use clap::Parser;
use soundgate_ctl::{exit, sgctl};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match sgctl::Args::try_parse() {
        Ok(a) => a,
        Err(e) if !e.use_stderr() => {
            // --help, --version: print as clap does, succeed.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("sgctl: {}", sgctl::usage_line(&e));
            return ExitCode::from(exit::USAGE);
        }
    };
    match sgctl::run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sgctl: {}", exit::error_line(&err));
            let code = if sgctl::is_usage(&err) {
                exit::USAGE
            } else {
                exit::exit_code(&err)
            };
            ExitCode::from(code)
        }
    }
}
