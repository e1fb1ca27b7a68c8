//! `sgcat`: play to or record from a soundgate server. See `sgcat(1)`.

#![forbid(unsafe_code)]

use clap::Parser;
use soundgate_ctl::{exit, sgcat};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = sgcat::Args::parse();
    sgcat::init_logging(&args);
    match sgcat::run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sgcat: {}", exit::error_line(&err));
            ExitCode::from(exit::exit_code(&err))
        }
    }
}
