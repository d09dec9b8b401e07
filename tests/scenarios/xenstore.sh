#!/bin/sh
# ballast's data publisher and echo task seen from dom0 through the real xenstored:
# data/uptime grows, data/free_kb and data/tasks are plausible numbers, and a unique value
# written to data/echo comes back on ballast's console.
# needs: ballast
# timeout: 90
. /lab/lib.sh

# (xs_read/xs_write/xs_wait_uint come from lib.sh and take a domain name or domid first)
OURS=ballast       # destroyed at exit by lib.sh's _scenario_exit
IMAGES=
trap _scenario_exit EXIT

expect_xl create create /lab/ballast.cfg || exit 1
DOMID=$(domid ballast)
expect_console ready ballast 'control: watching control/shutdown' 30 || exit 1

# ---- data/uptime grows
uptime_grows uptime-grows "$DOMID"

# ---- data/free_kb: positive, below the 256 MiB the domain has
f=$(xs_read "$DOMID" data/free_kb)
if is_uint "$f" && [ "$f" -gt 0 ] && [ "$f" -le 262144 ]; then
    pass free-kb "data/free_kb = $f (0 < x <= 262144)"
else
    fail free-kb "data/free_kb = '$f', expected 0 < x <= 262144"
fi

# ---- data/tasks: at least the 6 documented task kinds
n=$(xs_read "$DOMID" data/tasks)
if is_uint "$n" && [ "$n" -ge 6 ]; then
    pass tasks "data/tasks = $n (>= 6)"
else
    fail tasks "data/tasks = '$n', expected >= 6"
fi

# ---- data/echo comes back on the console
val="lab-$$-$(now_ms)"
console_mark ballast
if out=$(xs_write "$DOMID" data/echo "$val"); then
    expect_console echo ballast "echo: $val\$" 10
else
    fail echo "xenstore-write data/echo failed: $out"
fi
# a second, different value is echoed too (the watch re-arms)
val2="second $val with spaces"
console_mark ballast
if out=$(xs_write "$DOMID" data/echo "$val2"); then
    expect_console echo-again ballast "echo: $val2\$" 10
else
    fail echo-again "xenstore-write data/echo failed: $out"
fi

# ---- clean up
destroy_gone destroy gone 15 ballast
