//! ballastd: the dom0 daemon that balances memory between ballooning
//! guests and keeps room on the host.
//!
//!   ballastd run [--reserve-mib N] [--interval-ms N]
//!       every interval: read the host's free memory and each domain's size
//!       from Xen, each domain's range and statistics from xenstore, decide
//!       (`policy`), write the targets that changed; one log line per change
//!   ballastd reserve MIB [--timeout-s N]
//!       make MIB MiB free for a new domain (the running daemon holds that
//!       much back until a new domain appears or 120 s pass; without a
//!       daemon this command balances by itself); exit 0 once it is free,
//!       1 with how much could be freed otherwise
//!   ballastd status
//!       the daemon's last figures
//!
//! The daemon's own nodes live under `/tool/ballastd/`.

mod daemon;
mod policy;
mod xenctl;
mod xs;

use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: ballastd run [--reserve-mib N] [--interval-ms N] | reserve MIB [--timeout-s N] | status");
    ExitCode::from(2)
}

/// The value of `--name N` in `args`, or `default`; None if malformed.
fn option(args: &[String], name: &str, default: u64) -> Option<u64> {
    match args.iter().position(|a| a == name) {
        None => Some(default),
        Some(i) => args.get(i + 1)?.parse().ok(),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => {
            let (Some(reserve), Some(interval)) =
                (option(&args, "--reserve-mib", 32), option(&args, "--interval-ms", 500))
            else {
                return usage();
            };
            match daemon::mib_to_kb(reserve) {
                Ok(kb) => daemon::run(kb, interval.max(50)),
                Err(e) => Err(e),
            }
        }
        Some("reserve") => {
            let (Some(mib), Some(timeout)) =
                (args.get(1).and_then(|m| m.parse::<u64>().ok()), option(&args, "--timeout-s", 60))
            else {
                return usage();
            };
            daemon::reserve(mib, timeout)
        }
        Some("status") => daemon::status(),
        _ => return usage(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ballastd: {e}");
            ExitCode::from(1)
        }
    }
}
