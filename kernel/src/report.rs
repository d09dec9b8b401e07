//! Human-readable state dumps (sysrq) and the figures published under
//! `data/`.

use crate::mm::kernel_memory;
use crate::sched;

/// One console line per task.
pub fn dump_tasks() {
    log::info!(
        "sysrq: {} tasks, {} context switches",
        sched::task_count(),
        sched::CONTEXT_SWITCHES.load(core::sync::atomic::Ordering::Relaxed)
    );
    sched::log_deepest_stack("sysrq");
    sched::for_each_task(|id, name, state, wake_at, switches| match wake_at {
        Some(t) => log::info!(
            "sysrq: task {:>3} {:<16} {:?} (until {} ms) switches={}",
            id,
            name,
            state,
            t / 1_000_000,
            switches
        ),
        None => log::info!("sysrq: task {:>3} {:<16} {:?} switches={}", id, name, state, switches),
    });
}

/// Memory figures on one line.
pub fn dump_memory() {
    let m = kernel_memory::figures();
    let h = kernel_memory::heap_stats();
    log::info!(
        "sysrq: memory total={} KiB free={} KiB ballooned={} KiB free_2m_extents={} heap_in_use={} B heap_pages={}",
        m.total * 4,
        m.free * 4,
        m.ballooned * 4,
        m.free_2m_extents,
        h.bytes_in_use,
        h.pages_held
    );
}
