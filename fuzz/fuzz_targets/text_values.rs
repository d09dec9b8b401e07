//! Every text value dom0 (or a backend) can put where the guest reads it:
//! `memory/target`, `control/shutdown`, `control/sysrq`, a xenbus `state`,
//! a vif's `mac`, the command line (`extra=`), and a disk sector the block
//! self-test reads back.
//!
//! Checked: no panic, and each parser accepts exactly what its contract
//! says, compared with a plain reimplementation.
#![no_main]

use drivers::balloon::{parse_target_kb, BadTarget, MAX_PLAUSIBLE_KB};
use drivers::blk_pattern;
use drivers::control::{ShutdownRequest, SysrqRequest};
use drivers::netfront::parse_mac;
use kernel::cmdline::{self, Options};
use libfuzzer_sys::fuzz_target;
use xen::xenbus::XenbusState;

fn decimal(s: &str) -> Option<u64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

fuzz_target!(|data: &[u8]| {
    let text = cmdline::as_text(data);
    assert!(text.len() <= data.len() && !text.contains('\0'));
    let s = String::from_utf8_lossy(data);

    match parse_target_kb(&s) {
        Ok(kb) => assert!(decimal(s.trim()) == Some(kb) && kb <= MAX_PLAUSIBLE_KB),
        Err(BadTarget::Implausible(kb)) => assert!(decimal(s.trim()) == Some(kb) && kb > MAX_PLAUSIBLE_KB),
        Err(_) => assert!(decimal(s.trim()).is_none_or(|kb| kb > MAX_PLAUSIBLE_KB)),
    }

    match XenbusState::parse(&s) {
        Ok(state) => assert_eq!(decimal(s.trim()), Some(u64::from(state.as_number()))),
        Err(_) => assert!(decimal(s.trim()).is_none_or(|n| n > 8)),
    }

    match ShutdownRequest::parse(&s) {
        ShutdownRequest::Unknown(kept) => {
            assert!(kept.chars().count() <= 64 && s.starts_with(kept.as_str()));
            assert!(!["", "poweroff", "halt", "reboot", "suspend"].contains(&&*s));
        }
        _ => {}
    }
    match SysrqRequest::parse(&s) {
        SysrqRequest::Garbage => assert!(s.chars().count() >= 2),
        SysrqRequest::UnknownKey(c) => assert_eq!(s.chars().collect::<Vec<_>>(), vec![c]),
        _ => assert!(s.chars().count() <= 1),
    }

    if let Some(mac) = parse_mac(&s) {
        let again: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(again.join(":"), s.trim().to_ascii_lowercase());
    }

    let opts = Options::parse(text);
    assert!(opts.sleepers <= 4 && opts.movers <= 8);
    if let Some((_, prefix)) = opts.ip {
        assert!((1..=30).contains(&prefix));
    }
    if let Some(ip) = cmdline::ipv4(text) {
        let again: Vec<String> = ip.iter().map(u8::to_string).collect();
        // Leading zeros are accepted ("010" is 10), so compare numerically.
        let parts: Vec<u64> = text.split('.').map(|p| p.parse().unwrap()).collect();
        assert_eq!(parts, again.iter().map(|p| p.parse().unwrap()).collect::<Vec<u64>>());
    }

    let mut sector = [0u8; blk_pattern::SECTOR_SIZE];
    let n = data.len().min(sector.len());
    sector[..n].copy_from_slice(&data[..n]);
    for named in [0, 1, u64::MAX, data.len() as u64] {
        if let Ok(gen) = blk_pattern::check(&sector, named) {
            let mut expect = [0u8; blk_pattern::SECTOR_SIZE];
            blk_pattern::fill(&mut expect, named, gen);
            // Leading zeros in the numbers are the only other spelling.
            assert!(sector == expect || sector.windows(2).any(|w| w == b"=0"));
        }
    }
});
