#!/usr/bin/env python3
"""Boot Xen + a Linux dom0 under QEMU/TCG and run lab scenarios inside dom0.

    python3 tests/lab/run.py [options] SCENARIO...

SCENARIO is a name (tests/scenarios/NAME.sh) or a path to a .sh file. All scenarios run in ONE
boot, in the given order. Scenario headers (comment lines anywhere in the file):
    # timeout: N            seconds allowed for this scenario (default 60)
    # needs: linux-guest    put the reference Linux PV guest in the initramfs
    # needs: ballast        fail early if build/ballast is missing

Output: lines of interest live (everything with -v), the full serial log in
build/lab/<scenarios>.log, then one "PASS|FAIL scenario/check: evidence" line per check and
finally "N passed, N failed". Exit status 0 only if nothing failed.
"""
import argparse
import os
import queue
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAB_SRC = os.path.join(REPO, "tests", "lab")
SCEN_DIR = os.path.join(REPO, "tests", "scenarios")
DEFAULT_SCENARIO_TIMEOUT = 60
BASE_TIMEOUT = 120
# After this long without a serial line the lab is presumed stuck: Xen is asked, through its
# serial console, for its domains, vCPUs and per-pCPU registers (debug keys q, r, d), so the
# log says where the time goes. At most SILENCE_DUMPS times per boot.
SILENCE_S = 90
SILENCE_DUMPS = 2
# Three CTRL-a switch Xen's serial input to Xen; QEMU's mux wants each CTRL-a doubled.
XEN_INPUT_SWITCH = b"\x01\x01" * 3

LINUX_GUEST_CFG = """\
name = "linux-guest"
type = "pv"
kernel = "/lab/linux-guest/vmlinuz"
ramdisk = "/lab/linux-guest/initrd"
memory = 256
maxmem = 256
vcpus = 1
extra = "console=hvc0"
on_crash = "preserve"
on_poweroff = "destroy"
on_reboot = "restart"
"""

MARKER = re.compile(r"@@(RESULT|BEGIN|END|LAB|ALLDONE)\b ?(.*)$")
INTEREST = re.compile(r"^\[(guest |xl\]|dmesg\]|ballastd\]|hotplug\])|\(d[1-9][0-9]*\)|Kernel panic|\(XEN\) .*(Panic|FATAL|Assertion)|BUG:|Oops")


# ------------------------------------------------------------------ newc cpio writer
class Cpio:
    def __init__(self):
        self.chunks = []
        self.ino = 1

    def _entry(self, name, mode, data=b"", nlink=1):
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join("%08X" % v for v in (
            self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name_b), 0))
        self.ino += 1
        rec = hdr.encode() + name_b
        rec += b"\0" * (-len(rec) % 4)
        rec += data + b"\0" * (-len(data) % 4)
        self.chunks.append(rec)

    def dir(self, name):
        self._entry(name, stat.S_IFDIR | 0o755, nlink=2)

    def file(self, name, data, mode=0o644):
        self._entry(name, stat.S_IFREG | mode, data)

    def bytes(self):
        self._entry("TRAILER!!!", 0)
        out = b"".join(self.chunks)
        return out + b"\0" * (-len(out) % 512)


def read(path):
    with open(path, "rb") as f:
        return f.read()


# ------------------------------------------------------------------ scenarios
class Scenario:
    def __init__(self, arg):
        path = arg if arg.endswith(".sh") or os.sep in arg else os.path.join(SCEN_DIR, arg + ".sh")
        if not os.path.isfile(path):
            sys.exit("run.py: no scenario %r (looked for %s)" % (arg, path))
        self.path = path
        self.name = os.path.basename(path)[:-3]
        self.timeout = DEFAULT_SCENARIO_TIMEOUT
        self.needs = set()
        for line in read(path).decode(errors="replace").splitlines():
            m = re.match(r"\s*#\s*timeout:\s*(\d+)", line)
            if m:
                self.timeout = int(m.group(1))
            m = re.match(r"\s*#\s*needs:\s*(.+)", line)
            if m:
                self.needs.update(re.split(r"[\s,]+", m.group(1).strip()))
        self.begun = self.ended = False
        self.rc = None
        self.ms = None
        self.checks = []  # (status, check, evidence)


def build_initrd(args, scenarios, workdir):
    lab, build = args.lab, args.build
    needs = set().union(*(s.needs for s in scenarios))
    c = Cpio()
    for d in ("lab", "lab/scenarios", "lab/hotplug"):
        c.dir(d)
    c.file("lab/lib.sh", read(os.path.join(LAB_SRC, "lib.sh")))
    # The vif and disk scripts xl runs for script=/lab/hotplug/NAME (here, not in the base image,
    # so that editing them needs no `make lab`).
    hp = os.path.join(LAB_SRC, "hotplug")
    for f in sorted(os.listdir(hp)):
        c.file("lab/hotplug/" + f, read(os.path.join(hp, f)), 0o755)
    c.file("lab/run-scenarios.sh", read(os.path.join(LAB_SRC, "run-scenarios.sh")), 0o755)
    c.file("lab/scenarios.list",
           "".join("%s %d\n" % (s.name, s.timeout) for s in scenarios).encode())
    # Every scenario file, not only those that run: a variant (smp-*) sources its base.
    for f in sorted(os.listdir(SCEN_DIR)):
        if f.endswith(".sh"):
            c.file("lab/scenarios/%s" % f, read(os.path.join(SCEN_DIR, f)), 0o755)
    # ...and those given by path from elsewhere (the bench), with the files beside them that
    # they source.
    for s in scenarios:
        where = os.path.dirname(os.path.abspath(s.path))
        if where != os.path.abspath(SCEN_DIR):
            c.file("lab/scenarios/%s.sh" % s.name, read(s.path), 0o755)
            for f in sorted(os.listdir(where)):
                if f.endswith(".sh") and f != os.path.basename(s.path):
                    c.file("lab/scenarios/%s" % f, read(os.path.join(where, f)), 0o755)
    ballast = os.path.join(build, "ballast")
    if os.path.isfile(ballast):
        c.file("lab/ballast", read(ballast), 0o755)
        cfg = os.path.join(build, "ballast.cfg")
        if os.path.isfile(cfg):
            c.file("lab/ballast.cfg", read(cfg))
    elif "ballast" in needs:
        sys.exit("run.py: %s is missing; run `make` first" % ballast)
    for tool in ("memtime", "ballastd"):  # dom0 tools (optional)
        path = os.path.join(build, tool)
        if os.path.isfile(path):
            c.file("lab/" + tool, read(path), 0o755)
    if "linux-guest" in needs:
        c.dir("lab/linux-guest")
        # Prefer the pre-extracted guest kernel (gzip'd ELF: libxenguest's gunzip under TCG is far
        # faster than the bzImage's xz); fall back to the bzImage itself.
        gk = os.path.join(lab, "linux-guest-kernel")
        c.file("lab/linux-guest/vmlinuz", read(gk if os.path.isfile(gk) else os.path.join(lab, "vmlinuz")))
        c.file("lab/linux-guest/initrd", read(os.path.join(lab, "linux-guest-initrd.cpio.gz")))
        c.file("lab/linux-guest.cfg", LINUX_GUEST_CFG.encode())
    initrd = os.path.join(workdir, "initrd.cpio")
    with open(initrd, "wb") as f:
        f.write(read(os.path.join(lab, "dom0-base.cpio")))
        f.write(c.bytes())
    return initrd


# ------------------------------------------------------------------ QEMU
def qemu_cmd(args, initrd):
    # dom0_max_vcpus=1: with a 2-vCPU dom0 under TCG, ~15% of `xl create` runs die of memory
    # corruption in xl (segfaults in libc/libgcc_s, robust-mutex assertion); 1 vCPU: 0 in 24.
    # spec-ctrl=eager-fpu: with Xen's lazy FPU switching under TCG, dom0 userland saw wrong
    # floating-point results and segfaults (xl, xenstore-read, awk) while a 4-vCPU guest ran:
    # scenario dom0-health, lazy 4 bad of ~530 rounds in three runs, eager 0 of 163.
    xen_cmdline = ("dom0_mem={m},max:{m} dom0_max_vcpus={v} spec-ctrl=eager-fpu console=com1 "
                   "com1=115200,8n1 loglvl=all guest_loglvl=all noreboot {x}").format(m=args.dom0_mem, v=args.dom0_vcpus,
                                                          x=args.xen_args).strip()
    dom0_cmdline = ("console=hvc0 rdinit=/init " + args.dom0_args).strip()
    for p in (os.path.join(args.lab, "vmlinuz"), initrd):
        if "," in p or " " in p:
            sys.exit("run.py: QEMU's -initrd cannot take paths with ',' or ' ': %s" % p)
    if args.kvm:
        accel = ["-accel", "kvm", "-cpu", "host"]
    else:
        accel = ["-accel", "tcg,thread=" + args.tcg_thread, "-cpu", "max,-smap,-smep,-pku,-la57"]
    cmd = ["qemu-system-x86_64"] + accel + [
        "-m", "2048", "-smp", "2", "-nographic", "-no-reboot", "-serial", "mon:stdio",
        "-kernel", os.path.join(args.lab, "xen"), "-append", xen_cmdline,
        "-initrd", "%s %s,%s" % (os.path.join(args.lab, "vmlinuz"), dom0_cmdline, initrd)]
    if args.disk:
        cmd += ["-drive", "file=%s,if=virtio,format=raw" % os.path.abspath(args.disk)]
    return cmd


def ask_xen(proc, keys):
    """Sends Xen debug keys over the serial line (input switched to Xen and back)."""
    try:
        proc.stdin.write(XEN_INPUT_SWITCH)
        proc.stdin.flush()
        time.sleep(0.5)
        for k in keys:
            proc.stdin.write(bytes([k]))
            proc.stdin.flush()
            time.sleep(2)
        proc.stdin.write(XEN_INPUT_SWITCH)
        proc.stdin.flush()
    except (BrokenPipeError, OSError):
        pass


def kill(proc):
    if proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenarios", nargs="+", metavar="SCENARIO")
    ap.add_argument("--dom0-mem", default="768M", help="dom0 memory (Xen dom0_mem), default 768M")
    ap.add_argument("--dom0-vcpus", type=int, default=1,
                    help="dom0 vCPUs (default 1: 2 makes xl crash randomly under TCG)")
    ap.add_argument("--disk", help="raw disk image attached as virtio (/dev/vda in dom0)")
    ap.add_argument("--timeout", type=float,
                    help="overall seconds (default 120 + sum of the scenarios' '# timeout:')")
    ap.add_argument("--keep-log", metavar="DIR", help="also copy the serial log into DIR")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the whole serial console")
    ap.add_argument("--kvm", action="store_true", help="use KVM (does not work on nested hosts)")
    ap.add_argument("--tcg-thread", choices=("multi", "single"), default="multi",
                    help="QEMU TCG threading (default multi)")
    ap.add_argument("--xen-args", default="", help="extra Xen command line")
    ap.add_argument("--dom0-args", default="", help="extra dom0 kernel command line")
    ap.add_argument("--lab", default=os.environ.get("LAB_DIR", os.path.join(REPO, ".lab")))
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    args = ap.parse_args()

    for f in ("xen", "vmlinuz", "dom0-base.cpio", "linux-guest-initrd.cpio.gz"):
        if not os.path.isfile(os.path.join(args.lab, f)):
            sys.exit("run.py: %s missing; run `make lab` first" % os.path.join(args.lab, f))
    if not shutil.which("qemu-system-x86_64"):
        sys.exit("run.py: qemu-system-x86_64 not found; run tests/lab/deps.sh")

    scenarios = [Scenario(a) for a in args.scenarios]
    names = [s.name for s in scenarios]
    if len(set(names)) != len(names):
        sys.exit("run.py: a scenario is named twice")
    by_name = {s.name: s for s in scenarios}
    tag = "+".join(names)
    workdir = os.path.join(args.build, "lab", tag)
    os.makedirs(workdir, exist_ok=True)
    logpath = os.path.join(args.build, "lab", tag + ".log")
    total = args.timeout or BASE_TIMEOUT + sum(s.timeout for s in scenarios)

    initrd = build_initrd(args, scenarios, workdir)
    cmd = qemu_cmd(args, initrd)
    out = sys.stdout
    out.write("lab: booting Xen for %s (timeout %d s, log %s)\n" % (" ".join(names), total, os.path.relpath(logpath)))
    out.flush()

    t0 = time.monotonic()
    log = open(logpath, "w", encoding="utf-8", errors="replace")
    log.write("# " + " ".join("'%s'" % a if " " in a else a for a in cmd) + "\n")
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    lines = queue.Queue()

    def reader():
        for raw in iter(proc.stdout.readline, b""):
            lines.put(raw)
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    current = None
    all_done_at = None
    timed_out = False
    tail = []
    last_line_at = t0
    dumps = 0
    while True:
        now = time.monotonic()
        if now - t0 > total:
            timed_out = True
            break
        if now - last_line_at > SILENCE_S and dumps < SILENCE_DUMPS and not all_done_at:
            dumps += 1
            last_line_at = now
            log.write("%7.2f @@LAB silent for %d s: asking Xen for q, r, d\n" % (now - t0, SILENCE_S))
            out.write("%7.2f lab: serial silent for %d s, asking Xen for its state (see log)\n" % (now - t0, SILENCE_S))
            out.flush()
            ask_xen(proc, b"qrd")
        if all_done_at and now - all_done_at > 30:
            break  # scenarios finished but the machine did not power off
        try:
            raw = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if raw is None:
            break
        last_line_at = time.monotonic()
        line = raw.decode("utf-8", errors="replace").replace("\r", "").rstrip("\n")
        stamp = "%7.2f " % (time.monotonic() - t0)
        log.write(stamp + line + "\n")
        log.flush()
        tail = (tail + [line])[-40:]
        m = MARKER.search(line)
        interesting = args.verbose or bool(m) or bool(INTEREST.search(line))
        if interesting:
            out.write(stamp + (line[m.start():] if m and not args.verbose else line) + "\n")
            out.flush()
        if not m:
            continue
        kind, rest = m.group(1), m.group(2)
        if kind == "BEGIN":
            current = by_name.get(rest.strip())
            if current:
                current.begun = True
        elif kind == "END":
            parts = rest.split()
            s = by_name.get(parts[0]) if parts else None
            if s:
                s.ended = True
                for p in parts[1:]:
                    if p.startswith("rc="):
                        s.rc = int(p[3:])
                    if p.startswith("ms="):
                        s.ms = int(p[3:])
            current = None
        elif kind == "RESULT":
            rm = re.match(r"(PASS|FAIL) (\S+)/(\S+) ?(.*)", rest)
            if rm:
                s = by_name.get(rm.group(2))
                if s:
                    s.checks.append((rm.group(1), rm.group(3), rm.group(4)))
        elif kind == "ALLDONE":
            all_done_at = time.monotonic()
    elapsed = time.monotonic() - t0
    kill(proc)
    log.close()
    if args.keep_log:
        os.makedirs(args.keep_log, exist_ok=True)
        shutil.copy(logpath, args.keep_log)

    out.write("lab: %s after %.1f s (QEMU exit %s); log: %s\n" % (
        "TIMEOUT" if timed_out else "boot finished", elapsed, proc.returncode, os.path.relpath(logpath)))
    if not any(s.begun for s in scenarios):
        out.write("lab: no scenario started; last console lines:\n")
        out.write("".join("  | %s\n" % l for l in tail[-25:]))

    passed = failed = 0
    for s in scenarios:
        results = list(s.checks)
        if not s.begun:
            results.append(("FAIL", "finished", "scenario never started (timeout=%s, see %s)" % (timed_out, logpath)))
        elif not s.ended:
            why = "lab timeout after %.0f s" % elapsed if timed_out else "no @@END marker"
            results.append(("FAIL", "finished", "scenario did not finish: " + why))
        elif s.rc == 143:
            results.append(("FAIL", "finished", "killed by in-dom0 timeout of %d s" % s.timeout))
        elif s.rc != 0 and not any(r[0] == "FAIL" for r in results):
            results.append(("FAIL", "exit", "scenario exited with rc=%s" % s.rc))
        elif s.ended and not results:
            results.append(("FAIL", "checks", "scenario reported no checks"))
        for st, check, ev in results:
            out.write("%s %s/%s: %s\n" % (st, s.name, check, ev))
            if st == "PASS":
                passed += 1
            else:
                failed += 1
    out.write("%d passed, %d failed\n" % (passed, failed))
    out.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
