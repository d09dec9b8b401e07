#!/usr/bin/env python3
"""Aggregate the figures of tests/bench/bench.sh into a table, JSON and an SVG chart.

    python3 tests/bench/report.py [--log build/lab/bench.log] [--json build/bench.json]
                                  [--svg build/bench.svg]

Reads the `@@LAB bench: {"guest":..,"metric":..,"value":..,"run":..}` lines of the lab's serial
log (run.py writes it to build/lab/<scenario>.log), prints per metric the median and the spread
(min-max) of each guest and a ratio oriented so that >1 means ballast did better. Standard
library only. Exit status 1 if the log holds no figure at all.
"""
import argparse
import datetime
import json
import math
import os
import re
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUESTS = ("ballast", "linux-guest")

# metric -> (label, unit, better): "lower" means less is better (ratio linux/ballast),
# "higher" means more is better (ratio ballast/linux). Order = table order.
METRICS = [
    ("boot_first_line_ms", "boot: xl create -> first console line", "ms", "lower"),
    ("boot_ready_ms", "boot: xl create -> ready", "ms", "lower"),
    ("console_rtt_ms", "console round trip (idle)", "ms", "lower"),
    ("save_256_ms", "xl save @256 MiB", "ms", "lower"),
    ("image_256_mib", "save image @256 MiB", "MiB", "lower"),
    ("restore_256_ms", "xl restore @256 MiB", "ms", "lower"),
    ("restore_256_answer_ms", "restore @256 -> answering", "ms", "lower"),
    ("guest_suspend_resume_ms", "guest-side suspend+resume", "ms", "lower"),
    ("guest_suspend_ms", "guest-side suspend (to the hypercall)", "ms", "lower"),
    ("guest_resume_ms", "guest-side resume (from the hypercall)", "ms", "lower"),
    ("ckpt_ms", "xl save -c @256 MiB", "ms", "lower"),
    ("ckpt_answer_ms", "save -c -> answering again", "ms", "lower"),
    ("balloon_down_mibps", "balloon 256->64 MiB", "MiB/s", "higher"),
    ("balloon_64_reached_mib", "mem-set 64m: size reached", "MiB", "lower"),
    ("save_64_ms", "xl save after mem-set 64m", "ms", "lower"),
    ("image_64_mib", "save image after mem-set 64m", "MiB", "lower"),
    ("restore_64_ms", "xl restore after mem-set 64m", "ms", "lower"),
    ("restore_64_answer_ms", "restore (64m) -> answering", "ms", "lower"),
    ("balloon_up_mibps", "balloon 64->256 MiB", "MiB/s", "higher"),
    ("balloon_down_precise_mibps", "balloon 256->64 MiB, memtime (Xen count, 1 ms)", "MiB/s", "higher"),
    ("balloon_up_precise_mibps", "balloon 64->256 MiB, memtime (Xen count, 1 ms)", "MiB/s", "higher"),
    ("balloon_down_precise_ms", "balloon 256->64 MiB, memtime time", "ms", "lower"),
    ("balloon_up_precise_ms", "balloon 64->256 MiB, memtime time", "ms", "lower"),
    ("min_target_mib", "smallest mem-set target + save -c", "MiB", "lower"),
    ("min_boot_mib", "smallest memory= that boots + save -c", "MiB", "lower"),
    ("balloon_64_guest_ms", "balloon 256->64, guest's own time", "ms", "lower"),
]
# Small save images (bench.sh si_*): 256 MiB idle and with 128 MiB in use, ballast with the
# release switch on (default) and off (ballast.release=0), each against the same Linux figure.
# A fifth element names the Linux metric a row compares with, a sixth the ballast metric
# (default: the row's own name).
SMALL_IMAGE_WHAT = [
    ("image_mib", "save image", "MiB"),
    ("save_ms", "xl save", "ms"),
    ("restore_ms", "xl restore", "ms"),
    ("target_ms", "restore-to-target", "ms"),
    ("answer_ms", "restore-to-answering", "ms"),
]
LOADS = (("idle", "256 MiB idle"), ("used", "256 MiB, 128 used"))


def add_release_pairs(prefix, load, desc, whats):
    """For each (what, label, unit): a row with the suspend-time release on and one with it off
    (ballast.release=0), both compared with the same Linux figure."""
    for what, label, unit in whats:
        on = "%s_%s_%s" % (prefix, load, what)
        METRICS.append((on, "%s: %s, release on" % (desc, label), unit, "lower"))
        METRICS.append(("%s_%s_off_%s" % (prefix, load, what), "%s: %s, release=0" % (desc, label), unit, "lower",
                        on))


for _load, _desc in LOADS:
    add_release_pairs("si", _load, _desc, SMALL_IMAGE_WHAT)
    # the comparison: ballast's restore-to-target against Linux's plain xl restore
    METRICS.append(("si_%s_target_vs_restore" % _load, "%s: restore-to-target vs linux xl restore" % _desc, "ms",
                    "lower", "si_%s_restore_ms" % _load, "si_%s_target_ms" % _load))
    METRICS.append(("si_%s_release_ms" % _load, "%s: ballast's own release time" % _desc, "ms", "lower"))
    METRICS.append(("si_%s_repop_ms" % _load, "%s: ballast's restock, resume to all back" % _desc, "ms", "lower"))
    METRICS.append(("si_%s_release_us_per_mib" % _load, "%s: ballast's release at suspend" % _desc, "us/MiB",
                    "lower"))
# Live migration (bench.sh mig_*): xl migrate wall time, downtime seen by dom0's xl list poll, and
# console answer after xl migrate returns; ballast with the suspend-time release on and off.
MIGRATE_WHAT = [
    ("ms", "xl migrate", "ms"),
    ("down_ms", "migrate downtime (xl list poll)", "ms"),
    ("answer_ms", "migrate -> answering", "ms"),
]
for _load, _desc in LOADS:
    add_release_pairs("mig", _load, _desc, MIGRATE_WHAT)
    # ballast only: the guest's own suspend+resume inside the migration
    METRICS.append(("mig_%s_guest_ms" % _load, "%s: migrate, ballast's suspend+resume, release on" % _desc, "ms",
                    "lower"))
    METRICS.append(("mig_%s_off_guest_ms" % _load, "%s: migrate, ballast's suspend+resume, release=0" % _desc,
                    "ms", "lower"))
# Several vCPUs (bench.sh smp_guest): each guest idle at 256 MiB with vcpus=1 and vcpus=4.
for _n in (1, 4):
    _v = "%d vCPU%s" % (_n, "" if _n == 1 else "s")
    METRICS += [
        ("save_v%d_ms" % _n, "xl save, %s" % _v, "ms", "lower"),
        ("image_v%d_mib" % _n, "save image, %s" % _v, "MiB", "lower"),
        ("restore_v%d_ms" % _n, "xl restore, %s" % _v, "ms", "lower"),
        ("restore_v%d_answer_ms" % _n, "restore -> answering, %s" % _v, "ms", "lower"),
        ("guest_suspend_resume_v%d_ms" % _n, "guest-side suspend+resume, %s" % _v, "ms", "lower"),
        ("guest_suspend_v%d_ms" % _n, "guest-side suspend, %s" % _v, "ms", "lower"),
        ("guest_resume_v%d_ms" % _n, "guest-side resume, %s" % _v, "ms", "lower"),
    ]
METRICS += [
    ("mig_v4_ms", "xl migrate, 4 vCPUs", "ms", "lower"),
    ("mig_v4_down_ms", "migrate downtime (xl list poll), 4 vCPUs", "ms", "lower"),
    ("mig_v4_answer_ms", "migrate -> answering, 4 vCPUs", "ms", "lower"),
    ("mig_v4_guest_ms", "migrate, ballast's suspend+resume, 4 vCPUs", "ms", "lower"),
]
# The hypervisor's limit and the toolstack's floor (bench.sh limits_ballast), ballast only.
METRICS += [
    ("limit_bare_release_us_per_mib", "hypervisor limit: release, bare hypercalls", "us/MiB", "lower"),
    ("limit_ballast_release_us_per_mib", "same boot: ballast's release mechanism", "us/MiB", "lower"),
    ("limit_bare_unmap_us_per_mib", "  of which clearing the kernel mappings", "us/MiB", "lower"),
    ("limit_bare_decrease_us_per_mib", "  of which Xen freeing the frames (decrease)", "us/MiB", "lower"),
    ("limit_bare_populate_us_per_mib", "hypervisor limit: repopulate, bare hypercalls", "us/MiB", "lower"),
    ("limit_ballast_populate_us_per_mib", "same boot: ballast's repopulate mechanism", "us/MiB", "lower"),
    ("floor_mib", "toolstack floor: memory= (idle image size)", "MiB", "lower"),
    ("floor_image_mib", "toolstack floor: save image", "MiB", "lower"),
    ("floor_save_ms", "toolstack floor: xl save", "ms", "lower"),
    ("floor_restore_ms", "toolstack floor: xl restore", "ms", "lower"),
]
# ballastd (bench-daemon.sh): making room with the daemon and by hand, each guest's kernel; how
# closely ballast guests follow the daemon's targets while a memory hog runs (ballast only).
METRICS += [
    ("daemon_reserve512_ms", "ballastd reserve 512 (3 guests shared out)", "ms", "lower"),
    ("hand_reserve512_ms", "same by hand: xl mem-set each guest", "ms", "lower"),
    ("hog_follow_mean_mib", "hog: mean |size - target| per guest", "MiB", "lower"),
    ("hog_follow_max_mib", "hog: largest |size - target|", "MiB", "lower"),
    ("hog_grow_ms", "hog: 0 -> 450 MiB held", "ms", "lower"),
    ("hog_share_mib", "hog: its guest's target at the peak", "MiB", "higher"),
    ("hog_others_mib", "hog: the others' targets then", "MiB", "higher"),
    ("hog_flowback_ms", "hog released -> equal shares again", "ms", "lower"),
]
# PV disk and network (bench-pv.sh): sequential block speeds, and dom0's ping at 10/s across each
# kind of suspend: the first reply after xl returned, requests lost, the longest gap.
METRICS += [
    ("blk_write_mibps", "PV disk: sequential write + flush, 64 MiB", "MiB/s", "higher"),
    ("blk_read_mibps", "PV disk: sequential read, 64 MiB", "MiB/s", "higher"),
]
for _kind, _desc in (("sr", "save + restore"), ("ck", "checkpoint"), ("mg", "live migrate")):
    METRICS += [
        ("pv_%s_answer_ms" % _kind, "ping across %s: answered after xl returned" % _desc, "ms", "lower"),
        ("pv_%s_lost" % _kind, "ping across %s: requests lost (10/s)" % _desc, "", "lower"),
        ("pv_%s_gap_ms" % _kind, "ping across %s: longest gap without replies" % _desc, "ms", "lower"),
    ]
# The suspend event channel (bench.sh channel_ballast), ballast only: offered, and not offered
# (libxl's xenstore handshake).
CHANNEL_WHAT = [("ckpt_ms", "xl save -c idle"), ("save_ms", "xl save idle"), ("restore_ms", "xl restore idle"),
                ("mig_ms", "xl migrate idle")]
for _what, _label in CHANNEL_WHAT:
    METRICS.append(("chan_on_%s" % _what, "%s, suspend event channel" % _label, "ms", "lower"))
    METRICS.append(("chan_off_%s" % _what, "%s, xenstore handshake" % _label, "ms", "lower"))
# Ratios to those limits: (label, numerator metric of each guest, denominator metric of ballast's
# limit runs); 1.00 = at the limit, lower is better.
AGAINST_LIMITS = [
    ("release at suspend / hypervisor limit", "si_idle_release_us_per_mib", "limit_bare_release_us_per_mib"),
    ("release mechanism / limit (same boot)", "limit_ballast_release_us_per_mib", "limit_bare_release_us_per_mib"),
    ("repopulate mechanism / limit (same boot)", "limit_ballast_populate_us_per_mib",
     "limit_bare_populate_us_per_mib"),
    ("xl save idle / toolstack floor", "si_idle_save_ms", "floor_save_ms"),
    ("xl restore idle / toolstack floor", "si_idle_restore_ms", "floor_restore_ms"),
    ("restore-to-answering idle / floor's xl restore", "si_idle_answer_ms", "floor_restore_ms"),
    ("restore-to-target idle / floor's xl restore", "si_idle_target_ms", "floor_restore_ms"),
]
# The channel's effect: offered over not offered, same run; below 1.00 = the channel is faster.
CHANNEL_RATIOS = [("%s: channel / xenstore handshake" % _label, "chan_on_%s" % _what, "chan_off_%s" % _what)
                  for _what, _label in CHANNEL_WHAT]
LINE = re.compile(r"@@LAB bench: (\{.*\})\s*$")


def parse(path):
    figures, total = [], None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = LINE.search(line)
            if not m:
                continue
            try:
                d = json.loads(m.group(1))
            except ValueError:
                continue
            if "metric" in d and "guest" in d:
                figures.append(d)
            elif "total_ms" in d:
                total = d
    return figures, total


def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 100 or float(v).is_integer():
        return "%d" % round(v)
    return "%.1f" % v


def summarize(values):
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def median_of(raw, guest, metric):
    vals = [e["value"] for e in raw.get(guest, {}).get(metric, []) if isinstance(e["value"], (int, float))]
    return statistics.median(vals) if vals else None


def ratio_block(raw, spec):
    """Each (label, numerator, denominator): each guest's numerator median over ballast's
    denominator median."""
    out = []
    for label, num, den in spec:
        d = median_of(raw, "ballast", den)
        if not d:
            continue
        r = {g: (lambda n: n / d if n is not None else None)(median_of(raw, g, num)) for g in GUESTS}
        if r["ballast"] is None and r["linux-guest"] is None:
            continue
        out.append({"label": label, "numerator": num, "denominator": den, "ballast": r["ballast"],
                    "linux": r["linux-guest"]})
    return out


def git(*args):
    try:
        return subprocess.run(["git", "--no-optional-locks"] + list(args), cwd=REPO, capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def ratio_of(better, b, l):
    if not b or not l:
        return None
    bm, lm = b["median"], l["median"]
    if better == "lower":
        return lm / bm if bm > 0 else None
    return bm / lm if lm > 0 else None


def svg_chart(rows, title):
    """Horizontal bars of log(ratio) around 1: right/green = ballast better, left/red = worse."""
    rows = [r for r in rows if r["ratio"] is not None]
    lw, bw, rh, top = 300, 460, 22, 56
    w, h = lw + bw + 90, top + rh * max(len(rows), 1) + 50
    lim = max([1.0] + [abs(math.log10(r["ratio"])) for r in rows])
    lim = math.ceil(lim * 2) / 2 or 0.5
    x1 = lw + bw / 2

    def x(ratio):
        return x1 + (math.log10(ratio) / lim) * (bw / 2)

    esc = lambda s: s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
           'font-size="12">' % (w, h),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="20" font-size="14" font-weight="bold">%s</text>' % (10, esc(title)),
           '<text x="%d" y="38" fill="#555">ratio, log scale; &gt;1 (right, green) = ballast better, '
           '&lt;1 (left, red) = Linux better</text>' % 10]
    # grid at 1, 2 and 5 times the powers of ten inside the range
    ticks = sorted({m * 10 ** e for e in range(-int(lim) - 1, int(lim) + 2) for m in (1, 2, 5)
                    if abs(math.log10(m * 10 ** e)) <= lim + 1e-9})
    for t in ticks:
        gx = x(t)
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s"/>' % (
            gx, top - 4, gx, h - 40, "#333" if t == 1 else "#ddd"))
        out.append('<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%g</text>' % (gx, h - 24, t))
    for i, r in enumerate(rows):
        y = top + i * rh
        xr = x(r["ratio"])
        x0, x2 = min(x1, xr), max(x1, xr)
        color = "#2e8b57" if r["ratio"] >= 1 else "#c0392b"
        out.append('<text x="%d" y="%d" text-anchor="end">%s</text>' % (lw - 8, y + 14, esc(r["label"])))
        out.append('<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"/>' % (
            x0, y + 3, max(x2 - x0, 1), rh - 6, color))
        tx, anchor = (x2 + 4, "start") if r["ratio"] >= 1 else (x0 - 4, "end")
        out.append('<text x="%.1f" y="%d" text-anchor="%s">%s</text>' % (tx, y + 14, anchor,
                                                                          "%.2f" % r["ratio"]))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log", default=os.path.join(REPO, "build", "lab", "bench.log"))
    ap.add_argument("--json", default=os.path.join(REPO, "build", "bench.json"))
    ap.add_argument("--svg", default=os.path.join(REPO, "build", "bench.svg"))
    args = ap.parse_args()
    if not os.path.isfile(args.log):
        sys.exit("report.py: %s missing; run `make bench`" % args.log)
    figures, total = parse(args.log)
    if not figures:
        sys.exit("report.py: no bench figures in %s" % args.log)

    known = [m[0] for m in METRICS]
    defs = {m[0]: m for m in METRICS}
    for f in figures:  # metrics bench.sh emits that this table does not know yet
        if f["metric"] not in defs:
            defs[f["metric"]] = (f["metric"], f["metric"], "", "lower")
            known.append(f["metric"])
    # the metric each row takes from each guest (a row may compare with another Linux metric)
    source = {name: {"ballast": defs[name][5] if len(defs[name]) > 5 else name,
                     "linux-guest": defs[name][4] if len(defs[name]) > 4 else name}
              for name in known}
    raw = {g: {} for g in GUESTS}
    notes = []
    for f in figures:
        g = f["guest"]
        raw.setdefault(g, {}).setdefault(f["metric"], []).append({"run": f.get("run"), "value": f.get("value")})
        if f.get("value") is None:
            notes.append("%s %s (run %s): %s" % (g, f["metric"], f.get("run"), f.get("note", "no value")))

    rows = []
    for name in known:
        label, unit, better = defs[name][1:4]
        src = source[name]
        if not any(src[g] in raw.get(g, {}) for g in GUESTS):
            continue
        s = {}
        for g in GUESTS:
            vals = [e["value"] for e in raw.get(g, {}).get(src[g], []) if isinstance(e["value"], (int, float))]
            s[g] = summarize(vals)
        r = ratio_of(better, s["ballast"], s["linux-guest"])
        row = {"metric": name, "label": label, "unit": unit, "better": better,
               "ballast": s["ballast"], "linux": s["linux-guest"], "ratio": r,
               "ratio_is": "linux/ballast" if better == "lower" else "ballast/linux",
               "attempts": {g: len(raw.get(g, {}).get(src[g], [])) for g in GUESTS}}
        if src["linux-guest"] != name:
            row["linux_metric"] = src["linux-guest"]
        if src["ballast"] != name:
            row["ballast_metric"] = src["ballast"]
        rows.append(row)

    def cell(s, attempts):
        if not s:
            return "failed" if attempts else "-"
        txt = "%s [%s-%s]" % (fmt(s["median"]), fmt(s["min"]), fmt(s["max"]))
        if s["n"] < attempts:
            txt += " (%d/%d)" % (s["n"], attempts)
        return txt

    head = ("metric", "unit", "ballast median [min-max]", "linux median [min-max]", "ratio", "ratio is")
    table = [head]
    for r in rows:
        table.append((r["label"], r["unit"], cell(r["ballast"], r["attempts"]["ballast"]),
                      cell(r["linux"], r["attempts"]["linux-guest"]),
                      "-" if r["ratio"] is None else "%.2f" % r["ratio"],
                      r["ratio_is"] + (" (lower is better)" if r["better"] == "lower" else " (higher is better)")))
    widths = [max(len(t[i]) for t in table) for i in range(len(head))]
    lines = []
    for i, t in enumerate(table):
        lines.append("  ".join(c.ljust(widths[j]) if j in (0, 1, 5) else c.rjust(widths[j])
                               for j, c in enumerate(t)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * wd for wd in widths))
    runs = max([f.get("run") or 0 for f in figures] + [0])
    commit = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    date = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    print("bench: %d run(s), ratio > 1 = ballast better; commit %s%s; log %s" % (
        runs, commit[:12] or "?", " (dirty tree)" if dirty else "", os.path.relpath(args.log)))
    print("\n".join(lines))
    if notes:
        print("missing figures:")
        for n in notes:
            print("  " + n)
    limits = ratio_block(raw, AGAINST_LIMITS)
    channel = ratio_block(raw, CHANNEL_RATIOS)
    for block, title in ((limits, "against the limits (median over median; 1.00 = at the limit, lower is better):"),
                         (channel, "suspend event channel (median over median; < 1.00 = the channel is faster):")):
        if not block:
            continue
        print(title)
        wd = max(len(x["label"]) for x in block)
        for x in block:
            print("  %s  ballast %s  linux %s" % (x["label"].ljust(wd), "%.2f" % x["ballast"] if x["ballast"] else "-",
                                                  "%.2f" % x["linux"] if x["linux"] else "-"))
    if total:
        print("bench time in dom0: %.1f s" % (total["total_ms"] / 1000.0))

    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    doc = {"date": date, "commit": commit, "dirty": dirty, "runs": runs, "log": os.path.relpath(args.log, REPO),
           "dom0_total_ms": total["total_ms"] if total else None,
           "ratio_meaning": "> 1 means ballast did better (lower time/size, higher rate)",
           "metrics": rows, "against_limits": limits, "suspend_channel": channel, "raw": raw, "missing": notes}
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=False)
        f.write("\n")
    with open(args.svg, "w") as f:
        f.write(svg_chart(rows, "ballast vs Linux PV guest, %s, %d run(s), commit %s" % (
            date[:10], runs, commit[:12] or "?")))
    print("wrote %s and %s" % (os.path.relpath(args.json), os.path.relpath(args.svg)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
