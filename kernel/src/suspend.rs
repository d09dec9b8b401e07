//! The suspend coordinator (filled in by the suspend issue).

pub fn do_suspend() {
    log::warn!("suspend: not supported yet; request ignored");
}
