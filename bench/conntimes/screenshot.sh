#!/bin/sh
# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Renders the conntimes-status page in headless Chromium and saves
# bench/results/conntimes-status.png.  A private apache2 (event, 2 x 4
# threads, 10 s series intervals) on 127.0.0.1 gets DURATION seconds of
# mixed traffic first (waves that queue, a slow access checker, static
# files, an escaping probe), then Chromium takes the screenshot; the server
# is stopped by its pid.  Needs: chromium, curl, the modules built
# (make all build/t/mod_ct_test.so).
set -eu

DURATION=${1:-120}
top=$(cd "$(dirname "$0")/../.." && pwd)
d=$top/bench/results/raw/screenshot
out=$top/bench/results/conntimes-status.png
httpd=$(apxs -q SBINDIR)/$(apxs -q TARGET)
libexec=$(apxs -q LIBEXECDIR)
command -v chromium >/dev/null || { echo "apt-get install chromium"; exit 1; }

rm -rf "$d"
mkdir -p "$d/htdocs"
head -c 20000 /dev/zero | tr '\0' 'x' > "$d/htdocs/page.html"
chmod -R a+rX "$d"
port=$(perl -MIO::Socket::INET -e 'print IO::Socket::INET->new(LocalAddr =>
       "127.0.0.1", LocalPort => 0, Listen => 1)->sockport')
user=""
[ "$(id -u)" = 0 ] && user="User nobody
Group nogroup"
cat > "$d/httpd.conf" <<CONF
ServerRoot "$d"
ServerName 127.0.0.1
Listen 127.0.0.1:$port
PidFile "$d/httpd.pid"
ErrorLog "$d/error_log"
DefaultRuntimeDir "$d"
$user
LoadModule mpm_event_module $libexec/mod_mpm_event.so
LoadModule authz_core_module $libexec/mod_authz_core.so
LoadModule mime_module $libexec/mod_mime.so
LoadModule conntimes_module $top/build/mod_conntimes.so
LoadModule ct_test_module $top/build/t/mod_ct_test.so
TypesConfig /etc/mime.types
StartServers 2
ServerLimit 2
ThreadsPerChild 4
MaxRequestWorkers 8
MinSpareThreads 4
MaxSpareThreads 8
ConntimesSeriesInterval 10
ConntimesSeriesSlots 60
ConntimesSlowThreshold 400ms
DocumentRoot "$d/htdocs"
<Directory "$d/htdocs">
    Require all granted
</Directory>
<Location /app>
    SetHandler ct-sleep
</Location>
<Location /login>
    SetHandler ct-sleep
    CtTestAccessDelay 40
</Location>
<Location "/odd">
    SetHandler "x-<b>odd</b>&handler"
</Location>
<Location /conntimes-status>
    SetHandler conntimes-status
    ConntimesRecord Off
    ConntimesAllowReset On
</Location>
CONF

stop() {
    [ -s "$d/httpd.pid" ] || return 0
    pid=$(cat "$d/httpd.pid")
    kill -TERM "$pid" 2>/dev/null || true
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$pid" 2>/dev/null || true
}
trap stop EXIT INT TERM
"$httpd" -d "$d" -f "$d/httpd.conf" -k start
sleep 1

base=http://127.0.0.1:$port
end=$(( $(date +%s) + DURATION ))
n=0
while [ "$(date +%s)" -lt "$end" ]; do
    n=$((n + 1))
    # A wave of 12 slow requests on 8 threads queues every fourth round.
    if [ $((n % 4)) = 0 ]; then
        for i in 1 2 3 4 5 6 7 8 9 10 11 12; do
            curl -s -o /dev/null "$base/app?ms=$((150 + i * 20))" &
        done
    fi
    for u in "$base/page.html" "$base/page.html" "$base/login?ms=20" \
             "$base/app?ms=$((n % 7 * 15))" "$base/odd"; do
        curl -s -o /dev/null "$u"
    done &
    [ $((n % 10)) = 0 ] &&
        curl -s -o /dev/null "$base/app/%3Cscript%3Ealert(1)%3C/script%3E?ms=420" &
    sleep 1
    wait
done

udir=$(mktemp -d)
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$udir" --hide-scrollbars --window-size=1500,2600 \
    --screenshot="$out" "$base/conntimes-status" 2>/dev/null
rm -rf "$udir"
ls -l "$out"
