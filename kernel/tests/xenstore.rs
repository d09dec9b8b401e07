//! The kernel's xenstore client, the one that ships, against the simulated
//! Xen's xenstored on the real store ring: requests, large values in
//! pieces, watches, transactions retried on EAGAIN.

use kernel::testing::{boot, sim, Guest};
use kernel::xenstore::{self, Errno, Watch};
use xen::sim::SimConfig;
use xen::xenstore::wire::PAYLOAD_MAX;
use xen::xenstore::XsError;

/// A guest with a connected client and no self-test tasks. This thread is
/// the idle task, so a request returns as soon as the reply is in.
fn connected() -> Guest {
    let g = boot(SimConfig { cmdline: "ballast.pattern=0 ballast.sleepers=0".into(), ..Default::default() });
    xenstore::init();
    g
}

fn events(w: &Watch) -> Vec<String> {
    core::iter::from_fn(|| w.try_next()).collect()
}

#[test]
fn write_read_directory_rm() {
    let _g = connected();
    xenstore::write("data/a/b", "hello").unwrap();
    xenstore::write("/local/domain/7/data/c", "").unwrap();
    xenstore::mkdir("data/d").unwrap();
    assert_eq!(xenstore::read("data/a/b").as_deref(), Ok("hello"));
    assert_eq!(xenstore::read("/local/domain/7/data/a").as_deref(), Ok(""));
    assert_eq!(xenstore::read("data/zz"), Err(XsError::Errno(Errno::ENOENT)));
    assert_eq!(xenstore::directory("data").unwrap(), ["a", "c", "d"]);

    xenstore::rm("data/a").unwrap();
    assert_eq!(xenstore::read("data/a/b"), Err(XsError::Errno(Errno::ENOENT)));
    // Gone already, parent present: fine; parent gone: ENOENT.
    xenstore::rm("data/a").unwrap();
    assert_eq!(xenstore::rm("data/a/b"), Err(XsError::Errno(Errno::ENOENT)));
    assert_eq!(xenstore::directory("data/d").unwrap(), Vec::<String>::new());
    assert_eq!(xenstore::read("bad//path"), Err(XsError::Errno(Errno::EINVAL)));
}

#[test]
fn a_large_value_crosses_the_ring_in_pieces() {
    let _g = connected();
    let big = "x".repeat(PAYLOAD_MAX - 20);
    xenstore::write("data/big", &big).unwrap();
    assert_eq!(xenstore::read("data/big").unwrap(), big);
    assert_eq!(sim(|s| s.xenstore.value("data/big").map(<[u8]>::len)), Some(big.len()));
    assert_eq!(sim(|s| s.xenstore.protocol_error()), None);
}

#[test]
fn watches_fire_on_registration_and_changes_below() {
    let _g = connected();
    let ctl = Watch::new("control").unwrap();
    let mem = Watch::new("/local/domain/7/memory/target").unwrap();
    assert_eq!(events(&ctl), ["control"]);
    assert_eq!(events(&mem), ["/local/domain/7/memory/target"]);

    sim(|s| {
        s.toolstack_write("control/shutdown", b"suspend");
        s.toolstack_write("memory/target", b"131072");
        s.toolstack_write("device/vif", b"");
    });
    assert_eq!(events(&ctl), ["control/shutdown"]);
    assert_eq!(events(&mem), ["/local/domain/7/memory/target"]);

    // An event queued before a request's reply still reaches its watch.
    sim(|s| s.toolstack_write("control/sysrq", b"s"));
    xenstore::write("control/shutdown", "").unwrap();
    assert_eq!(events(&ctl), ["control/sysrq", "control/shutdown"]);

    // Removing an ancestor fires the watch below it.
    xenstore::rm("memory").unwrap();
    assert_eq!(events(&mem), ["/local/domain/7/memory/target"]);

    drop(ctl);
    sim(|s| s.toolstack_write("control/shutdown", b"poweroff"));
    assert_eq!(events(&mem), Vec::<String>::new());
}

#[test]
fn a_transaction_is_run_again_on_eagain() {
    let _g = connected();
    let bump = |tx| {
        let n: u64 = xenstore::read_tx(tx, "data/counter")?.parse().unwrap();
        xenstore::write_tx(tx, "data/counter", &(n + 1).to_string())?;
        Ok(n + 1)
    };
    sim(|s| {
        s.toolstack_write("data/counter", b"0");
        s.xenstore.fail_next_commit();
    });
    let mut attempts = 0;
    let r = xenstore::transaction(|tx| {
        attempts += 1;
        bump(tx)
    });
    // The sim does not isolate transactions: the failed attempt's write landed too.
    assert_eq!((r, attempts), (Ok(2), 2));
    assert_eq!(xenstore::read("data/counter").as_deref(), Ok("2"));
    // A request under a transaction the daemon does not know.
    assert_eq!(xenstore::read_tx(99, "data/counter"), Err(XsError::Errno(Errno::ENOENT)));
}
