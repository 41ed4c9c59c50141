#!/bin/sh
# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Demo server: `make run` and `make stop` call
#
#   sh t/demo/demo.sh start|stop HTTPD PORT HTTPS_PORT MPM
#
# start: generates build/demo/ (config from t/demo/httpd.conf.in, logs,
#   pid file, a self-signed certificate, a 50 MB file and the /dialup/
#   picture), starts HTTPD with `-f` on that config, listening on
#   127.0.0.1:PORT and 127.0.0.1:HTTPS_PORT only, waits until it answers
#   and prints the URLs to try.  Refuses if a port is busy or a demo server
#   is already running.
# stop: stops the server whose pid is in build/demo/run/httpd.pid (and
#   nothing else) and waits until it has exited.
#
# Environment: DEMO_DIR (instead of build/demo; the test suite uses it),
# APXS (default: apxs), DEMO_TEMPLATE (a config template to use
# instead of t/demo/httpd.conf.in), BGD_SANITIZE_PRELOAD (set by
# `make SANITIZE=1`: the sanitizer runtime to preload into the server).

set -eu

die() { echo "demo: $*" >&2; exit 1; }

[ $# -eq 5 ] || die "usage: $0 start|stop HTTPD PORT HTTPS_PORT MPM"
action=$1 httpd=$2 port=$3 https_port=$4 mpm=$5

top=$(cd "$(dirname "$0")/../.." && pwd)
demo=${DEMO_DIR:-$top/build/demo}
conf=$demo/conf/httpd.conf
pidfile=$demo/run/httpd.pid
big_size=52428800                       # 50 MiB

# Prints the pid of the running demo server, or nothing.
running_pid() {
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    case $pid in ''|*[!0-9]*) return 0 ;; esac
    kill -0 "$pid" 2>/dev/null || return 0
    # Only ours: a recycled pid of some other process is left alone.
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-f $conf" || return 0
    echo "$pid"
}

stop() {
    pid=$(running_pid)
    if [ -z "$pid" ]; then
        if [ -e "$pidfile" ]; then
            echo "The demo server is not running (stale $pidfile removed)."
            rm -f "$pidfile"
        else
            echo "The demo server is not running."
        fi
        return 0
    fi
    kill -TERM "$pid"
    i=0
    while kill -0 "$pid" 2>/dev/null; do
        i=$((i + 1))
        [ "$i" -le 300 ] ||
            die "the demo server (pid $pid) did not exit within 30 s; see $demo/logs/error_log"
        sleep 0.1
    done
    echo "The demo server (pid $pid) has stopped."
}

# Succeeds when nothing listens on 127.0.0.1:$1 (binding it as httpd would).
port_free() {
    perl -MIO::Socket::INET -e 'exit !IO::Socket::INET->new(
        LocalAddr => "127.0.0.1", LocalPort => $ARGV[0],
        Proto => "tcp", Listen => 1, ReuseAddr => 1)' "$1"
}

check_port() {
    case $1 in ''|*[!0-9]*) die "port '$1' is not a number" ;; esac
    if [ "$1" -lt 1 ] || [ "$1" -gt 65535 ]; then die "port $1 is out of range"; fi
    port_free "$1" || {
        echo "demo: port 127.0.0.1:$1 is busy; choose another one, e.g." >&2
        echo "      make run PORT=$((port + 1)) HTTPS_PORT=$((https_port + 1))" >&2
        if command -v ss >/dev/null 2>&1; then
            ss -Hltnp "sport = :$1" >&2 || true
        fi
        exit 1
    }
}

start() {
    case $mpm in event|worker|prefork) ;;
        *) die "MPM must be event, worker or prefork (got '$mpm')" ;; esac
    if [ ! -f "$httpd" ] || [ ! -x "$httpd" ]; then
        die "no httpd binary at '$httpd' (is apache2-bin installed? try 'make deps')"
    fi
    apxs=${APXS:-apxs}
    libexecdir=$("$apxs" -q LIBEXECDIR 2>/dev/null) ||
        die "'$apxs -q LIBEXECDIR' failed (is apache2-dev installed?)"
    [ -f "$libexecdir/mod_mpm_$mpm.so" ] ||
        die "$libexecdir/mod_mpm_$mpm.so is missing"
    for m in bgdeliver dialup conntimes; do
        [ -f "$top/build/mod_$m.so" ] || die "build/mod_$m.so is missing: run 'make' first"
    done
    template=${DEMO_TEMPLATE:-$top/t/demo/httpd.conf.in}
    [ -f "$template" ] || die "no config template $template"

    pid=$(running_pid)
    [ -z "$pid" ] || die "a demo server is already running (pid $pid); 'make stop' first"
    [ "$port" != "$https_port" ] || die "PORT and HTTPS_PORT are both $port"
    check_port "$port"
    check_port "$https_port"

    # As root the children run as nobody: everything they serve must be
    # readable by nobody, which a checkout under /root is not.
    if [ "$(id -u)" = 0 ]; then
        user=nobody group=nogroup
        # shellcheck disable=SC2016 # expanded by the inner sh
        runuser -u "$user" -- sh -c 'test -r "$1" && test -x "$2"' sh \
            "$top/t/demo/htdocs/index.html" "$top/t/demo/cgi-bin/stream.cgi" ||
            die "$top is not readable by '$user' (the server's children run as $user when started as root): clone the project into a world-readable directory such as /srv or /opt"
    else
        user=$(id -un) group=$(id -gn)
    fi

    umask 022
    mkdir -p "$demo/conf" "$demo/logs" "$demo/run" "$demo/ssl" "$demo/big" "$demo/gen"
    chmod 755 "$top/build" "$demo" "$demo/conf" "$demo/logs" "$demo/run" "$demo/big" "$demo/gen"
    chmod 700 "$demo/ssl"
    # Runtime files the children may create live in run/ (as Debian's
    # /var/lock/apache2 belongs to www-data).
    [ "$(id -u)" != 0 ] || chown "$user:$group" "$demo/run"

    if [ "$(stat -c %s "$demo/big/big.bin" 2>/dev/null || echo 0)" != "$big_size" ]; then
        echo "Generating $demo/big/big.bin (50 MB) ..."
        head -c "$big_size" /dev/urandom > "$demo/big/big.bin.tmp"
        mv "$demo/big/big.bin.tmp" "$demo/big/big.bin"
    fi
    perl "$top/t/demo/modem-image.pl" "$demo/gen/modem.png"
    if [ ! -s "$demo/ssl/demo.crt" ] || [ ! -s "$demo/ssl/demo.key" ]; then
        echo "Generating a self-signed certificate for 127.0.0.1 ..."
        openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
            -subj "/CN=127.0.0.1" \
            -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
            -addext "basicConstraints=critical,CA:FALSE" \
            -addext "extendedKeyUsage=serverAuth" \
            -keyout "$demo/ssl/demo.key" -out "$demo/ssl/demo.crt" 2>/dev/null ||
            die "openssl could not create the demo certificate"
    fi
    printf '%s\n' 'text/html html' 'text/plain txt' 'image/png png' \
        'application/octet-stream bin' > "$demo/conf/mime.types"

    # '|' cannot occur in these values except in a path: refuse it there.
    case "$top$libexecdir" in *'|'*|*'&'*) die "paths with '|' or '&' are not supported" ;; esac
    {
        echo "# Generated by t/demo/demo.sh from $template:"
        echo "# edit that file instead, this one is rewritten by every 'make run'."
        echo "#"
        sed -e '/^[[:space:]]*#/b' \
            -e "s|@TOP@|$top|g" -e "s|@DEMO@|$demo|g" \
            -e "s|@LIBEXECDIR@|$libexecdir|g" -e "s|@MPM@|$mpm|g" \
            -e "s|@PORT@|$port|g" -e "s|@HTTPS_PORT@|$https_port|g" \
            -e "s|@USER@|$user|g" -e "s|@GROUP@|$group|g" \
            "$template"
    } > "$conf.tmp"
    if grep -n '^[^#]*@[A-Z_]*@' "$conf.tmp" >&2; then
        die "unknown placeholders left in $conf.tmp (above)"
    fi
    mv "$conf.tmp" "$conf"

    # `make SANITIZE=1 test` runs this with the sanitizer runtime to preload
    # into apache2, and into nothing else (curl hangs with it).
    preload=
    if [ -n "${BGD_SANITIZE_PRELOAD:-}" ]; then
        preload=LD_PRELOAD=$BGD_SANITIZE_PRELOAD
        ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:log_path=$demo/logs/asan}
        export ASAN_OPTIONS
    fi
    unset LD_PRELOAD
    out=$(env $preload "$httpd" -t -f "$conf" 2>&1) || {
        echo "$out" >&2
        die "the configuration test failed: $conf"
    }
    out=$(env $preload "$httpd" -f "$conf" -k start 2>&1) || {
        echo "$out" >&2
        die "$httpd did not start; see $demo/logs/error_log"
    }

    i=0
    until curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; do
        i=$((i + 1))
        if [ "$i" -gt 150 ] || { [ "$i" -gt 10 ] && [ -z "$(running_pid)" ]; }; then
            tail -n 20 "$demo/logs/error_log" >&2 2>/dev/null || true
            stop >/dev/null 2>&1 || true
            die "the demo server did not answer on 127.0.0.1:$port; see $demo/logs/error_log"
        fi
        sleep 0.1
    done

    h=http://127.0.0.1:$port s=https://127.0.0.1:$https_port
    cat <<EOF

Demo server running: pid $(running_pid), $mpm MPM, logs in $demo/logs/

  $h/                     index page
  $h/big/big.bin          50 MB delivered in the background (BgDeliver On)
  $h/dialup/              page + picture at V.92 modem speed (use a browser)
  $h/cgi-bin/stream.cgi   4 MB streamed by a CGI (?mb=1 .. ?mb=64), in the background
  $h/bgdeliver-status     background deliveries
  $h/conntimes-status     per-request phase timing
  $h/server-status        mod_status (ExtendedStatus On)
  $s/                    the same over TLS (self-signed: curl -k)

Try:
  curl --limit-rate 20k -o /dev/null $h/big/big.bin &      # a slow reader
  curl -s '$h/server-status?auto' | grep -E 'ServerMPM|BusyWorkers'
  curl -o /dev/null -w '%{time_total} s\n' $h/dialup/modem.png
  curl -k --limit-rate 50k -o /dev/null $s/cgi-bin/stream.cgi
  curl -s $h/bgdeliver-status; curl -s $h/conntimes-status

Stop it with: make stop
EOF
}

case $action in
    start) start ;;
    stop)  stop ;;
    *)     die "usage: $0 start|stop HTTPD PORT HTTPS_PORT MPM" ;;
esac
