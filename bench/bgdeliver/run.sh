#!/bin/bash
# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# mod_bgdeliver benchmark: stock Apache vs Apache + mod_bgdeliver vs nginx,
# slow readers (static, HTTPS, CGI) with a latency probe, and fast clients.
#
#   bench/bgdeliver/run.sh            full run (~15 min): results.md and
#                                     probe-p99.png in bench/bgdeliver/
#   bench/bgdeliver/run.sh --quick    ~3 min, 0 and 1000 readers only;
#                                     results in build/bench/bgdeliver/
#
#   bench/bgdeliver/run.sh --floor 800
#                                     what 800 idle keep-alive connections
#                                     cost stock Apache and nginx (HTTP,
#                                     HTTPS): conn-floor.md, under a minute
#
# Other options go to bench.py (--points 0,100,1000 --workloads static,tls
# --servers stock,ours --no-fast --window S --port P --work DIR --out DIR).
# BENCH_HTTPD_EXTRA="EnableMMAP Off" (say) adds directives to every Apache
# config of the run, for what-if comparisons.
# Private servers on 127.0.0.1:PORT and PORT+1 (default 18480), work files
# in /tmp/bgd-bench (a 1 GB file is kept there between runs), raw data in
# bench/results/raw/bgdeliver/.  Every process it starts is stopped by pid
# at the end, also on errors and Ctrl-C.  Needs root or the packages below.

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)

pkgs="apache2-bin apache2-dev nginx-light fcgiwrap gnuplot-nox libssl-dev
      gcc make openssl python3 iproute2 util-linux"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null |
        grep -q '^install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "bench: missing Debian packages:$missing" >&2
        echo "bench: install them as root: apt-get install$missing" >&2
        exit 1
    fi
    echo "bench: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# Installing nginx may have started Debian's own server: leave it alone,
# we only use our own ports.

apxs=${APXS:-$(command -v apxs || echo /usr/bin/apxs)}
httpd="$("$apxs" -q SBINDIR)/$("$apxs" -q TARGET)"
libexecdir=$("$apxs" -q LIBEXECDIR)

make -C "$top" --no-print-directory all >/dev/null
mkdir -p "$top/build/bench"
gcc -O2 -Wall -Wextra -o "$top/build/bench/slowread" "$here/slowread.c" \
    -lssl -lcrypto

# As many descriptors as this shell may have (1000 readers + the servers'
# own); kernel-wide limits are left alone.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt 4096 ]; then
    echo "bench: the descriptor limit $(ulimit -n) is too low for 1000 readers" >&2
    exit 1
fi

# The servers' children run as nobody when started as root: the work
# directory is created world-readable under /tmp; the module itself is
# loaded by the root parent.
exec /usr/bin/python3 "$here/bench.py" --slowread "$top/build/bench/slowread" \
    --httpd "$httpd" --libexecdir "$libexecdir" "$@"
