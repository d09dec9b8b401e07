//! The daemon's rounds and the `reserve` client: what ballastd reads from
//! Xen and xenstore, and what it writes back. Decisions are `policy`'s.

use crate::policy::{Action, Decision, DomainView, Policy, Stats, MIB_KB};
use crate::xenctl::{DomainInfo, Xen};
use crate::xs::{self, Xenstore};
use std::collections::HashSet;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const HOME: &str = "/tool/ballastd";
/// A reservation lapses after this long without a new domain.
const RESERVATION_MS: u64 = 120_000;

/// What stops a command.
#[derive(Debug)]
pub enum Error {
    /// The Xen devices cannot be opened.
    OpenXen(std::io::Error),
    /// xenstored's socket cannot be reached.
    Connect(xs::Error),
    /// A hypercall failed (which, and why).
    Xen(&'static str, std::io::Error),
    Xenstore(xs::Error),
    /// A size that does not fit in KiB.
    TooLarge(u64),
    /// The reservation cannot be met: MiB wanted, what the guests could
    /// make free at their minimums, what is free now.
    Short {
        want_mib: u64,
        could_mib: u64,
        free_mib: u64,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::OpenXen(e) => write!(f, "cannot open /dev/xen/privcmd and /dev/xen/hypercall: {e}"),
            Error::Connect(e) => write!(f, "cannot connect to {}: {e}", xs::SOCKET),
            Error::Xen(what, e) => write!(f, "{what}: {e}"),
            Error::Xenstore(e) => write!(f, "{e}"),
            Error::TooLarge(mib) => write!(f, "{mib} MiB is more memory than any host has"),
            Error::Short { want_mib, could_mib, free_mib } => write!(
                f,
                "reserve: cannot make {want_mib} MiB free: the guests can give back only enough for {could_mib} MiB \
                 (every cooperative guest at its minimum, uncooperative ones as they are); {free_mib} MiB free now"
            ),
        }
    }
}

impl From<xs::Error> for Error {
    fn from(e: xs::Error) -> Self {
        Error::Xenstore(e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// `mib` in KiB, if it fits.
pub fn mib_to_kb(mib: u64) -> Result<u64> {
    mib.checked_mul(MIB_KB).filter(|&kb| kb < 1 << 50).ok_or(Error::TooLarge(mib))
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Log lines carry seconds since the daemon started.
struct Log(Instant);

impl Log {
    fn line(&self, msg: &str) {
        eprintln!("[{:9.3}] ballastd: {}", self.0.elapsed().as_secs_f64(), msg);
    }
}

/// Reads and parses one domain's nodes; remembers which malformed values
/// it already reported, so each is logged once.
struct Observer {
    reported: HashSet<(u32, &'static str)>,
}

impl Observer {
    /// A decimal number of KiB (or a count) at `node`; None when absent,
    /// malformed or implausible (logged once).
    fn number(&mut self, xs: &mut Xenstore, log: &Log, domid: u32, node: &'static str) -> xs::Result<Option<u64>> {
        let Some(raw) = xs.read_opt(&format!("/local/domain/{domid}/{node}"))? else { return Ok(None) };
        match raw.trim().parse::<u64>() {
            Ok(v) if v < 1 << 40 => {
                self.reported.remove(&(domid, node));
                Ok(Some(v))
            }
            _ => {
                if self.reported.insert((domid, node)) {
                    let shown: String = raw.chars().take(40).collect();
                    log.line(&format!("domain {domid}: {node} = {shown:?} is not a number of KiB; ignored"));
                }
                Ok(None)
            }
        }
    }

    /// The domain as the policy sees it; None for a domain with no
    /// `memory/static-max` (a stub or service domain the toolstack does
    /// not balloon).
    fn view(&mut self, xs: &mut Xenstore, log: &Log, d: &DomainInfo) -> xs::Result<Option<DomainView>> {
        let domid = d.domid;
        let mut n = |node| self.number(xs, log, domid, node);
        let Some(static_max_kb) = n("memory/static-max")? else { return Ok(None) };
        // Xen counts an HVM guest's video RAM, its target does not.
        let videoram_kb = n("memory/videoram")?.unwrap_or(0);
        let target_kb = n("memory/target")?;
        let dynamic_min_kb = n("memory/dynamic-min")?;
        let dynamic_max_kb = n("memory/dynamic-max")?;
        let marked_uncooperative = n("memory/uncooperative")? == Some(1);
        let stats = match (
            n("data/meminfo/total_kb")?,
            n("data/meminfo/free_kb")?,
            n("data/meminfo/balloon_floor_kb")?,
            n("data/meminfo/pressure_deflates")?,
        ) {
            (Some(total_kb), Some(free_kb), Some(floor_kb), Some(pressure_deflates)) => {
                Some(Stats { total_kb, free_kb, floor_kb, pressure_deflates })
            }
            _ => None,
        };
        Ok(Some(DomainView {
            domid,
            tot_kb: (d.tot_pages * 4).saturating_sub(videoram_kb),
            xen_max_kb: d.max_pages * 4,
            target_kb,
            static_max_kb: Some(static_max_kb),
            dynamic_min_kb,
            dynamic_max_kb,
            stats,
            marked_uncooperative,
        }))
    }
}

/// One look at the host.
struct Observation {
    free_kb: u64,
    /// The domains to balance: not dom0, not going away, not paused (one
    /// being built, restored or received holds what the toolstack gives it).
    views: Vec<DomainView>,
    /// Every domain as Xen lists it, for the reservation.
    all: Vec<DomainInfo>,
}

fn observe(xen: &mut Xen, xs: &mut Xenstore, obs: &mut Observer, log: &Log) -> Result<Observation> {
    let free_kb = xen.free_pages().map_err(|e| Error::Xen("physinfo", e))? * 4;
    let all = xen.domains().map_err(|e| Error::Xen("domain list", e))?;
    let mut views = Vec::new();
    for d in all.iter().filter(|d| d.domid != 0 && !d.going && !d.paused && !d.xenstore_domain) {
        match obs.view(xs, log, d) {
            Ok(Some(v)) => views.push(v),
            Ok(None) => {}
            // Vanished between Xen's list and xenstore: next round.
            Err(e) => log.line(&format!("domain {}: cannot read its nodes ({e}); skipped this round", d.domid)),
        }
    }
    Ok(Observation { free_kb, views, all })
}

fn apply(xen: &mut Xen, xs: &mut Xenstore, log: &Log, d: &Decision, views: &[DomainView]) {
    for a in &d.actions {
        let (domid, r) = match *a {
            Action::SetMaxMem { domid, kb } => {
                let before = views.iter().find(|v| v.domid == domid).map_or(0, |v| v.xen_max_kb);
                match xen.set_max_mem(domid, kb) {
                    Ok(()) => log.line(&format!("domain {domid}: Xen's limit {before} -> {kb} KiB")),
                    Err(e) => log.line(&format!("domain {domid}: setting Xen's limit to {kb} KiB failed: {e}")),
                }
                continue;
            }
            Action::SetTarget { domid, kb } => {
                // Only a domain still there: a write would create its node.
                let alive = xs.read_opt(&format!("/local/domain/{domid}/memory/static-max")).ok().flatten().is_some();
                if !alive {
                    log.line(&format!("domain {domid}: gone before its target was written"));
                    continue;
                }
                let before = views.iter().find(|v| v.domid == domid).and_then(|v| v.target_kb);
                log.line(&format!(
                    "domain {domid}: target {} -> {kb} KiB",
                    before.map_or("-".into(), |b| b.to_string())
                ));
                (domid, xs.write(&format!("/local/domain/{domid}/memory/target"), &kb.to_string()))
            }
            Action::MarkUncooperative { domid } => {
                (domid, xs.write(&format!("/local/domain/{domid}/memory/uncooperative"), "1"))
            }
            Action::ClearUncooperative { domid } => {
                (domid, xs.rm(&format!("/local/domain/{domid}/memory/uncooperative")))
            }
        };
        if let Err(e) = r {
            log.line(&format!("domain {domid}: writing failed: {e}"));
        }
    }
}

/// The reservation the `reserve` command left for the daemon,
/// `"<kb> <newest domid then> <unix ms>"`: held until a newer domain runs
/// or [`RESERVATION_MS`] pass. A newer domain still paused (being built, or
/// received by a migration) is taking the memory reserved for it: what it
/// holds already counts against the reservation.
fn reservation(xs: &mut Xenstore, all: &[DomainInfo], log: &Log) -> u64 {
    let Ok(Some(raw)) = xs.read_opt(&format!("{HOME}/reserve")) else { return 0 };
    let parts: Vec<u64> = raw.split_whitespace().filter_map(|p| p.parse().ok()).collect();
    let [kb, domid_then, at_ms] = parts[..] else {
        log.line(&format!("reservation {raw:?} malformed; dropped"));
        let _ = xs.rm(&format!("{HOME}/reserve"));
        return 0;
    };
    let newer = || all.iter().filter(|d| d.domid as u64 > domid_then && !d.going);
    if newer().any(|d| !d.paused) || unix_ms().saturating_sub(at_ms) > RESERVATION_MS {
        log.line(&format!(
            "reservation of {} MiB done (a new domain runs, or {} s passed)",
            kb / MIB_KB,
            RESERVATION_MS / 1000
        ));
        let _ = xs.rm(&format!("{HOME}/reserve"));
        return 0;
    }
    kb.saturating_sub(newer().map(|d| d.tot_pages * 4).sum())
}

fn connect() -> Result<(Xen, Xenstore)> {
    let xen = Xen::open().map_err(Error::OpenXen)?;
    let xs = Xenstore::connect(xs::SOCKET).map_err(Error::Connect)?;
    Ok((xen, xs))
}

fn status_line(free_kb: u64, reserve_kb: u64, d: &Decision, views: &[DomainView], policy: &Policy) -> String {
    let unco = views.iter().filter(|v| policy.is_uncooperative(v.domid)).count();
    format!(
        "free_kb={free_kb} reservable_kb={} short_kb={} reserve_kb={reserve_kb} domains={} uncooperative={unco}",
        d.reservable_kb,
        d.short_kb,
        views.len()
    )
}

/// One round: observe, decide, apply. Returns the decision, the host's
/// free KiB, the domains balanced and the reservation in force.
fn round(
    xen: &mut Xen,
    xs: &mut Xenstore,
    obs: &mut Observer,
    policy: &mut Policy,
    log: &Log,
    extra: impl FnOnce(&mut Xenstore, &[DomainInfo]) -> u64,
) -> Result<(Decision, u64, Vec<DomainView>, u64)> {
    let o = observe(xen, xs, obs, log)?;
    let extra_kb = extra(xs, &o.all);
    let d = policy.decide(log.0.elapsed().as_millis() as u64, o.free_kb, extra_kb, &o.views);
    for n in &d.notes {
        log.line(n);
    }
    apply(xen, xs, log, &d, &o.views);
    Ok((d, o.free_kb, o.views, extra_kb))
}

pub fn run(reserve_kb: u64, interval_ms: u64) -> Result<ExitCode> {
    let (mut xen, mut xs) = connect()?;
    let log = Log(Instant::now());
    let mut policy = Policy::new(reserve_kb);
    let mut obs = Observer { reported: HashSet::new() };
    xs.write(&format!("{HOME}/pid"), &std::process::id().to_string())?;
    log.line(&format!("running: reserve {} MiB, a round every {interval_ms} ms", reserve_kb / MIB_KB));
    let mut last_status = String::new();
    let mut failing = false;
    loop {
        let lg = &log;
        match round(&mut xen, &mut xs, &mut obs, &mut policy, &log, |xs, all| reservation(xs, all, lg)) {
            Ok((d, free_kb, views, extra_kb)) => {
                failing = false;
                let status = status_line(free_kb, reserve_kb + extra_kb, &d, &views, &policy);
                // Logged when anything but the free figure changed.
                let key = |s: &str| s.split_once(' ').map(|(_, rest)| rest.to_string()).unwrap_or_default();
                if key(&status) != key(&last_status) {
                    log.line(&status);
                }
                if status != last_status {
                    let _ = xs.write(&format!("{HOME}/status"), &status);
                    last_status = status;
                }
            }
            Err(e) => {
                if !failing {
                    log.line(&format!("round failed: {e}; retrying every round"));
                }
                failing = true;
            }
        }
        std::thread::sleep(Duration::from_millis(interval_ms));
    }
}

fn daemon_running(xs: &mut Xenstore) -> Option<u32> {
    let pid: u32 = xs.read_opt(&format!("{HOME}/pid")).ok().flatten()?.trim().parse().ok()?;
    // SAFETY: kill with signal 0 only checks that the process exists.
    (pid != std::process::id() && unsafe { libc::kill(pid as libc::pid_t, 0) } == 0).then_some(pid)
}

fn read_status_field(xs: &mut Xenstore, field: &str) -> Option<u64> {
    let s = xs.read_opt(&format!("{HOME}/status")).ok().flatten()?;
    s.split_whitespace().find_map(|kv| kv.strip_prefix(field)?.strip_prefix('=')?.parse().ok())
}

pub fn reserve(mib: u64, timeout_s: u64) -> Result<ExitCode> {
    let (mut xen, mut xs) = connect()?;
    let log = Log(Instant::now());
    let want_kb = mib_to_kb(mib)?;
    let newest = xen.domains().map_err(|e| Error::Xen("domain list", e))?.iter().map(|d| d.domid).max().unwrap_or(0);
    let daemon = daemon_running(&mut xs);
    match daemon {
        Some(pid) => {
            xs.write(&format!("{HOME}/reserve"), &format!("{want_kb} {newest} {}", unix_ms()))?;
            log.line(&format!("reserve: asked the daemon (pid {pid}) for {mib} MiB"));
        }
        None => log.line(&format!("reserve: no daemon running; balancing for {mib} MiB here")),
    }
    let mut policy = Policy::new(0);
    let mut obs = Observer { reported: HashSet::new() };
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    let mut best_kb = 0;
    loop {
        let free_kb = xen.free_pages().map_err(|e| Error::Xen("physinfo", e))? * 4;
        best_kb = best_kb.max(free_kb);
        if free_kb >= want_kb {
            log.line(&format!(
                "reserve: {mib} MiB free after {} ms (host free {} MiB)",
                log.0.elapsed().as_millis(),
                free_kb / MIB_KB
            ));
            return Ok(ExitCode::SUCCESS);
        }
        // What the guests could give at their minimums.
        let reservable = if daemon.is_some() {
            read_status_field(&mut xs, "reservable_kb")
        } else {
            round(&mut xen, &mut xs, &mut obs, &mut policy, &log, |_, _| want_kb).ok().map(|r| r.0.reservable_kb)
        };
        let hopeless = reservable.is_some_and(|r| r < want_kb) && log.0.elapsed() > Duration::from_secs(3);
        if hopeless || Instant::now() >= deadline {
            let could = reservable.unwrap_or(best_kb).max(best_kb);
            if daemon.is_some() {
                let _ = xs.rm(&format!("{HOME}/reserve"));
            }
            return Err(Error::Short { want_mib: mib, could_mib: could / MIB_KB, free_mib: free_kb / MIB_KB });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn status() -> Result<ExitCode> {
    let (_, mut xs) = connect()?;
    let running = daemon_running(&mut xs);
    let status = xs.read_opt(&format!("{HOME}/status"))?;
    println!(
        "daemon: {}\n{}",
        running.map_or("not running".to_string(), |p| format!("pid {p}")),
        status.unwrap_or_else(|| "no status yet".into())
    );
    Ok(ExitCode::SUCCESS)
}
