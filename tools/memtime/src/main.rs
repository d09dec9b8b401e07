//! memtime: a dom0 tool that sets a domain's memory target as `xl mem-set DOMID TARGET_MIBm` does
//! (libxl_set_memory_target with enforce=1, Xen 4.17 tools/libs/light/libxl_mem.c) and times, by polling the
//! domain's page count every millisecond, how long the guest takes to balloon there.
//!
//! Usage: memtime DOMID TARGET_MIB [--timeout SECS] [--stall-ms MS]
//! Prints one `memtime: ...` line; exit 0 converged, 3 stalled/timeout/gone, 1 on errors, 2 on bad input.

mod xen;

use std::fmt;
use std::io;
use std::process::ExitCode;
use std::thread::sleep;
use std::time::{Duration, Instant};

use xen::Xen;

const USAGE: &str = "usage: memtime DOMID TARGET_MIB [--timeout SECS (default 90)] [--stall-ms MS (default 4000)]";
const PAGE_KIB: u64 = 4;
/// libxl's LIBXL_MAXMEM_CONSTANT on x86: headroom above the target in the hypervisor's max_pages.
const MAXMEM_CONSTANT_KIB: u64 = 1024;
/// Within this of the target counts as arrived: a balloon driver may stop a few pages off the exact figure.
const SLACK_KIB: u64 = 1024;
const POLL_INTERVAL: Duration = Duration::from_millis(1);

#[derive(Debug)]
pub enum Error {
    /// Bad command line (exit 2).
    Usage(String),
    /// The target is over the domain's static-max (exit 2), as libxl refuses it.
    TargetTooBig {
        target_kib: u64,
        static_max_kib: u64,
    },
    /// The target does not even cover the domain's videoram (exit 2).
    TargetBelowVideoram {
        target_kib: u64,
        videoram_kib: u64,
    },
    /// No candidate soname of a Xen library loaded (the dlerror texts).
    Load(String),
    Symbol {
        lib: String,
        why: String,
    },
    /// A Xen library call failed, with the errno it left.
    Call {
        what: String,
        err: io::Error,
    },
    /// A xenstore path or value that cannot be passed to C (embedded NUL).
    BadPath(String),
    /// A required xenstore node does not exist.
    Missing(String),
    /// A xenstore node that should hold a number does not.
    BadValue {
        path: String,
        value: String,
    },
    NoDomain(u16),
}

impl Error {
    fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::TargetTooBig { .. } | Error::TargetBelowVideoram { .. } => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(why) => write!(f, "{why}; {USAGE}"),
            Error::TargetTooBig { target_kib, static_max_kib } => {
                write!(f, "target {target_kib} KiB is over static-max {static_max_kib} KiB")
            }
            Error::TargetBelowVideoram { target_kib, videoram_kib } => {
                write!(f, "target {target_kib} KiB is below videoram {videoram_kib} KiB")
            }
            Error::Load(why) => write!(f, "cannot load a Xen library: {why}"),
            Error::Symbol { lib, why } => write!(f, "{lib}: {why}"),
            Error::Call { what, err } => write!(f, "{what} failed: {err}"),
            Error::BadPath(path) => write!(f, "cannot pass {path:?} to xenstore"),
            Error::Missing(path) => write!(f, "{path} does not exist in xenstore"),
            Error::BadValue { path, value } => write!(f, "{path} holds {value:?}, not a number"),
            Error::NoDomain(domid) => write!(f, "domain {domid} not found"),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Args {
    domid: u16,
    target_mib: u64,
    timeout: Duration,
    stall: Duration,
}

fn number<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, Error> {
    s.parse().map_err(|_| Error::Usage(format!("{what} {s:?} is not a number")))
}

fn parse_args(args: &[String]) -> Result<Args, Error> {
    let (mut timeout_s, mut stall_ms) = (90u64, 4000u64);
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| Error::Usage(format!("{arg} needs a value")));
        match arg.as_str() {
            "--timeout" => timeout_s = number("--timeout", value()?)?,
            "--stall-ms" => stall_ms = number("--stall-ms", value()?)?,
            s if s.starts_with('-') => return Err(Error::Usage(format!("unknown option {s}"))),
            s => positional.push(s),
        }
    }
    let [domid, target] = positional[..] else {
        return Err(Error::Usage(format!("expected DOMID and TARGET_MIB, got {} arguments", positional.len())));
    };
    Ok(Args {
        domid: number("DOMID", domid)?,
        target_mib: number("TARGET_MIB", target)?,
        timeout: Duration::from_secs(timeout_s),
        stall: Duration::from_millis(stall_ms),
    })
}

/// libxl's new_target_memkb: the target less videoram, which may not exceed static-max.
fn new_target_kib(target_mib: u64, videoram_kib: u64, static_max_kib: u64) -> Result<u64, Error> {
    // Saturating: an absurd TARGET_MIB then fails the static-max check instead of wrapping.
    let total = target_mib.saturating_mul(1024);
    let target_kib =
        total.checked_sub(videoram_kib).ok_or(Error::TargetBelowVideoram { target_kib: total, videoram_kib })?;
    if target_kib > static_max_kib {
        return Err(Error::TargetTooBig { target_kib, static_max_kib });
    }
    Ok(target_kib)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Converged,
    Stalled,
    Timeout,
    Gone,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Converged => "converged",
            State::Stalled => "stalled",
            State::Timeout => "timeout",
            State::Gone => "gone",
        }
    }
}

struct Limits {
    target_kib: u64,
    stall: Duration,
    timeout: Duration,
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    state: State,
    reached_kib: u64,
    /// Converged: the converging poll; otherwise the last change of the page count.
    elapsed: Duration,
    polls: u64,
}

/// Walks page-count samples (time since the target was written, pages or `None` once the domain is gone)
/// to the first decision; `None` if the samples end undecided.
fn decide(
    limits: &Limits,
    from_pages: u64,
    samples: impl IntoIterator<Item = (Duration, Option<u64>)>,
) -> Option<Outcome> {
    let (mut last_pages, mut last_change, mut polls) = (from_pages, Duration::ZERO, 0);
    for (at, pages) in samples {
        polls += 1;
        let outcome =
            |state, pages: u64, elapsed| Some(Outcome { state, reached_kib: pages * PAGE_KIB, elapsed, polls });
        let Some(pages) = pages else {
            return outcome(State::Gone, last_pages, last_change);
        };
        if (pages * PAGE_KIB).abs_diff(limits.target_kib) <= SLACK_KIB {
            return outcome(State::Converged, pages, at);
        }
        if pages != last_pages {
            (last_pages, last_change) = (pages, at);
        } else if at.saturating_sub(last_change) >= limits.stall {
            return outcome(State::Stalled, last_pages, last_change);
        }
        if at >= limits.timeout {
            return outcome(State::Timeout, last_pages, last_change);
        }
    }
    None
}

fn format_line(domid: u16, target_kib: u64, from_kib: u64, o: &Outcome) -> String {
    // Whole microseconds, so that ms and mibps agree with each other (mibps 0.0 exactly when ms is 0.000).
    let us = o.elapsed.as_micros();
    let mibps = if us == 0 { 0.0 } else { from_kib.abs_diff(o.reached_kib) as f64 / 1024.0 / (us as f64 / 1e6) };
    format!(
        "memtime: domid={domid} target_kib={target_kib} from_kib={from_kib} reached_kib={} ms={}.{:03} polls={} \
         state={} mibps={mibps:.1}",
        o.reached_kib,
        us / 1000,
        us % 1000,
        o.polls,
        o.state.name()
    )
}

fn read_kib(xen: &Xen, path: &str) -> Result<Option<u64>, Error> {
    match xen.read(path)? {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| Error::BadValue { path: path.into(), value: v }),
    }
}

fn run(args: &Args) -> Result<(String, State), Error> {
    let xen = Xen::open()?;
    let dom = format!("/local/domain/{}", args.domid);
    let static_max_path = format!("{dom}/memory/static-max");
    let static_max_kib = read_kib(&xen, &static_max_path)?.ok_or(Error::Missing(static_max_path))?;
    let videoram_kib = read_kib(&xen, &format!("{dom}/memory/videoram"))?.unwrap_or(0);
    let vm_path = format!("{dom}/vm");
    let vm = xen.read(&vm_path)?.ok_or(Error::Missing(vm_path))?;
    let target_kib = new_target_kib(args.target_mib, videoram_kib, static_max_kib)?;

    // enforce=1: raise (or lower) the hypervisor's limit first, so the guest may reach the new target.
    xen.set_max_mem(args.domid, target_kib + videoram_kib + MAXMEM_CONSTANT_KIB)?;
    let from_pages = xen.tot_pages(args.domid).ok_or(Error::NoDomain(args.domid))?;

    // The clock starts just before the guest can see the new target.
    let t0 = Instant::now();
    xen.write(&format!("{dom}/memory/target"), &target_kib.to_string())?;
    xen.write(&format!("{}/memory", vm.trim()), &(target_kib / 1024).to_string())?;

    let limits = Limits { target_kib, stall: args.stall, timeout: args.timeout };
    let mut first = true;
    let samples = std::iter::from_fn(|| {
        if !std::mem::take(&mut first) {
            sleep(POLL_INTERVAL);
        }
        let pages = xen.tot_pages(args.domid);
        Some((t0.elapsed(), pages))
    });
    let outcome = decide(&limits, from_pages, samples).expect("the poll stream never ends");
    Ok((format_line(args.domid, target_kib, from_pages * PAGE_KIB, &outcome), outcome.state))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse_args(&args).and_then(|a| run(&a)) {
        Ok((line, state)) => {
            println!("{line}");
            ExitCode::from(if state == State::Converged { 0 } else { 3 })
        }
        Err(e) => {
            eprintln!("memtime: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, Error> {
        parse_args(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_defaults_and_options_anywhere() {
        let a = args("5 128").unwrap();
        assert_eq!(a, Args { domid: 5, target_mib: 128, timeout: Duration::from_secs(90), stall: ms(4000) });
        let b = args("--stall-ms 250 5 --timeout 10 128").unwrap();
        assert_eq!(b, Args { domid: 5, target_mib: 128, timeout: Duration::from_secs(10), stall: ms(250) });
    }

    #[test]
    fn rejects_bad_command_lines_with_exit_2() {
        for bad in ["", "5", "5 128 9", "x 128", "5 128m", "5 -1", "70000 128", "5 128 --timeout", "5 128 --nope 1"] {
            let e = args(bad).unwrap_err();
            assert!(matches!(e, Error::Usage(_)), "{bad:?}: {e}");
            assert_eq!(e.exit_code(), 2);
        }
    }

    #[test]
    fn target_less_videoram_within_static_max() {
        assert_eq!(new_target_kib(128, 0, 262144).unwrap(), 131072);
        assert_eq!(new_target_kib(128, 8192, 262144).unwrap(), 122880);
        assert!(matches!(new_target_kib(257, 0, 262144), Err(Error::TargetTooBig { target_kib: 263168, .. })));
        assert!(matches!(new_target_kib(u64::MAX, 0, 262144), Err(Error::TargetTooBig { .. })));
        assert!(matches!(new_target_kib(4, 8192, 262144), Err(Error::TargetBelowVideoram { .. })));
    }

    const LIMITS: Limits =
        Limits { target_kib: 131072, stall: Duration::from_millis(100), timeout: Duration::from_secs(1) };

    #[test]
    fn converges_within_slack_at_that_poll() {
        // 256 MiB down to 128 MiB (32768 pages); 33024 pages is 1 MiB above that.
        let s = [(ms(1), Some(65536)), (ms(2), Some(50000)), (ms(3), Some(33025)), (ms(4), Some(33024))];
        let o = decide(&LIMITS, 65536, s).unwrap();
        assert_eq!(o, Outcome { state: State::Converged, reached_kib: 132096, elapsed: ms(4), polls: 4 });
    }

    #[test]
    fn stall_reports_the_last_change() {
        let s = (1..=200).map(|t| (ms(t), Some(if t < 30 { 65536 } else { 40000 })));
        let o = decide(&LIMITS, 65536, s).unwrap();
        assert_eq!(o, Outcome { state: State::Stalled, reached_kib: 160000, elapsed: ms(30), polls: 130 });
    }

    #[test]
    fn never_moving_stalls_at_zero() {
        let o = decide(&LIMITS, 65536, (1..).map(|t| (ms(t), Some(65536)))).unwrap();
        assert_eq!((o.state, o.elapsed, o.polls), (State::Stalled, Duration::ZERO, 100));
    }

    #[test]
    fn slow_progress_times_out() {
        // One page every 50 ms never stalls for 100 ms but runs past the 1 s timeout.
        let s = (1..).map(|t| (ms(t * 50), Some(65536 - t)));
        let o = decide(&LIMITS, 65536, s).unwrap();
        assert_eq!(o, Outcome { state: State::Timeout, reached_kib: (65536 - 20) * 4, elapsed: ms(1000), polls: 20 });
    }

    #[test]
    fn vanished_domain_is_gone() {
        let s = [(ms(1), Some(60000)), (ms(2), None), (ms(3), Some(32768))];
        let o = decide(&LIMITS, 65536, s).unwrap();
        assert_eq!(o, Outcome { state: State::Gone, reached_kib: 240000, elapsed: ms(1), polls: 2 });
    }

    #[test]
    fn undecided_samples_give_none() {
        assert_eq!(decide(&LIMITS, 65536, [(ms(1), Some(60000))]), None);
    }

    #[test]
    fn output_line() {
        let o = Outcome {
            state: State::Converged,
            reached_kib: 131072,
            elapsed: Duration::from_micros(250_500),
            polls: 212,
        };
        assert_eq!(
            format_line(3, 131072, 262144, &o),
            "memtime: domid=3 target_kib=131072 from_kib=262144 reached_kib=131072 ms=250.500 polls=212 \
             state=converged mibps=511.0"
        );
        let z = Outcome { state: State::Stalled, reached_kib: 262144, elapsed: Duration::ZERO, polls: 4001 };
        assert!(format_line(3, 131072, 262144, &z).ends_with(" ms=0.000 polls=4001 state=stalled mibps=0.0"));
    }
}
