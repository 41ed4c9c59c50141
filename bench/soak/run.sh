#!/bin/sh
# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Soak and failure test: starts the demo server (all three modules, HTTP and
# HTTPS on 127.0.0.1, two engine threads per child) in build/soak on two
# free ports, runs bench/soak/soak.py against it for SECONDS (default 120),
# then stops it by pid.  Exit status 0 when every check passed.
#
#   bench/soak/run.sh [SECONDS] [MPM] [soak.py options]
#
# e.g. `bench/soak/run.sh 60 event --only churn_download --restarts 12`.
#
# With a sanitizer build (`make SANITIZE=1`) the server runs with the
# sanitizer runtime preloaded, and a report in the error log fails the run.
# Not part of `make test`: it is long and loads the machine.
set -eu

seconds=${1:-120}
mpm=${2:-event}
[ $# -gt 2 ] && shift 2 || set --
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
httpd=$(apxs -q SBINDIR)/$(apxs -q TARGET)
demo=$top/build/soak
template=$top/build/soak.conf.in

[ -f build/mod_bgdeliver.so ] || make
if nm -D build/mod_bgdeliver.so 2>/dev/null | grep -q __asan_init; then
    BGD_SANITIZE_PRELOAD=$(gcc -print-file-name=libasan.so)
    export BGD_SANITIZE_PRELOAD
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port=$(free_port)
https_port=$(free_port)
while [ "$https_port" = "$port" ]; do https_port=$(free_port); done

# The demo's configuration, with what the soak wants to exercise as well:
# connections spread over two engine threads in each child, and a bounded
# socket send buffer (on loopback the kernel grows it to megabytes), so
# that a delivery lasts as long as its client reads, as over a network.
{
    cat t/demo/httpd.conf.in
    echo
    echo "# bench/soak/run.sh"
    echo "BgDeliverEngineThreads 2"
    echo "SendBufferSize 131072"
    echo "# The client's port, so that soak.py finds the line of a download."
    echo "LogFormat \"%h:%{remote}p %t \\\"%r\\\" %>s %b %D %X\" demo"
} > "$template"

stop() {
    DEMO_DIR=$demo sh t/demo/demo.sh stop "$httpd" "$port" "$https_port" "$mpm" \
        >/dev/null || true
}
trap stop EXIT INT TERM
DEMO_DIR=$demo DEMO_TEMPLATE=$template \
    sh t/demo/demo.sh start "$httpd" "$port" "$https_port" "$mpm" >/dev/null
echo "soak: $seconds s against $httpd ($mpm) on 127.0.0.1:$port and :$https_port${BGD_SANITIZE_PRELOAD:+, sanitizer runtime preloaded}"
rc=0
python3 bench/soak/soak.py --pid "$(cat "$demo/run/httpd.pid")" --demo "$demo" \
    --port "$port" --https-port "$https_port" --seconds "$seconds" \
    --mpm "$mpm" "$@" || rc=$?
exit $rc
