#!/bin/sh
# ballast keeps one address space (space 1) built but unpinned. A suspend must pin it (Xen's save
# code only canonicalises pinned page tables) and unpin it after: the suspend says "pinned 1 of 1",
# and after xl save + xl restore the space still verifies its 64 pattern pages through its own
# mappings (a new "aspace: ... verified" line, no MISMATCH).
# needs: ballast
# timeout: 200
. /lab/lib.sh

OURS=ballast       # domains this scenario may create: all destroyed at exit
IMAGES=            # save images to delete at exit
trap _scenario_exit EXIT
IMG=/tmp/unpinned.img
IMAGES=$IMG
aspace_re='aspace: space 1: 64 pages verified through its own mappings \(check [0-9]+\)'

expect_xl create create /lab/ballast.cfg || exit 1
ID1=$(domid ballast)
expect_console built ballast 'aspace: space 1 built with 64 pattern pages, left unpinned' 40 || exit 1
expect_console ready ballast 'control: watching control/shutdown' 20 || exit 1
if l=$(wait_console ballast "$aspace_re" 30); then
    pass aspace-before "$l"
    n0=$(printf '%s\n' "$l" | sed -n 's/.*(check \([0-9]*\)).*/\1/p')
else
    fail aspace-before "no aspace check line within 30 s of boot"; n0=0
fi

console_mark ballast
if timed_xl 120 save ballast "$IMG"; then
    pass save "xl save in $XL_MS ms, image $(file_size "$IMG") bytes"
    log "xl save wall $XL_MS ms, image $(file_size "$IMG") bytes"
else
    fail save "xl save rc=$_xrc after $XL_MS ms: $XL_OUT"; exit 1
fi
expect_console pinned-1-of-1 ballast 'suspend: pinned 1 of 1 address spaces' 5
expect_gone saved-gone 10 ballast

console_mark ballast
if timed_xl 120 restore "$IMG"; then
    pass restore "xl restore in $XL_MS ms"
    log "xl restore wall $XL_MS ms"
else
    fail restore "xl restore rc=$_xrc after $XL_MS ms: $XL_OUT"; exit 1
fi
rm -f "$IMG"
if l=$(wait_console ballast 'suspend: done: Resumed' 30); then
    pass done-resumed "$l"
    log "guest side: $(printf '%s\n' "$l" | done_figures)"
else
    fail done-resumed "no 'suspend: done: Resumed'; tail: $(console_text ballast | tail -n 5 | tr '\n' ' ')"
fi
console_mark ballast
if l=$(wait_console ballast "$aspace_re|aspace: MISMATCH" 30); then
    case $l in
    *MISMATCH*) fail aspace-after "$l" ;;
    *)
        n1=$(printf '%s\n' "$l" | sed -n 's/.*(check \([0-9]*\)).*/\1/p')
        if is_uint "$n1" && [ "$n1" -gt "${n0:-0}" ]; then pass aspace-after "$l (check $n0 before the save)"
        else fail aspace-after "$l: check number not above $n0"; fi ;;
    esac
else
    fail aspace-after "no aspace check line within 30 s of the resume; tail: $(console_text ballast | tail -n 5 | tr '\n' ' ')"
fi
no_damage no-mismatch ballast
running running ballast

destroy_gone destroy gone 15 ballast
