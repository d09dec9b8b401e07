//! The policy against a model of a host and its guests: ballooning guests
//! that move toward their targets at a given speed (never below their
//! floor), one that never moves, one that stalls, one under pressure that
//! takes memory back by itself, liars and garbage. Rounds of 500 ms.

use super::*;

const MIB: u64 = MIB_KB;
const ROUND_MS: u64 = 500;

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    /// Moves toward max(target, floor) at this many KiB per second.
    Balloon(u64),
    Stubborn,
    /// Shrinks no lower than this.
    StallsAt(u64),
}

#[derive(Clone)]
struct Guest {
    domid: u32,
    tot: u64,
    static_max: u64,
    dynamic_min: Option<u64>,
    target: Option<u64>,
    behaviour: Behaviour,
    /// Memory in use inside (stats); a guest takes memory back from the
    /// host by itself when it would have less than 9 MiB free.
    used: u64,
    deflates: u64,
    publishes_stats: bool,
    lies: bool,
    /// Xen's limit: libxl leaves it at the boot size + 1 MiB.
    xen_max: u64,
}

impl Guest {
    fn new(domid: u32, tot_mib: u64, max_mib: u64, behaviour: Behaviour) -> Self {
        Guest {
            domid,
            tot: tot_mib * MIB,
            static_max: max_mib * MIB,
            dynamic_min: None,
            target: None,
            behaviour,
            used: 40 * MIB,
            deflates: 0,
            publishes_stats: matches!(behaviour, Behaviour::Balloon(_)),
            lies: false,
            xen_max: tot_mib * MIB + MAXMEM_SLACK_KB,
        }
    }

    fn floor(&self) -> u64 {
        self.used + 9 * MIB
    }

    fn min_allowed(&self) -> u64 {
        let default = (self.static_max / 4).max(DEFAULT_MIN_FLOOR_KB).min(self.static_max);
        // A dynamic-min above static-max is garbage: the default applies.
        self.dynamic_min.filter(|&m| m <= self.static_max).unwrap_or(default)
    }

    fn view(&self) -> DomainView {
        let stats = self.publishes_stats.then(|| Stats {
            total_kb: if self.lies { 10 << 20 } else { self.tot },
            free_kb: self.tot.saturating_sub(self.used),
            floor_kb: self.floor(),
            pressure_deflates: self.deflates,
        });
        DomainView {
            domid: self.domid,
            tot_kb: self.tot,
            xen_max_kb: self.xen_max,
            target_kb: self.target,
            static_max_kb: Some(self.static_max),
            dynamic_min_kb: self.dynamic_min,
            dynamic_max_kb: None,
            stats,
            marked_uncooperative: false,
        }
    }
}

struct Host {
    free: u64,
    guests: Vec<Guest>,
    policy: Policy,
    now_ms: u64,
    marked: Vec<u32>,
    cleared: Vec<u32>,
    last: Decision,
}

impl Host {
    fn new(free_mib: u64, reserve_mib: u64, guests: Vec<Guest>) -> Self {
        let held: u64 = guests.iter().map(|g| g.tot).sum();
        let free = (free_mib * MIB).checked_sub(held).expect("the guests fit the host");
        Host {
            free,
            guests,
            policy: Policy::new(reserve_mib * MIB),
            now_ms: 0,
            marked: vec![],
            cleared: vec![],
            last: Decision::default(),
        }
    }

    /// One round: decide, check every action, apply, let the guests move.
    fn round(&mut self, extra_mib: u64) {
        let views: Vec<DomainView> = self.guests.iter().map(Guest::view).collect();
        let d = self.policy.decide(self.now_ms, self.free, extra_mib * MIB, &views);
        for a in &d.actions {
            match *a {
                Action::SetTarget { domid, kb } => {
                    let g =
                        self.guests.iter_mut().find(|g| g.domid == domid).expect("a target for a domain that exists");
                    assert!(kb >= g.min_allowed(), "domain {domid} set to {kb} KiB, below its min {}", g.min_allowed());
                    assert!(kb <= g.static_max, "domain {domid} set above static-max");
                    assert_eq!(kb % 4, 0);
                    g.target = Some(kb);
                }
                Action::SetMaxMem { domid, kb } => {
                    let g =
                        self.guests.iter_mut().find(|g| g.domid == domid).expect("a limit for a domain that exists");
                    assert!(kb >= g.target.unwrap_or(0) && kb <= g.static_max + MAXMEM_SLACK_KB, "limit {kb} KiB");
                    g.xen_max = kb;
                }
                Action::MarkUncooperative { domid } => self.marked.push(domid),
                Action::ClearUncooperative { domid } => self.cleared.push(domid),
            }
        }
        self.last = d;
        let dt = ROUND_MS;
        for g in &mut self.guests {
            // Pressure first: a guest short of free memory takes some back.
            if g.tot < g.floor() && matches!(g.behaviour, Behaviour::Balloon(_)) {
                let want = (g.floor() + 16 * MIB - g.tot).min(self.free).min(g.xen_max.saturating_sub(g.tot));
                if want > 0 {
                    g.tot += want;
                    self.free -= want;
                    g.deflates += 1;
                }
            }
            let Some(target) = g.target else { continue };
            let (goal, rate) = match g.behaviour {
                Behaviour::Balloon(rate) => (target.max(g.floor()), rate),
                Behaviour::Stubborn => continue,
                Behaviour::StallsAt(s) => (target.max(s), 64 * MIB),
            };
            let step = rate * dt / 1000;
            if g.tot > goal {
                let n = (g.tot - goal).min(step);
                g.tot -= n;
                self.free += n;
            } else {
                let n = (goal - g.tot).min(step).min(self.free).min(g.xen_max.saturating_sub(g.tot));
                g.tot += n;
                self.free -= n;
            }
        }
        self.now_ms += dt;
    }

    fn run(&mut self, secs: u64, extra_mib: u64) {
        for _ in 0..secs * 1000 / ROUND_MS {
            self.round(extra_mib);
        }
    }

    fn guest(&self, domid: u32) -> &Guest {
        self.guests.iter().find(|g| g.domid == domid).unwrap()
    }
}

fn three_guests() -> Vec<Guest> {
    (1..=3).map(|d| Guest::new(d, 384, 512, Behaviour::Balloon(200 * MIB))).collect()
}

#[test]
fn a_reservation_squeezes_everyone_proportionally_and_never_below_a_minimum() {
    let mut h = Host::new(1200, 32, three_guests());
    h.run(10, 0);
    let t: Vec<u64> = h.guests.iter().map(|g| g.target.unwrap()).collect();
    assert!(t.iter().all(|&x| x == t[0]), "equal guests get equal shares: {t:?}");
    assert!(h.free >= 32 * MIB && h.free < 40 * MIB, "the rest is shared out: {} KiB free", h.free);

    h.run(10, 512);
    assert!(h.free >= (512 + 32) * MIB, "room made: {} MiB free", h.free / MIB);
    for g in &h.guests {
        assert!(g.tot >= g.min_allowed() && g.tot < 384 * MIB, "domain {} at {} MiB", g.domid, g.tot / MIB);
    }
    assert_eq!(h.last.short_kb, 0);
    assert!(h.last.reservable_kb >= 512 * MIB);

    // The new domain arrives, the reservation ends: everyone shares again.
    h.guests.push(Guest::new(4, 512, 512, Behaviour::Balloon(200 * MIB)));
    h.free -= 512 * MIB;
    h.run(10, 0);
    let t4 = h.guest(4).target.unwrap();
    assert!(t4 < 512 * MIB && t4 >= h.guest(4).min_allowed(), "the newcomer shares too");
    assert!(h.free >= 32 * MIB);
    assert!(h.marked.is_empty(), "nobody is uncooperative: {:?}", h.marked);
}

#[test]
fn an_impossible_reservation_says_how_much_it_could_get() {
    let mut h = Host::new(1200, 32, three_guests());
    h.run(5, 2000);
    assert!(h.last.short_kb > 0);
    let could = h.last.reservable_kb;
    assert!(could < 2000 * MIB && could > 600 * MIB, "{} MiB", could / MIB);
    for g in &h.guests {
        assert_eq!(g.target, Some(g.min_allowed()), "squeezed to the minimum, not below");
    }
}

#[test]
fn a_guest_that_does_not_move_is_left_alone_until_it_does() {
    let mut guests = three_guests();
    guests.push(Guest::new(4, 256, 256, Behaviour::Stubborn));
    guests.push(Guest::new(5, 256, 256, Behaviour::StallsAt(78 * MIB)));
    let mut h = Host::new(1800, 32, guests);
    // Squeezed about to their minimums: 64 MiB for the two small ones.
    h.run(15, 1250);
    assert!(h.marked.is_empty(), "not before 20 s: {:?}", h.marked);
    h.run(15, 1250);
    assert_eq!(h.marked, vec![4, 5], "the stubborn and the stalled one");
    let targets: Vec<Option<u64>> = [4, 5].iter().map(|&d| h.guest(d).target).collect();
    h.run(10, 600);
    assert_eq!(targets, [4, 5].iter().map(|&d| h.guest(d).target).collect::<Vec<_>>(), "left alone");
    assert!(h.guests[..3].iter().all(|g| g.target.unwrap() >= g.min_allowed()));
    // It moves by itself: cooperative again, balanced with the others.
    h.guests[3].tot -= 8 * MIB;
    h.free += 8 * MIB;
    h.run(2, 600);
    assert_eq!(h.cleared, vec![4]);
    assert!(!h.policy.is_uncooperative(4) && h.policy.is_uncooperative(5));
}

#[test]
fn a_guest_under_pressure_is_given_memory_and_the_others_squeezed() {
    let mut h = Host::new(1200, 32, three_guests());
    h.run(10, 0);
    let share = h.guest(1).target.unwrap();
    h.guests[0].used = 420 * MIB; // the hog
    h.run(10, 0);
    let g = h.guest(1);
    assert!(g.deflates > 0);
    assert!(g.target.unwrap() >= 420 * MIB + 9 * MIB, "given what it uses: {} MiB", g.target.unwrap() / MIB);
    assert!(h.guest(2).target.unwrap() < share && h.guest(3).target.unwrap() < share, "the others pay");
    assert!(h.marked.is_empty(), "pressure is not refusal: {:?}", h.marked);
    // The hog lets go; after the hold the shares are equal again.
    h.guests[0].used = 40 * MIB;
    h.run(PRESSURE_HOLD_MS / 1000 + 10, 0);
    let t: Vec<u64> = h.guests.iter().map(|g| g.target.unwrap()).collect();
    assert!(t.iter().all(|&x| x.abs_diff(t[0]) <= MIB), "{t:?}");
}

#[test]
fn lies_garbage_and_domains_that_come_and_go_are_survived() {
    let mut guests = three_guests();
    guests[0].lies = true;
    guests[1].dynamic_min = Some(600 * MIB); // above static-max: garbage
    let mut h = Host::new(1200, 32, guests);
    h.run(3, 0);
    h.guests.remove(2); // vanishes between rounds
    h.run(3, 300);
    h.guests.push(Guest::new(9, 100, 512, Behaviour::Balloon(200 * MIB)));
    h.free -= 100 * MIB;
    h.run(10, 300);
    assert!(h.guest(1).target.is_some() && h.guest(9).target.is_some());
    assert!(h.free >= 300 * MIB);
}

#[test]
fn notes_name_liars_and_bad_ranges_once() {
    let mut g = Guest::new(1, 256, 512, Behaviour::Balloon(100 * MIB));
    g.lies = true;
    g.dynamic_min = Some(1000 * MIB);
    let mut p = Policy::new(32 * MIB);
    let d = p.decide(0, 500 * MIB, 0, &[g.view()]);
    assert!(d.notes.iter().any(|n| n.contains("dynamic-min")), "{:?}", d.notes);
    assert!(!d.notes.iter().any(|n| n.contains("statistics say")), "a lag is not a lie yet: {:?}", d.notes);
    let d = p.decide(STATS_DOUBT_MS, 500 * MIB, 0, &[g.view()]);
    assert!(d.notes.iter().any(|n| n.contains("statistics say")), "{:?}", d.notes);
    let d = p.decide(STATS_DOUBT_MS + 500, 500 * MIB, 0, &[g.view()]);
    assert!(!d.notes.iter().any(|n| n.contains("statistics say")), "once: {:?}", d.notes);
}

#[test]
fn a_dynamic_max_alone_is_obeyed_limits_are_set_once_and_old_marks_cleared() {
    let mut g = Guest::new(1, 256, 256, Behaviour::Balloon(100 * MIB));
    g.publishes_stats = false;
    let mut v = g.view();
    v.dynamic_max_kb = Some(48 * MIB + 2); // below the 64 MiB default min, and not whole pages
    v.marked_uncooperative = true; // left by an earlier daemon
    let mut p = Policy::new(32 * MIB);
    let d = p.decide(0, 500 * MIB, 0, &[v]);
    assert!(d.actions.contains(&Action::ClearUncooperative { domid: 1 }), "{:?}", d.actions);
    let target = d.actions.iter().find_map(|a| match a {
        Action::SetTarget { kb, .. } => Some(*kb),
        _ => None,
    });
    assert_eq!(target, Some(48 * MIB), "the dynamic-max, in whole pages");
    let limit = d.actions.iter().find_map(|a| match a {
        Action::SetMaxMem { kb, .. } => Some(*kb),
        _ => None,
    });
    assert_eq!(limit, Some(49 * MIB + 4), "max + 1 MiB, rounded up to a page");
    assert!(d.notes.is_empty(), "a dynamic-max alone is no bad range: {:?}", d.notes);
    // Xen now has that limit (in pages), the target is written, the mark gone.
    v.xen_max_kb = limit.unwrap();
    v.target_kb = target;
    v.marked_uncooperative = false;
    let d = p.decide(500, 500 * MIB, 0, &[v]);
    assert!(d.actions.is_empty(), "nothing to do again: {:?}", d.actions);
}
