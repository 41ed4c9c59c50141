#!/bin/bash
# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# CPU profile of one server configuration while fast clients download the
# large file over loopback: where does the server spend its CPU per GB?
#
#   bench/bgdeliver/profile-fast.sh [SERVER] [CLIENTS] [SECONDS]
#
# SERVER: stock, stock-sendfile, ours, ours-sendfile, nginx (default ours);
# CLIENTS default 1, SECONDS of profile default 8.  Needs linux-perf
# (Debian package), uses the software cpu-clock event (no hardware counters
# in a VM).  Prints the throughput, the server's CPU seconds per GB, the
# system calls per GB and the top symbols; perf.data is kept in
# build/bench/profile-SERVER-CLIENTS.data.  Server on 127.0.0.1:18680.

set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
server=${1:-ours} clients=${2:-1} secs=${3:-8}
port=18680
command -v perf >/dev/null || { echo "needs perf: apt-get install linux-perf" >&2; exit 1; }

out=$top/build/bench
mkdir -p "$out"
log=$out/profile-serve.log
"$here/run.sh" --serve "$server" --serve-time $((secs + 60)) --sndbuf 0 \
    --port $port --no-fast >"$log" 2>&1 &
serve=$!
client=""
cleanup() {
    [ -z "$client" ] || kill "$client" 2>/dev/null || true
    kill "$serve" 2>/dev/null || true
    wait "$serve" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

for _ in $(seq 600); do
    grep -q '^serving' "$log" && break
    kill -0 "$serve" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.1
done
pids=$(sed -n 's/^serving .* pids //p' "$log" | tr ' ' ',')
echo "server $server: pids $pids"

"$top/build/bench/slowread" --port $port --path /bench/big-1024m.bin \
    --conns "$clients" --repeat 0 --discard --duration $((secs + 4)) \
    >"$out/profile-client.out" &
client=$!
sleep 1
cpu() {   # CPU ticks of the server's processes (children included)
    local t=0 p
    for p in ${pids//,/ }; do
        [ -r /proc/$p/stat ] || continue
        t=$((t + $(awk '{sub(/.*\) /, ""); print $12+$13+$14+$15}' /proc/$p/stat)))
    done
    echo $t
}
c0=$(cpu)
perf record -e cpu-clock -F 1999 -g -p "$pids" -o "$out/profile-$server-$clients.data" \
    -- sleep "$secs" 2>/dev/null >/dev/null &
perfpid=$!
perf stat -e 'syscalls:sys_enter_read,syscalls:sys_enter_pread64,syscalls:sys_enter_writev,syscalls:sys_enter_sendfile64,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_futex,syscalls:sys_enter_lseek,syscalls:sys_enter_newfstat,syscalls:sys_enter_epoll_pwait' \
    -p "$pids" -o "$out/profile-$server-$clients.syscalls" -- sleep "$secs" 2>/dev/null || true
wait $perfpid || true
c1=$(cpu)
wait "$client" || true
client=""
read -r bytes elapsed <<<"$(sed -n 's/.* bytes=\([0-9]*\) .* elapsed=\([0-9.]*\) .*/\1 \2/p' "$out/profile-client.out")"
hz=$(getconf CLK_TCK)
python3 - "$bytes" "$elapsed" "$c0" "$c1" "$hz" "$secs" "$out/profile-$server-$clients.syscalls" <<'EOF'
import sys, re
b, el, c0, c1, hz, secs, sc = sys.argv[1:]
gb_s = int(b) / float(el) / 1e9
cpu_s = (int(c1) - int(c0)) / float(hz)
print("throughput %.2f GB/s over %.1f s; server CPU %.2f s in ~%s s = %.2f CPU-s per GB"
      % (gb_s, float(el), cpu_s, secs, cpu_s / (gb_s * float(secs))))
try:
    for line in open(sc):
        m = re.match(r"\s*([\d,]+)\s+syscalls:sys_enter_(\w+)", line)
        if m:
            n = int(m.group(1).replace(",", ""))
            if n:
                print("  %-12s %9d calls  %8.0f per GB" % (m.group(2), n,
                      n / (gb_s * float(secs))))
except OSError:
    pass
EOF
perf report -i "$out/profile-$server-$clients.data" --no-children -g none --sort dso,sym \
    --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -25
