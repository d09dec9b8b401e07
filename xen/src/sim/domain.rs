//! Building the simulated domain as Xen's domain builder does, and the
//! suspend hypercall: cancelled (the same domain goes on) or resumed in a
//! new domain as `xl restore` or a migration leaves it, with every machine
//! frame, port and Xen page new.

use super::arena::Arena;
use super::memory::{indices, pte_mfn, Memory, PTE_PRESENT};
use super::{PortKind, Sim, SimClock};
use crate::abi::{shared_info, start_info, INVALID_MFN};
use crate::xenstore::sim::SimXenstored;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::string::String;
use std::vec::Vec;

/// The domain to build.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub nr_pages: u64,
    /// `maxmem` in pages.
    pub max_pages: u64,
    pub host_free_pages: u64,
    pub cmdline: String,
    pub domid: u32,
    /// Machine frames not contiguous in any 2 MiB region (pfn ^ 1).
    pub scattered: bool,
    /// vCPUs online at boot (`vcpus`): `cpu/<n>/availability` says so.
    pub vcpus: u32,
    /// vCPUs the domain has (`maxvcpus`); at least `vcpus`.
    pub max_vcpus: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nr_pages: 8192,
            max_pages: 8192 + 256,
            host_free_pages: 1 << 20,
            cmdline: String::new(),
            domid: 7,
            scattered: false,
            vcpus: 1,
            max_vcpus: 1,
        }
    }
}

/// What the next suspend hypercall does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuspendPlan {
    /// `xl save -c`, or a save that failed: returns 1, same domain.
    Cancel,
    /// `xl restore`: returns 0 in a new domain.
    Restore,
    /// A live migration: as `Restore`, and every page the guest gave back
    /// after it was sent comes back populated.
    Migrate,
}

/// Xen's system time when a simulated domain boots (ns); its vCPUs' time
/// records and the clock start there.
const BOOT_SYSTEM_NS: u64 = 1_000_000;
const IMAGE_PAGES: u64 = 16;
const RW: u64 = 2;
/// Machine frames of generation g start here (all new in a new domain).
fn mfn_base(generation: u32) -> u64 {
    0x10_0000 * (generation as u64 + 1)
}
fn first_port(generation: u32) -> u32 {
    1 + 8 * generation
}

/// Lays the domain out: image, p2m list, start_info, xenstore and console
/// pages, bootstrap page tables mapping a region after them, a stack page.
pub fn build(cfg: SimConfig) -> (Sim, *mut start_info) {
    let arena = Arena::new();
    let mut mem = Memory { next_mfn: mfn_base(0), next_xen_mfn: 0xf000_0000, ..Memory::default() };
    let n = cfg.nr_pages;
    let scatter = if cfg.scattered { 1 } else { 0 };
    let mfn = |pfn: u64| mfn_base(0) + (pfn ^ scatter);
    for pfn in 0..n {
        mem.owned.insert(mfn(pfn));
        mem.m2p.insert(mfn(pfn), pfn);
    }
    mem.next_mfn = mfn_base(0) + n + 2;
    let list_pfn = IMAGE_PAGES;
    let list_pages = (n * 8).div_ceil(4096);
    let si_pfn = list_pfn + list_pages;
    let (store_pfn, console_pfn) = (si_pfn + 1, si_pfn + 2);
    let pt_first = si_pfn + 3;
    // L4, L3, L2 and enough L1s to map up to 128 pages past the stack.
    let mut l1s = 1;
    let mapped_end = loop {
        let end = (pt_first + 3 + l1s + 1 + 128).next_multiple_of(512);
        if end / 512 <= l1s {
            break end;
        }
        l1s = end / 512;
    };
    assert!(mapped_end <= n, "sim: {n} pages are too few for the bootstrap layout");

    let (l4, l3, l2) = (pt_first, pt_first + 1, pt_first + 2);
    let write = |pfn: u64, i: usize, v: u64| {
        // SAFETY: pfn is inside the arena; the entry index is < 512.
        unsafe { (arena.va(pfn) as *mut u64).add(i).write(v) }
    };
    let base = arena.va(0);
    let [i4, i3, i2, _] = indices(base);
    write(l4, i4, (mfn(l3) << 12) | PTE_PRESENT | RW);
    write(l3, i3, (mfn(l2) << 12) | PTE_PRESENT | RW);
    for k in 0..l1s {
        let l1 = pt_first + 3 + k;
        write(l2, i2 + k as usize, (mfn(l1) << 12) | PTE_PRESENT | RW);
        for i in 0..512 {
            let pfn = k * 512 + i;
            write(l1, i as usize, (mfn(pfn) << 12) | PTE_PRESENT | RW);
        }
    }
    mem.root = mfn(l4);
    mem.register_table(&arena, mem.root, 4);
    mem.pinned.insert(mem.root);
    for pfn in 0..n {
        write(list_pfn + pfn / 512, (pfn % 512) as usize, mfn(pfn));
    }

    let shared = mem.new_xen_page();
    let (boot, vcpus) = super::vcpus::build(cfg.max_vcpus.max(cfg.vcpus), BOOT_SYSTEM_NS);
    let clock = SimClock::starting_at(BOOT_SYSTEM_NS, vcpus.len() as u32);
    let mut sim = Sim {
        recent_lookups: Default::default(),
        arena,
        mem,
        faults: Default::default(),
        max_pages: cfg.max_pages,
        host_free: cfg.host_free_pages,
        ports: BTreeMap::new(),
        next_port: first_port(0),
        generation: 0,
        start_info_pfn: si_pfn,
        store_pfn,
        console_pfn,
        shared_info_mfn: shared,
        grant_frames: Vec::new(),
        vcpus,
        boot,
        periodic_ticks: 0,
        clock,
        event_callback: None,
        idle_blocks: 0,
        plans: VecDeque::new(),
        xenstore: SimXenstored::new(cfg.domid),
        console_out: Vec::new(),
        calls: HashMap::new(),
        sends: HashMap::new(),
        shutdown: None,
        backends: Default::default(),
    };
    init_shared_info(&mut sim);
    make_toolstack_nodes(&mut sim);
    for v in 0..sim.vcpu_count() {
        let state: &[u8] = if v < cfg.vcpus.max(1) { b"online" } else { b"offline" };
        sim.xenstore.toolstack_write(&format!("cpu/{v}/availability"), state);
    }
    let store_port = sim.alloc_port(PortKind::Store).expect("store port");
    let console_port = sim.alloc_port(PortKind::Console).expect("console port");
    let si = sim.arena.va(si_pfn) as *mut start_info;
    // SAFETY: start_info's page is in the arena and zeroed.
    unsafe {
        let magic = b"xen-3.0-x86_64";
        for (d, &s) in (*si).magic.iter_mut().zip(magic) {
            *d = s as _;
        }
        (*si).nr_pages = n;
        (*si).shared_info = shared << 12;
        (*si).store_mfn = mfn(store_pfn);
        (*si).store_evtchn = store_port;
        (*si).console.domU.mfn = mfn(console_pfn);
        (*si).console.domU.evtchn = console_port;
        (*si).pt_base = sim.arena.va(l4);
        (*si).nr_pt_frames = 3 + l1s;
        (*si).mfn_list = sim.arena.va(list_pfn);
        for (d, &s) in (*si).cmd_line.iter_mut().zip(cfg.cmdline.as_bytes().iter().take(1023)) {
            *d = s as _;
        }
    }
    (sim, si)
}

/// A fresh shared_info: events masked on every vCPU, time published.
fn init_shared_info(sim: &mut Sim) {
    if let Some(si) = sim.shared_info() {
        // SAFETY: shared_info's bytes are Xen's copy (not mapped yet).
        unsafe {
            core::ptr::write_bytes(si as *mut u8, 0, 4096);
            for v in 0..sim.vcpu_count() as usize {
                (*si).vcpu_info[v].evtchn_upcall_mask = 1;
            }
        }
    }
    sim.publish_time();
}

/// The suspend hypercall.
pub fn suspend(s: &mut Sim, start_info_mfn: u64) -> i64 {
    check_suspendable(s, start_info_mfn);
    match s.plans.pop_front().expect("sim: a suspend nobody planned (plan_suspend)") {
        SuspendPlan::Cancel => 1,
        SuspendPlan::Restore => {
            new_domain(s, false);
            0
        }
        SuspendPlan::Migrate => {
            new_domain(s, true);
            0
        }
    }
}

/// The nodes libxl makes for every domain it creates (booted, restored or
/// migrated in) that the guest fills: the suspend event channel's starts
/// empty.
fn make_toolstack_nodes(s: &mut Sim) {
    s.xenstore.toolstack_write("device/suspend/event-channel", b"");
}

/// What the toolstack needs at suspend; a miss is a violation.
fn check_suspendable(s: &mut Sim, start_info_mfn: u64) {
    let mut v = Vec::new();
    if s.mfn_of_pfn(s.start_info_pfn) != Some(start_info_mfn) {
        v.push(format!("suspend: start_info frame {start_info_mfn:#x} is not start_info's"));
    }
    for (&mfn, page) in &s.mem.xen_pages {
        if let Some(va) = page.mapped_at {
            v.push(format!("suspend: Xen page {mfn:#x} still mapped at {va:#x}"));
        }
    }
    let si = s.arena.va(s.start_info_pfn) as *const start_info;
    // SAFETY: start_info's page is in the arena.
    let (store, console) = unsafe { ((*si).store_mfn, (*si).console.domU.mfn) };
    if store != s.store_pfn || console != s.console_pfn {
        v.push(format!("suspend: start_info not canonical (store {store:#x}, console {console:#x})"));
    }
    for (&t, &level) in &s.mem.tables {
        if level == 4 && !s.mem.pinned.contains(&t) && s.mem.is_ram(t) {
            v.push(format!("suspend: root table {t:#x} is not pinned"));
        }
    }
    for vcpu in s.vcpus_still_up() {
        v.push(format!("suspend: vCPU {vcpu} is still up: it was not quiesced"));
    }
    s.mem.violations.extend(v);
}

/// Reads the guest's p2m as the toolstack does: through the frame lists
/// that shared_info names.
fn read_p2m(s: &Sim) -> (Vec<u64>, Vec<u64>) {
    let si = s.shared_info().expect("shared_info") as *const shared_info;
    // SAFETY: Xen's copy of shared_info (unmapped at suspend).
    let (max_pfn, lol) = unsafe { ((*si).arch.max_pfn, (*si).arch.pfn_to_mfn_frame_list_list) };
    let read = |mfn: u64, i: usize| {
        s.mem.read_u64(&s.arena, mfn, i).unwrap_or_else(|| panic!("sim restore: frame list names {mfn:#x}, not ours"))
    };
    let p2m_pages = (max_pfn * 8).div_ceil(4096);
    let mut p2m = Vec::with_capacity(max_pfn as usize);
    let mut pages = Vec::new();
    for page in 0..p2m_pages {
        let list = read(lol, (page / 512) as usize);
        let p2m_page = read(list, (page % 512) as usize);
        pages.push(p2m_page);
        for i in 0..512 {
            if (p2m.len() as u64) < max_pfn {
                p2m.push(read(p2m_page, i));
            }
        }
    }
    (p2m, pages)
}

/// Restores the domain as a new one: every backed pfn gets a new machine
/// frame, page tables and the p2m are rewritten, Xen's pages and the
/// ports are new, start_info names the new rings and shared_info.
fn new_domain(s: &mut Sim, migrated: bool) {
    let (p2m, p2m_pages) = read_p2m(s);
    let g = s.generation + 1;
    let mut renumber: HashMap<u64, u64> = HashMap::new();
    let mut backed = BTreeSet::new();
    for (pfn, &mfn) in p2m.iter().enumerate() {
        let pfn = pfn as u64;
        if mfn == INVALID_MFN {
            if migrated && s.mem.released_pfns.contains(&pfn) {
                backed.insert(pfn);
            }
            continue;
        }
        if s.mem.m2p.get(&mfn) != Some(&pfn) || !s.mem.is_ram(mfn) {
            s.mem.violations.push(format!("restore: p2m names {mfn:#x} for pfn {pfn:#x}; Xen disagrees"));
            continue;
        }
        renumber.insert(mfn, mfn_base(g) + pfn);
        backed.insert(pfn);
    }
    // Page tables: every entry to its new frame (the toolstack's
    // canonicalise/uncanonicalise); entries naming anything else go.
    let tables: Vec<(u64, u8)> = s.mem.tables.iter().map(|(&t, &l)| (t, l)).collect();
    for &(t, _) in &tables {
        if !renumber.contains_key(&t) {
            continue;
        }
        for i in 0..512 {
            let Some(e) = s.mem.read_u64(&s.arena, t, i) else { break };
            if let Some(m) = pte_mfn(e) {
                let new = match renumber.get(&m) {
                    Some(&n) => (e & !0x000f_ffff_ffff_f000) | (n << 12),
                    None => {
                        s.mem.violations.push(format!("restore: table {t:#x} maps {m:#x}, not in the p2m"));
                        0
                    }
                };
                s.mem.write_u64(&s.arena, t, i, new);
            }
        }
    }
    let mem = &mut s.mem;
    mem.tables = tables.iter().filter_map(|&(t, l)| renumber.get(&t).map(|&n| (n, l))).collect();
    mem.pinned = mem.pinned.iter().filter_map(|t| renumber.get(t).copied()).collect();
    mem.root = renumber[&mem.root];
    mem.remapped = mem.remapped.iter().filter_map(|(m, &va)| renumber.get(m).map(|&n| (n, va))).collect();
    mem.xen_pages.clear();
    mem.outside.clear();
    mem.released_pfns.clear();
    mem.owned = backed.iter().map(|&pfn| mfn_base(g) + pfn).collect();
    mem.m2p = backed.iter().map(|&pfn| (mfn_base(g) + pfn, pfn)).collect();
    mem.next_mfn = mfn_base(g) + p2m.len() as u64 + 0x1000;
    s.host_free = s.host_free.saturating_sub(backed.len().saturating_sub(renumber.len()) as u64);

    // The toolstack writes the new p2m into the guest's p2m pages. Their
    // frames are found again through the (renumbered) frame lists.
    s.generation = g;
    let new_shared = s.mem.new_xen_page();
    s.shared_info_mfn = new_shared;
    let p2m_pages: Vec<u64> = p2m_pages.iter().map(|m| renumber[m]).collect();
    write_p2m(s, p2m.len(), &p2m_pages, &backed);
    s.grant_frames.clear();
    s.ports.clear();
    s.next_port = first_port(g);
    s.vcpus_for_new_domain();
    init_shared_info(s);
    let store_port = s.alloc_port(PortKind::Store).expect("store port");
    let console_port = s.alloc_port(PortKind::Console).expect("console port");
    s.xenstore.restart();
    make_toolstack_nodes(s);
    s.backends_for_new_domain();
    let si = s.arena.va(s.start_info_pfn) as *mut start_info;
    // SAFETY: start_info's page is in the arena; the guest is suspended.
    unsafe {
        (*si).nr_pages = s.mem.owned.len() as u64;
        (*si).shared_info = new_shared << 12;
        (*si).store_mfn += mfn_base(g);
        (*si).store_evtchn = store_port;
        (*si).console.domU.mfn += mfn_base(g);
        (*si).console.domU.evtchn = console_port;
    }
}

/// Writes the new p2m into the guest's p2m pages (at their new frames).
fn write_p2m(s: &mut Sim, len: usize, p2m_pages: &[u64], backed: &BTreeSet<u64>) {
    let g = s.generation;
    for (page, &mfn) in p2m_pages.iter().enumerate() {
        for i in 0..512 {
            let pfn = (page * 512 + i) as u64;
            if pfn as usize >= len {
                break;
            }
            let e = if backed.contains(&pfn) { mfn_base(g) + pfn } else { INVALID_MFN };
            if !s.mem.write_u64(&s.arena, mfn, i, e) {
                panic!("sim restore: p2m page {mfn:#x} is gone");
            }
        }
    }
}
