//! The balancing policy: plain code over what the daemon saw this round,
//! no I/O, so that it is tested against a model of guests and a host.
//!
//! After XenServer's `squeezed` and oVirt's MOM:
//!
//! - Each domain has a range `[min, max]`: `memory/dynamic-min` and
//!   `memory/dynamic-max` when set (kept within `memory/static-max`),
//!   otherwise a quarter of static-max (at least 64 MiB) and static-max.
//!   A ballast guest's published balloon floor raises its min: a target
//!   below it could never be met.
//! - The memory to share is what is free on the host plus what the
//!   cooperative domains hold, less the reserve. If it covers every max,
//!   each gets its max; if not, each gets its min plus the same fraction
//!   of its range; if not even the mins fit, each gets its min and the
//!   shortfall is reported.
//! - A guest whose statistics show pressure (its pressure-deflate count
//!   rose, within [`PRESSURE_HOLD_MS`]) has its min raised to what it uses
//!   plus [`HEADROOM_KB`]: it is given memory, the others are squeezed.
//! - A domain asked to shrink that has not come within [`TOLERANCE_KB`] (or
//!   1/64) of its target, nor shrunk by 1 MiB, for [`UNCOOPERATIVE_MS`] is
//!   uncooperative: its memory is taken as fixed and its target left
//!   alone until it moves by 4 MiB. A mark found on a domain the daemon
//!   does not track (it restarted, or the domain was paused) is cleared.
//! - Guests' statistics are believed only while they agree with Xen's own
//!   count of the domain's pages; nothing is ever set below a domain's
//!   min, and a malformed node is logged and replaced by its default.
//! - Xen's limit for a cooperative domain is its max (+1 MiB, as `xl
//!   mem-set` leaves it): libxl starts a domain with a limit of its boot
//!   size, which would stop it from growing to a larger target or under
//!   its own pressure.

use std::collections::HashMap;

pub const MIB_KB: u64 = 1024;
pub const UNCOOPERATIVE_MS: u64 = 20_000;
/// A domain within this of its target is where it was asked to be.
pub const TOLERANCE_KB: u64 = 4 * MIB_KB;
/// Movement toward the target that counts as progress.
pub const PROGRESS_KB: u64 = MIB_KB;
/// Movement that makes an uncooperative domain cooperative again.
pub const RECOVER_KB: u64 = 4 * MIB_KB;
pub const PRESSURE_HOLD_MS: u64 = 30_000;
pub const HEADROOM_KB: u64 = 32 * MIB_KB;
/// Targets are rewritten only when they change by more than this.
pub const MIN_CHANGE_KB: u64 = MIB_KB;
pub const DEFAULT_MIN_FLOOR_KB: u64 = 64 * MIB_KB;
/// Statistics further than this (or 10%) from Xen's count are not believed.
pub const STATS_SLACK_KB: u64 = 8 * MIB_KB;
/// A disagreement is logged once it has lasted this long (a guest
/// publishes once a second at most, so during a move it lags behind Xen).
pub const STATS_DOUBT_MS: u64 = 5_000;
/// Xen's limit for a domain is its max plus this, as `xl mem-set` leaves it
/// (libxl's LIBXL_MAXMEM_CONSTANT): a guest can grow by itself up to its
/// max under pressure, never past it.
pub const MAXMEM_SLACK_KB: u64 = MIB_KB;

/// A guest's `data/meminfo`, as far as the policy uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub total_kb: u64,
    pub free_kb: u64,
    pub floor_kb: u64,
    pub pressure_deflates: u64,
}

/// One domain this round: Xen's count and the xenstore nodes, each None
/// when absent or malformed (the daemon logs which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainView {
    pub domid: u32,
    /// Xen's own count of the domain's memory, and its limit.
    pub tot_kb: u64,
    pub xen_max_kb: u64,
    pub target_kb: Option<u64>,
    pub static_max_kb: Option<u64>,
    pub dynamic_min_kb: Option<u64>,
    pub dynamic_max_kb: Option<u64>,
    pub stats: Option<Stats>,
    /// `memory/uncooperative` is set (by this daemon, maybe an earlier run).
    pub marked_uncooperative: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    SetTarget {
        domid: u32,
        kb: u64,
    },
    /// Xen's limit for the domain (`XEN_DOMCTL_max_mem`).
    SetMaxMem {
        domid: u32,
        kb: u64,
    },
    MarkUncooperative {
        domid: u32,
    },
    ClearUncooperative {
        domid: u32,
    },
}

/// The outcome of a round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub actions: Vec<Action>,
    /// What is free plus what the cooperative domains would give back at
    /// their mins: the most free memory a reservation can bring about.
    pub reservable_kb: u64,
    /// How far the mins exceed what there is to share (0 when they fit).
    pub short_kb: u64,
    /// One line per change worth logging.
    pub notes: Vec<String>,
}

/// What the policy remembers of a domain between rounds.
#[derive(Debug, Clone, Default)]
struct Track {
    /// The target it is being held to, and since when.
    target_kb: Option<u64>,
    progress_at_ms: u64,
    /// Its size when it last made progress.
    tot_at_progress_kb: u64,
    uncooperative_at_tot: Option<u64>,
    deflates_seen: Option<u64>,
    pressure_until_ms: u64,
    /// Since when the statistics disagree with Xen, and whether that was
    /// logged.
    mismatch_since_ms: Option<u64>,
    mismatch_noted: bool,
    /// A dynamic-min above dynamic-max was logged.
    bad_range_noted: bool,
}

pub struct Policy {
    /// Kept free for the host at all times.
    pub reserve_kb: u64,
    tracks: HashMap<u32, Track>,
}

/// A domain's range and use this round.
struct Range {
    domid: u32,
    tot_kb: u64,
    min_kb: u64,
    max_kb: u64,
}

impl Policy {
    pub fn new(reserve_kb: u64) -> Self {
        Self { reserve_kb, tracks: HashMap::new() }
    }

    /// Whether `domid` is marked uncooperative.
    pub fn is_uncooperative(&self, domid: u32) -> bool {
        self.tracks.get(&domid).is_some_and(|t| t.uncooperative_at_tot.is_some())
    }

    /// Decides targets for `domains` (dom0 excluded by the caller) with
    /// `host_free_kb` free and `extra_reserve_kb` asked for on top of the
    /// standing reserve.
    pub fn decide(
        &mut self,
        now_ms: u64,
        host_free_kb: u64,
        extra_reserve_kb: u64,
        domains: &[DomainView],
    ) -> Decision {
        let mut d = Decision::default();
        self.tracks.retain(|id, _| domains.iter().any(|v| v.domid == *id));
        let mut cooperative = Vec::new();
        for v in domains {
            if !self.tracks.contains_key(&v.domid) && v.marked_uncooperative {
                // A mark this daemon no longer stands by (it restarted, or
                // the domain was paused meanwhile): looked at afresh.
                d.actions.push(Action::ClearUncooperative { domid: v.domid });
            }
            let track = self.tracks.entry(v.domid).or_insert_with(|| Track {
                progress_at_ms: now_ms,
                tot_at_progress_kb: v.tot_kb,
                ..Track::default()
            });
            let range = bounds(v, track, now_ms, &mut d.notes);
            watch_progress(v, track, now_ms, &mut d);
            if track.uncooperative_at_tot.is_none() {
                cooperative.push(range);
            }
        }
        let held: u64 = cooperative.iter().map(|r| r.tot_kb).sum();
        let budget = (host_free_kb + held).saturating_sub(self.reserve_kb + extra_reserve_kb);
        let sum_min: u64 = cooperative.iter().map(|r| r.min_kb).sum();
        let sum_max: u64 = cooperative.iter().map(|r| r.max_kb).sum();
        d.reservable_kb = host_free_kb + held.saturating_sub(sum_min);
        d.short_kb = sum_min.saturating_sub(budget);
        for r in &cooperative {
            let kb = if budget >= sum_max {
                r.max_kb
            } else if budget <= sum_min {
                r.min_kb
            } else {
                // min + the same share of every range; u128 for the product.
                let share = (r.max_kb - r.min_kb) as u128 * (budget - sum_min) as u128 / (sum_max - sum_min) as u128;
                r.min_kb + share as u64
            };
            // Whole pages: rounded down (the shares stay within what there
            // is), but never below the min.
            let kb = (kb & !3).max(pages_up(r.min_kb)).min(r.max_kb & !3);
            let track = self.tracks.get_mut(&r.domid).expect("tracked above");
            let view = domains.iter().find(|v| v.domid == r.domid).expect("ranges come from views");
            let limit = pages_up(r.max_kb + MAXMEM_SLACK_KB);
            if view.xen_max_kb != limit {
                d.actions.push(Action::SetMaxMem { domid: r.domid, kb: limit });
            }
            let current = view.target_kb;
            if current.is_none_or(|c| c.abs_diff(kb) > MIN_CHANGE_KB) {
                d.actions.push(Action::SetTarget { domid: r.domid, kb });
                track.target_kb = Some(kb);
            } else if track.target_kb.is_none() {
                track.target_kb = current;
            }
        }
        d
    }
}

/// `kb` rounded up to whole 4 KiB pages (Xen counts pages).
fn pages_up(kb: u64) -> u64 {
    kb.div_ceil(4) * 4
}

/// How far from its target a domain may stay and still be where it was
/// asked to be: 4 MiB, or 1/64 of the target for large ones.
fn tolerance_kb(target_kb: u64) -> u64 {
    TOLERANCE_KB.max(target_kb / 64)
}

/// The domain's `[min, max]` this round, with its floor and any pressure.
fn bounds(v: &DomainView, track: &mut Track, now_ms: u64, notes: &mut Vec<String>) -> Range {
    let static_max = v.static_max_kb.unwrap_or(v.tot_kb).max(MIB_KB);
    let mut max = v.dynamic_max_kb.unwrap_or(static_max).min(static_max);
    let default_min = (static_max / 4).max(DEFAULT_MIN_FLOOR_KB).min(static_max);
    let mut min = v.dynamic_min_kb.unwrap_or(default_min.min(max));
    if min > max {
        // Only an explicit dynamic-min can be above the max.
        if !track.bad_range_noted {
            notes.push(format!(
                "domain {}: dynamic-min {} KiB above dynamic-max {} KiB; using {} KiB and {} KiB",
                v.domid, min, max, default_min, static_max
            ));
        }
        track.bad_range_noted = true;
        min = default_min;
        max = static_max;
    } else {
        track.bad_range_noted = false;
    }
    let stats = v.stats.filter(|s| {
        let believable = s.total_kb.abs_diff(v.tot_kb) <= STATS_SLACK_KB.max(v.tot_kb / 10) && s.free_kb <= s.total_kb;
        if believable {
            if track.mismatch_noted {
                notes.push(format!("domain {}: statistics agree with Xen again", v.domid));
            }
            track.mismatch_since_ms = None;
            track.mismatch_noted = false;
        } else {
            let since = *track.mismatch_since_ms.get_or_insert(now_ms);
            if !track.mismatch_noted && now_ms.saturating_sub(since) >= STATS_DOUBT_MS {
                track.mismatch_noted = true;
                notes.push(format!(
                    "domain {}: statistics say {} KiB total, {} KiB free but Xen counts {} KiB: ignored",
                    v.domid, s.total_kb, s.free_kb, v.tot_kb
                ));
            }
        }
        believable
    });
    if let Some(s) = stats {
        // A floor above what the guest holds plus the headroom it keeps
        // under pressure is not one its balloon would stop at.
        min = min.max(s.floor_kb.min(s.total_kb + 16 * MIB_KB).min(max));
        if track.deflates_seen.is_some_and(|seen| s.pressure_deflates > seen) {
            if now_ms >= track.pressure_until_ms {
                notes.push(format!(
                    "domain {}: under pressure ({} pressure deflates, {} KiB free of {} KiB): giving it memory",
                    v.domid, s.pressure_deflates, s.free_kb, s.total_kb
                ));
            }
            track.pressure_until_ms = now_ms + PRESSURE_HOLD_MS;
        }
        track.deflates_seen = Some(s.pressure_deflates);
        if now_ms < track.pressure_until_ms {
            let need = s.total_kb - s.free_kb + HEADROOM_KB;
            min = min.max(need.min(max));
        }
    }
    Range { domid: v.domid, tot_kb: v.tot_kb, min_kb: min.min(max), max_kb: max }
}

/// Marks a domain that does not shrink toward its target uncooperative,
/// and clears the mark once it moves.
fn watch_progress(v: &DomainView, track: &mut Track, now_ms: u64, d: &mut Decision) {
    if let Some(at) = track.uncooperative_at_tot {
        if v.tot_kb.abs_diff(at) >= RECOVER_KB {
            track.uncooperative_at_tot = None;
            track.progress_at_ms = now_ms;
            track.tot_at_progress_kb = v.tot_kb;
            d.actions.push(Action::ClearUncooperative { domid: v.domid });
            d.notes.push(format!("domain {}: moved to {} KiB; cooperative again", v.domid, v.tot_kb));
        }
        return;
    }
    let Some(target) = v.target_kb.or(track.target_kb) else { return };
    let pressured = now_ms < track.pressure_until_ms;
    // Only a domain asked to shrink can refuse (one asked to grow may just
    // find the host short), and one that keeps shrinking is cooperating,
    // however far it still has to go.
    let excess = v.tot_kb.saturating_sub(target);
    if excess <= tolerance_kb(target) || pressured || v.tot_kb + PROGRESS_KB <= track.tot_at_progress_kb {
        track.progress_at_ms = now_ms;
        track.tot_at_progress_kb = v.tot_kb;
        return;
    }
    if now_ms.saturating_sub(track.progress_at_ms) >= UNCOOPERATIVE_MS {
        track.uncooperative_at_tot = Some(v.tot_kb);
        d.actions.push(Action::MarkUncooperative { domid: v.domid });
        d.notes.push(format!(
            "domain {}: still {} KiB above its target of {} KiB after {} s: uncooperative, left alone",
            v.domid,
            excess,
            target,
            UNCOOPERATIVE_MS / 1000
        ));
    }
}

#[cfg(test)]
mod model;
