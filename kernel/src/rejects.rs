//! Log lines for values the guest refuses from outside its trust (dom0's
//! xenstore writes, a backend's nodes).
//!
//! dom0 can write a node as fast as xenstored accepts, and each write
//! fires the guest's watch: one line per rejected value would let it flood
//! the console (and the guest's time). So each call site has a
//! [`RateLimit`]: up to [`LINES_PER_WINDOW`] lines per [`WINDOW_NS`], then
//! silence, and the next line logged says how many were left out. Values
//! are shown as an [`excerpt`], never whole.

use spin::Mutex;

/// Lines one site logs per window before it falls silent.
pub const LINES_PER_WINDOW: u32 = 10;
/// The window, in ns of system time.
pub const WINDOW_NS: u64 = 5_000_000_000;

struct Window {
    start_ns: u64,
    logged: u32,
    suppressed: u64,
}

/// The rate limit of one call site.
pub struct RateLimit {
    // A lock rather than atomics: the three fields change together. It is
    // taken in task context only and never held across anything that logs.
    window: Mutex<Window>,
}

impl RateLimit {
    pub const fn new() -> Self {
        Self { window: Mutex::new(Window { start_ns: 0, logged: 0, suppressed: 0 }) }
    }

    /// Whether a line may be logged at `now_ns`: `Some(n)`, where `n` lines
    /// were suppressed since the last one logged, or `None` to drop it.
    pub fn admit_at(&self, now_ns: u64) -> Option<u64> {
        let mut w = self.window.lock();
        if now_ns.saturating_sub(w.start_ns) >= WINDOW_NS || now_ns < w.start_ns {
            w.start_ns = now_ns;
            w.logged = 0;
        }
        if w.logged < LINES_PER_WINDOW {
            w.logged += 1;
            Some(core::mem::take(&mut w.suppressed))
        } else {
            w.suppressed += 1;
            None
        }
    }

    /// [`Self::admit_at`] now.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(crate::time::now_ns())
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}

/// A warning under a [`RateLimit`]:
/// `warn_limited!(LIMIT, "fmt", args...)`. The first line after a
/// suppressed run ends with ` (N more like it suppressed)`.
#[macro_export]
macro_rules! warn_limited {
    ($limit:expr, $($arg:tt)+) => {
        if let Some(suppressed) = $limit.admit() {
            if suppressed == 0 {
                log::warn!($($arg)+);
            } else {
                log::warn!("{} ({} more like it suppressed)", format_args!($($arg)+), suppressed);
            }
        }
    };
}

/// The first `chars` characters of a value, for a log line.
pub fn excerpt(raw: &str, chars: usize) -> &str {
    match raw.char_indices().nth(chars) {
        Some((at, _)) => &raw[..at],
        None => raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_logs_a_window_full_then_says_how_many_it_left_out() {
        let limit = RateLimit::new();
        let t0 = 7 * WINDOW_NS;
        for i in 0..LINES_PER_WINDOW {
            assert_eq!(limit.admit_at(t0 + u64::from(i)), Some(0));
        }
        for i in 0..25 {
            assert_eq!(limit.admit_at(t0 + 100 + i), None);
        }
        // The window ends: the next line carries the count, then counting restarts.
        assert_eq!(limit.admit_at(t0 + WINDOW_NS), Some(25));
        assert_eq!(limit.admit_at(t0 + WINDOW_NS + 1), Some(0));
    }

    #[test]
    fn time_going_backwards_opens_a_new_window() {
        let limit = RateLimit::new();
        for _ in 0..=LINES_PER_WINDOW {
            limit.admit_at(10 * WINDOW_NS);
        }
        assert_eq!(limit.admit_at(WINDOW_NS), Some(1));
    }

    #[test]
    fn excerpts_cut_at_characters_not_bytes() {
        assert_eq!(excerpt("abcdef", 3), "abc");
        assert_eq!(excerpt("ab", 3), "ab");
        assert_eq!(excerpt("ééé", 2), "éé");
        assert_eq!(excerpt("", 0), "");
    }
}
