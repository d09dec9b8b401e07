//! The kernel command line (`extra=` in the xl config).
//!
//! Options are whitespace-separated `key=value` or bare `key` words; ballast
//! reads the ones under `ballast.` and ignores the rest.

/// Options ballast understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `ballast.panic=1`: panic right after the banner (tests the crash path).
    pub panic_on_boot: bool,
    /// `ballast.pattern=MIB`: size of the self-test memory pattern (0: none).
    pub pattern_mib: u64,
    /// `ballast.dirty=MIB`: memory a self-test task keeps rewriting (0: none).
    pub dirty_mib: u64,
    /// `ballast.sleepers=N`: self-test sleeper tasks (0 to 4).
    pub sleepers: u32,
    /// `ballast.aspace=N`: pattern pages in the self-test address space (0: none).
    pub aspace_pages: u64,
    /// `ballast.release=0`: keep free memory populated across a suspend
    /// (full-size images, fastest resume).
    pub release_at_suspend: bool,
    /// `ballast.stubborn=N`: a task that stays out of safe points until N
    /// freeze attempts time out (0: none; 5, a suspend's attempts, gets one
    /// suspend refused; fewer make a laggard the suspend waits out).
    pub stubborn_attempts: u64,
    /// `ballast.hvlimit=1`: once booted, measure the hypervisor's cost of
    /// releasing and repopulating the free memory next to ballast's own
    /// (`mm::limit_probe`), for the bench.
    pub limit_probe: bool,
    /// `ballast.suspend_evtchn=0`: offer no suspend event channel, so the
    /// toolstack asks through `control/shutdown` (for the bench's
    /// side-by-side figures).
    pub suspend_channel: bool,
    /// `ballast.movers=N`: self-test tasks that hop between vCPUs (with
    /// several vCPUs only).
    pub movers: u32,
    /// `ballast.holdvcpu=V:N`: a task that keeps vCPU V from the next N
    /// suspend rendezvous (refused suspends, for the lab).
    pub hold_vcpu: Option<(u32, u32)>,
    /// `ballast.hog=MIB`: the memory hog's first size (it follows
    /// `data/hog/mib` afterwards; 0: idle until asked).
    pub hog_mib: u64,
    /// `ballast.balloon=0`: no balloon (ignores `memory/target`, never
    /// moves memory), to play an uncooperative guest.
    pub balloon: bool,
    /// `ballast.blk=MIB`: MiB of the first disk the block self-test keeps
    /// rewriting and verifying (0: no self-test).
    pub blk_mib: u64,
    /// `ballast.blkbench=MIB`: once the first disk connects, write then
    /// read MIB of it sequentially and publish the speeds (0: no bench).
    /// The range starts after the self-test's, so the two can run together.
    pub blk_bench_mib: u64,
    /// `ballast.ip=A.B.C.D/N` (N in 1..=30): the first vif's static IPv4
    /// address and prefix (no IP stack without it).
    pub ip: Option<([u8; 4], u8)>,
    /// `ballast.ping=A.B.C.D`: the peer the stack pings (by default the
    /// subnet's first address).
    pub ping: Option<[u8; 4]>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            panic_on_boot: false,
            pattern_mib: 16,
            dirty_mib: 0,
            sleepers: 3,
            aspace_pages: 64,
            release_at_suspend: true,
            stubborn_attempts: 0,
            limit_probe: false,
            suspend_channel: true,
            movers: 2,
            hold_vcpu: None,
            hog_mib: 0,
            blk_mib: 16,
            blk_bench_mib: 0,
            ip: None,
            ping: None,
            balloon: true,
        }
    }
}

impl Options {
    pub fn parse(line: &str) -> Self {
        let mut opts = Options::default();
        for word in line.split_ascii_whitespace() {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word, None),
            };
            match key {
                "ballast.panic" => opts.panic_on_boot = flag(value),
                "ballast.stubborn" => number(key, value, &mut opts.stubborn_attempts),
                "ballast.release" => opts.release_at_suspend = flag(value),
                "ballast.hvlimit" => opts.limit_probe = flag(value),
                "ballast.suspend_evtchn" => opts.suspend_channel = flag(value),
                "ballast.pattern" => number(key, value, &mut opts.pattern_mib),
                "ballast.hog" => number(key, value, &mut opts.hog_mib),
                "ballast.blk" => number(key, value, &mut opts.blk_mib),
                "ballast.blkbench" => number(key, value, &mut opts.blk_bench_mib),
                // Parsed here: the command line is read before any heap exists.
                "ballast.ip" => {
                    opts.ip = value
                        .and_then(|v| v.split_once('/'))
                        .and_then(|(a, n)| Some((ipv4(a)?, n.parse::<u8>().ok().filter(|n| (1..=30).contains(n))?)));
                    if opts.ip.is_none() {
                        log::warn!("cmdline: {}={:?} is not A.B.C.D/N (N 1..30); no IP stack", key, value);
                    }
                }
                "ballast.ping" => {
                    opts.ping = value.and_then(ipv4);
                    if opts.ping.is_none() {
                        log::warn!("cmdline: {}={:?} is not A.B.C.D; ignored", key, value);
                    }
                }
                "ballast.balloon" => opts.balloon = flag(value),
                "ballast.aspace" => number(key, value, &mut opts.aspace_pages),
                "ballast.dirty" => number(key, value, &mut opts.dirty_mib),
                "ballast.movers" => {
                    let mut n = opts.movers as u64;
                    number(key, value, &mut n);
                    opts.movers = n.min(8) as u32;
                }
                "ballast.holdvcpu" => match value.and_then(|v| v.split_once(':')) {
                    Some((v, n)) if v.parse::<u32>().is_ok() && n.parse::<u32>().is_ok() => {
                        opts.hold_vcpu = Some((v.parse().unwrap(), n.parse().unwrap()))
                    }
                    _ => log::warn!("cmdline: {}={:?} is not VCPU:COUNT; ignored", key, value),
                },
                "ballast.sleepers" => {
                    let mut n = opts.sleepers as u64;
                    number(key, value, &mut n);
                    opts.sleepers = n.min(4) as u32;
                }
                _ => {}
            }
        }
        opts
    }
}

/// `A.B.C.D`, each a decimal byte.
pub fn ipv4(s: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = s.split('.');
    for b in out.iter_mut() {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        *b = p.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// A number option: a bad value is logged and the default kept.
fn number(key: &str, value: Option<&str>, out: &mut u64) {
    match value.and_then(|v| v.parse::<u64>().ok()) {
        Some(n) => *out = n,
        None => log::warn!("cmdline: {}={:?} is not a number; keeping {}", key, value, out),
    }
}

/// A bare key, or `1`, `y`, `yes`, `on`, `true`, turns a switch on.
fn flag(value: Option<&str>) -> bool {
    matches!(value, None | Some("1" | "y" | "yes" | "on" | "true"))
}

/// The command line as text: up to the first NUL, invalid UTF-8 cut off.
pub fn as_text(raw: &[u8]) -> &str {
    let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    match core::str::from_utf8(&raw[..len]) {
        Ok(s) => s,
        Err(e) => core::str::from_utf8(&raw[..e.valid_up_to()]).unwrap_or(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_switch() {
        assert!(Options::parse("quiet ballast.panic=1").panic_on_boot);
        assert!(Options::parse("ballast.panic").panic_on_boot);
        assert!(!Options::parse("ballast.panic=0").panic_on_boot);
        assert!(!Options::parse("").panic_on_boot);
    }

    #[test]
    fn numbers_and_bad_numbers() {
        let o = Options::parse("ballast.pattern=64 ballast.sleepers=9");
        assert_eq!((o.pattern_mib, o.sleepers), (64, 4));
        let o = Options::parse("ballast.pattern=lots ballast.sleepers=");
        assert_eq!((o.pattern_mib, o.sleepers), (16, 3));
        let o = Options::parse("ballast.hog=300 ballast.balloon=0");
        assert_eq!((o.hog_mib, o.balloon), (300, false));
        assert_eq!(Options::parse("ballast.hog=-1").hog_mib, 0);
        assert_eq!((Options::parse("").blk_mib, Options::parse("ballast.blk=0").blk_mib), (16, 0));
        assert_eq!((Options::parse("").blk_bench_mib, Options::parse("ballast.blkbench=64").blk_bench_mib), (0, 64));
        let o = Options::parse("ballast.ip=10.0.0.2/24 ballast.ping=10.0.0.9");
        assert_eq!((o.ip, o.ping), (Some(([10, 0, 0, 2], 24)), Some([10, 0, 0, 9])));
        for bad in ["10.0.0.2", "10.0.0/24", "10.0.0.256/24", "10.0.0.2/0", "10.0.0.2/33", "a.b.c.d/8", "1.2.3.4.5/8"] {
            assert_eq!(Options::parse(&format!("ballast.ip={bad}")).ip, None, "{bad}");
        }
        assert_eq!(Options::parse("ballast.ping=dom0").ping, None);
    }

    #[test]
    fn text_stops_at_nul_and_bad_utf8() {
        assert_eq!(as_text(b"a b\0junk"), "a b");
        assert_eq!(as_text(b"ok\xffrest"), "ok");
    }
}
