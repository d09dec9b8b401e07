//! Time: Xen's pvclock for system time, the wall clock, and a monotonic
//! clock that never goes backwards, not even across a restore on a host
//! whose system time started later.

use core::sync::atomic::{AtomicU64, Ordering};

/// A consistent copy of the fields of `vcpu_time_info` the scale needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct PvclockSample {
    pub tsc_timestamp: u64,
    pub system_time: u64,
    pub tsc_to_system_mul: u32,
    pub tsc_shift: i8,
}

impl PvclockSample {
    /// Whether Xen has written this vCPU's time yet (a zero scale means
    /// it has not: reading it would give system time 0).
    pub fn is_set(&self) -> bool {
        self.tsc_to_system_mul != 0
    }

    /// System time in ns at TSC value `tsc`. A TSC behind the stamp (read
    /// on a pCPU whose counter lags the one Xen stamped on) counts as no
    /// time passed: wrapped, it would be a jump of centuries, and the
    /// monotonic clock would stand still at it for good.
    pub fn ns_at(&self, tsc: u64) -> u64 {
        let mut delta = tsc.saturating_sub(self.tsc_timestamp);
        if self.tsc_shift < 0 {
            delta >>= (-self.tsc_shift) as u32;
        } else {
            delta <<= self.tsc_shift as u32;
        }
        let scaled = ((delta as u128 * self.tsc_to_system_mul as u128) >> 32) as u64;
        self.system_time.wrapping_add(scaled)
    }
}

/// Guest monotonic time = Xen system time + an offset. The offset grows
/// when the guest lands on a host whose clock is behind the last value it
/// handed out, so readings never go backwards.
pub struct MonotonicClock {
    offset: AtomicU64,
    last: AtomicU64,
}

impl MonotonicClock {
    pub const fn new() -> Self {
        Self { offset: AtomicU64::new(0), last: AtomicU64::new(0) }
    }

    /// Converts a system time reading to monotonic ns, clamping so that no
    /// reading is ever smaller than one already returned.
    pub fn from_system(&self, system_ns: u64) -> u64 {
        // The offset may be "negative" (boot starts the clock at 0): wrapping
        // arithmetic makes that an ordinary addition. A reading a little
        // below the one the clock was based on (Xen's system time seen from
        // another physical CPU, whose TSC is not quite in step) would wrap
        // to centuries ahead and stick there; it reads as the last value.
        let t = system_ns.wrapping_add(self.offset.load(Ordering::Relaxed));
        if (t as i64) < 0 {
            return self.last.load(Ordering::Relaxed);
        }
        let prev = self.last.fetch_max(t, Ordering::Relaxed);
        t.max(prev)
    }

    /// Monotonic time to system time, for programming Xen's timer.
    pub fn to_system(&self, mono_ns: u64) -> u64 {
        mono_ns.wrapping_sub(self.offset.load(Ordering::Relaxed))
    }

    /// After a resume: make the new host's `system_ns` continue from the last
    /// monotonic value handed out (plus `gap_ns`, the time known to have
    /// passed, which may be 0).
    pub fn rebase(&self, system_ns: u64, gap_ns: u64) {
        let last = self.last.load(Ordering::Relaxed);
        let want = last.saturating_add(gap_ns);
        self.offset.store(want.wrapping_sub(system_ns), Ordering::Relaxed);
    }

    /// The largest value handed out so far.
    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }

    pub fn offset(&self) -> u64 {
        self.offset.load(Ordering::Relaxed)
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

mod xen_time {
    use super::*;
    use crate::platform;

    pub(super) static CLOCK: MonotonicClock = MonotonicClock::new();

    /// Reads this vCPU's pvclock, retrying while Xen is updating it; None
    /// while it is unmapped or not yet written.
    fn read_pvclock() -> Option<u64> {
        let v = platform::this_vcpu_info();
        if v.is_null() {
            return None;
        }
        loop {
            // SAFETY: vcpu_info is mapped; Xen updates `time` under a
            // version counter, odd while an update is in progress.
            unsafe {
                let t = core::ptr::addr_of!((*v).time);
                let version = core::ptr::addr_of!((*t).version).read_volatile();
                core::sync::atomic::fence(Ordering::Acquire);
                let sample = PvclockSample {
                    tsc_timestamp: core::ptr::addr_of!((*t).tsc_timestamp).read_volatile(),
                    system_time: core::ptr::addr_of!((*t).system_time).read_volatile(),
                    tsc_to_system_mul: core::ptr::addr_of!((*t).tsc_to_system_mul).read_volatile(),
                    tsc_shift: core::ptr::addr_of!((*t).tsc_shift).read_volatile(),
                };
                let tsc = core::arch::x86_64::_rdtsc();
                core::sync::atomic::fence(Ordering::Acquire);
                let again = core::ptr::addr_of!((*t).version).read_volatile();
                if version & 1 == 0 && version == again {
                    return sample.is_set().then(|| sample.ns_at(tsc));
                }
            }
        }
    }

    /// After boot or a resume in a new domain: the monotonic clock goes on
    /// from its last value on this host's system time. While the pvclock
    /// cannot be read the offset is kept (rebasing on a system time of 0
    /// would throw the clock far ahead once the pvclock reads again).
    pub fn rebase_on_this_host() {
        match read_pvclock() {
            Some(system) => CLOCK.rebase(system, 0),
            None => log::warn!(
                "time: vCPU {}'s pvclock cannot be read; the monotonic clock keeps its offset",
                crate::percpu::current()
            ),
        }
    }

    /// Nanoseconds since boot (more exactly: since Xen's system time began
    /// on the first host), never decreasing.
    pub fn now_ns() -> u64 {
        // shared_info is unmapped around the suspend hypercall, and a vCPU's
        // time is unwritten until Xen first runs it: time stands still then
        // rather than jumping.
        match read_pvclock() {
            Some(system) => CLOCK.from_system(system),
            None => CLOCK.last(),
        }
    }

    /// Wall-clock seconds and nanoseconds (UTC) from shared_info.
    pub fn wall_clock() -> (u64, u32) {
        let si = platform::shared_info();
        if si.is_null() {
            return (0, 0);
        }
        loop {
            // SAFETY: shared_info is mapped; wc_* are updated under wc_version.
            unsafe {
                let ver = core::ptr::addr_of!((*si).wc_version).read_volatile();
                core::sync::atomic::fence(Ordering::Acquire);
                let sec = core::ptr::addr_of!((*si).wc_sec).read_volatile() as u64
                    | (core::ptr::addr_of!((*si).wc_sec_hi).read_volatile() as u64) << 32;
                let nsec = core::ptr::addr_of!((*si).wc_nsec).read_volatile();
                core::sync::atomic::fence(Ordering::Acquire);
                if ver & 1 == 0 && ver == core::ptr::addr_of!((*si).wc_version).read_volatile() {
                    // wc_* is the wall time at system time 0.
                    // The system time behind the monotonic clock: the
                    // pvclock's own reading when it can be read.
                    let system = CLOCK.to_system(now_ns());
                    let total = sec * 1_000_000_000 + nsec as u64 + system;
                    return (total / 1_000_000_000, (total % 1_000_000_000) as u32);
                }
            }
        }
    }

    pub fn clock() -> &'static MonotonicClock {
        &CLOCK
    }
}

pub use xen_time::{clock, now_ns, rebase_on_this_host, wall_clock};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvclock_scales_with_shift_and_mul() {
        // mul = 2^31 means half a ns per (shifted) tick.
        let s = PvclockSample { tsc_timestamp: 1000, system_time: 5000, tsc_to_system_mul: 1 << 31, tsc_shift: 1 };
        assert_eq!(s.ns_at(1000), 5000);
        assert_eq!(s.ns_at(1100), 5100); // 100 ticks << 1 = 200, * 0.5 = 100
        let s = PvclockSample { tsc_shift: -2, ..s };
        assert_eq!(s.ns_at(1400), 5050); // 400 >> 2 = 100, * 0.5 = 50

        // A TSC a little behind the stamp reads as the stamp, not as a wrap.
        assert_eq!(s.ns_at(990), 5000);
        assert!(s.is_set());
        assert!(!PvclockSample::default().is_set());
    }

    #[test]
    fn monotonic_across_a_host_whose_clock_is_behind() {
        let c = MonotonicClock::new();
        assert_eq!(c.from_system(1_000), 1_000);
        assert_eq!(c.from_system(9_000), 9_000);
        // Restored on a host that booted recently: its system time is 200.
        c.rebase(200, 0);
        assert!(c.from_system(200) >= 9_000);
        assert_eq!(c.from_system(1_200), 10_000);
        // The timer deadline converts back to the new host's clock.
        assert_eq!(c.to_system(10_500), 1_700);
    }

    #[test]
    fn a_reading_below_the_base_does_not_wrap_ahead() {
        let c = MonotonicClock::new();
        c.rebase(5_000_000, 0); // booted: the clock starts at 0 here
        assert_eq!(c.from_system(5_000_100), 100);
        // Another physical CPU's view, 50 ns behind the boot reading.
        assert_eq!(c.from_system(4_999_950), 100);
        assert_eq!(c.from_system(5_000_300), 300, "time goes on, not stuck centuries ahead");
    }

    #[test]
    fn boot_starts_the_clock_at_zero() {
        let c = MonotonicClock::new();
        c.rebase(53_000_000_000, 0);
        assert_eq!(c.from_system(53_000_000_000), 0);
        assert_eq!(c.from_system(54_000_000_000), 1_000_000_000);
        assert_eq!(c.to_system(2_000_000_000), 55_000_000_000);
    }

    #[test]
    fn never_backwards_even_if_system_time_jitters() {
        let c = MonotonicClock::new();
        c.from_system(500);
        assert_eq!(c.from_system(400), 500);
    }
}
