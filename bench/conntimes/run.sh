#!/bin/sh
# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Overhead of mod_conntimes: wrk against two private apache2 (event MPM) on
# 127.0.0.1 serving the same small static file, one plain with the combined
# log format, one with mod_conntimes loaded and its "conntimes" LogFormat.
# Runs are interleaved (A B A B ...) in one session so that drifts of the
# machine hit both alike.  Bounded: ROUNDS x 2 x DURATION seconds plus
# start-up; both servers are stopped by pid at the end.
#
#   bench/conntimes/run.sh [ROUNDS] [DURATION] [CONNECTIONS]
#
# What-ifs for the module's side only: BENCH_CT_FORMAT names its LogFormat
# (default conntimes; "combined" isolates the cost of the longer log line;
# the results then go to conntimes-bench-<format>.txt) and BENCH_CT_EXTRA is
# appended to its configuration (for example "ConntimesKernelTimestamps
# Off"); BENCH_CT_TAG is added to the name of the results file.  Both
# servers: BENCH_CT_BOTH is appended to both configurations (for example
# "BufferedLogs On") and BENCH_CT_LOGDIR puts both access logs in that
# directory (for example on a tmpfs) instead of next to each configuration.
# BENCH_CT_MODULE=0 leaves the module out of the second server, which then
# differs from the plain one only in BENCH_CT_FORMAT and BENCH_CT_EXTRA:
# what a log format costs stock Apache.
#
# Needs: apache2 (apache2-bin), wrk, the module built (make).  Writes
# bench/results/conntimes-bench.txt and raw wrk output under
# bench/results/raw/conntimes/.
#
#   bench/conntimes/run.sh --callgrind [SECONDS]
#
# counts instead the instructions that each server runs per request under
# valgrind's callgrind (one process, -X, SECONDS of wrk -c4 each, default
# 15): the same configurations, a figure that the machine's load does not
# move, which says what the module adds to a request's own work (user space
# only: not the kernel's side of the system calls).  Needs valgrind.
# Writes bench/results/conntimes-callgrind.txt (with BENCH_CT_FORMAT and
# BENCH_CT_TAG in its name as above).
set -eu

mode=wrk
if [ "${1:-}" = --callgrind ]; then
    mode=callgrind
    shift
    CG_SECONDS=${1:-15}
    set --
fi
ROUNDS=${1:-5}
DURATION=${2:-10}
CONNS=${3:-16}
top=$(cd "$(dirname "$0")/../.." && pwd)
raw=${BENCH_CT_RAW:-$top/bench/results/raw/conntimes}
out=$top/bench/results/conntimes-bench${BENCH_CT_FORMAT:+-$BENCH_CT_FORMAT}${BENCH_CT_TAG:+-$BENCH_CT_TAG}.txt
httpd=$(apxs -q SBINDIR)/$(apxs -q TARGET)
libexec=$(apxs -q LIBEXECDIR)

[ $mode = wrk ] || out=$top/bench/results/conntimes-callgrind${BENCH_CT_FORMAT:+-$BENCH_CT_FORMAT}${BENCH_CT_TAG:+-$BENCH_CT_TAG}.txt

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk"; exit 1; }
[ $mode = wrk ] || command -v valgrind >/dev/null \
    || { echo "valgrind is missing: apt-get install valgrind"; exit 1; }
[ -f "$top/build/mod_conntimes.so" ] || { echo "run make first"; exit 1; }

# CPU pinning keeps the server and the load generator from fighting over
# the same core (2-core machines); skipped where taskset is missing.
pin_srv=""; pin_wrk=""
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    pin_srv="taskset -c 0"; pin_wrk="taskset -c 1"
fi

free_port() {
    perl -MIO::Socket::INET -e 'my $s = IO::Socket::INET->new(LocalAddr =>
        "127.0.0.1", LocalPort => 0, Listen => 1, ReuseAddr => 1) or die;
        print $s->sockport'
}

rm -rf "$raw"
mkdir -p "$raw/htdocs"
if [ -n "${BENCH_CT_LOGDIR:-}" ]; then
    mkdir -p "$BENCH_CT_LOGDIR"
    rm -f "$BENCH_CT_LOGDIR/plain.access_log" "$BENCH_CT_LOGDIR/conntimes.access_log"
fi
head -c 1024 /dev/zero | tr '\0' 'x' > "$raw/htdocs/small.txt"
chmod -R a+rX "$raw"

write_conf() { # name port with_module
    d=$raw/$1
    mkdir -p "$d"
    user=""
    [ "$(id -u)" = 0 ] && user="User nobody
Group nogroup"
    mod=""
    extra=""
    fmt=combined
    if [ "$3" = 1 ]; then
        [ "${BENCH_CT_MODULE:-1}" = 0 ] ||
            mod="LoadModule conntimes_module $top/build/mod_conntimes.so"
        fmt=${BENCH_CT_FORMAT:-conntimes}
        extra=${BENCH_CT_EXTRA:-}
    fi
    cat > "$d/httpd.conf" <<CONF
ServerRoot "$d"
ServerName 127.0.0.1
Listen 127.0.0.1:$2
PidFile "$d/httpd.pid"
ErrorLog "$d/error_log"
DefaultRuntimeDir "$d"
LogLevel info
$user
LoadModule mpm_event_module $libexec/mod_mpm_event.so
LoadModule authz_core_module $libexec/mod_authz_core.so
LoadModule mime_module $libexec/mod_mime.so
$mod
TypesConfig /etc/mime.types
StartServers 2
ServerLimit 2
ThreadsPerChild 25
MaxRequestWorkers 50
MinSpareThreads 25
MaxSpareThreads 50
KeepAlive On
MaxKeepAliveRequests 0
DocumentRoot "$raw/htdocs"
<Directory "$raw/htdocs">
    Require all granted
</Directory>
LogFormat "%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-Agent}i\"" combined
CustomLog "${BENCH_CT_LOGDIR:-$d}/$1.access_log" $fmt
${BENCH_CT_BOTH:-}
$extra
CONF
}

pa=$(free_port); pb=$(free_port)
while [ "$pb" = "$pa" ]; do pb=$(free_port); done
write_conf plain "$pa" 0
write_conf conntimes "$pb" 1

stop() {
    for n in plain conntimes; do
        f=$raw/$n/httpd.pid
        [ -s "$f" ] || continue
        pid=$(cat "$f")
        kill -TERM "$pid" 2>/dev/null || true
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do
            sleep 0.1; i=$((i + 1))
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
}
trap stop EXIT INT TERM

if [ $mode = callgrind ]; then
    # One process each (-X), in turn.  As root, valgrind runs as nobody
    # from the start: a server that switched users could not write its
    # profile.  Only what runs inside ap_run_process_connection() counts
    # (the requests, not start-up and shutdown).
    chmod -R a+rwX "$raw"
    as_user=""
    [ "$(id -u)" = 0 ] &&
        as_user="setpriv --reuid=nobody --regid=nogroup --clear-groups"
    for n in plain conntimes; do
        [ $n = plain ] && port=$pa || port=$pb
        $as_user valgrind --tool=callgrind \
            --callgrind-out-file="$raw/$n.callgrind" \
            --toggle-collect=ap_run_process_connection \
            "$httpd" -X -d "$raw/$n" -f "$raw/$n/httpd.conf" \
            > "$raw/$n.valgrind.txt" 2>&1 &
        vpid=$!
        i=0
        until perl -MIO::Socket::INET -e 'IO::Socket::INET->new(
                PeerAddr => "127.0.0.1:'"$port"'") or exit 1' 2>/dev/null; do
            i=$((i + 1))
            [ $i -lt 300 ] || {
                echo "$n did not start under valgrind"
                kill -TERM $vpid 2>/dev/null
                exit 1
            }
            sleep 0.1
        done
        wrk -t1 -c4 -d"$CG_SECONDS"s "http://127.0.0.1:$port/small.txt" \
            > "$raw/$n.callgrind-wrk.txt" 2>&1
        kill -TERM $vpid
        wait $vpid || true
        callgrind_annotate "$raw/$n.callgrind" 2>/dev/null \
            > "$raw/$n.callgrind-self.txt" || true
    done
    perl - "$raw" "$CG_SECONDS" > "$out" <<'PERL'
my ($raw, $secs) = @ARGV;
my %r;
for my $n (qw(plain conntimes)) {
    # Callgrind's format: "fn=(id) name" / "cfn=(id) name" name an id the
    # first time; "calls=N ..." follows a cfn line.
    open my $fh, '<', "$raw/$n.callgrind" or die "$raw/$n.callgrind: $!";
    my (%name, $callee, $total);
    while (<$fh>) {
        if (my ($c, $id, $fn) = /^(c?)fn=\((\d+)\)(?: (.*))?$/) {
            $name{$id} = $fn if defined $fn;
            $callee = $c ? $name{$id} : undef;
        }
        elsif (/^calls=(\d+)/ && defined $callee) {
            $r{$n}{calls}{$callee} += $1;
        }
        elsif (/^(?:summary|totals): (\d+)/) {
            $total = $1;
        }
    }
    $r{$n}{req} = $r{$n}{calls}{ap_run_log_transaction}
        or die "$n: no request logged under callgrind\n";
    $r{$n}{ir} = $total / $r{$n}{req};
    open my $self, '<', "$raw/$n.callgrind-self.txt" or next;
    while (<$self>) {
        my ($ir, $fn) = /^\s*([\d,]+)\s+\([^)]*\)\s+\S+:(\S+) \[\S*mod_conntimes\.so\]/
            or next;
        $ir =~ tr/,//d;
        $r{$n}{module} += $ir / $r{$n}{req};
        $r{$n}{fn}{$fn} += $ir / $r{$n}{req};
    }
}
printf "mod_conntimes: instructions per request under callgrind (user space\n"
     . "inside ap_run_process_connection), wrk -t1 -c4 -d%ds each, 1 KB static\n"
     . "file, event MPM, one process (-X); %s: LogFormat %s%s\n\n", $secs,
       ($ENV{BENCH_CT_MODULE} // 1) ? 'module side' : 'second server, without the module',
       $ENV{BENCH_CT_FORMAT} || 'conntimes',
       $ENV{BENCH_CT_EXTRA} ? ", with \"$ENV{BENCH_CT_EXTRA}\"" : '';
printf "%-10s %9s %12s\n", 'server', 'requests', 'Ir/request';
printf "%-10s %9d %12.0f\n", $_, $r{$_}{req}, $r{$_}{ir} for qw(plain conntimes);
printf "\nthe module's server runs %+.0f instructions per request (%+.2f%%);\n"
     . "the module's own functions %.0f of them:\n",
       $r{conntimes}{ir} - $r{plain}{ir},
       100 * ($r{conntimes}{ir} / $r{plain}{ir} - 1), $r{conntimes}{module} // 0;
my $fn = $r{conntimes}{fn} || {};
my @top = sort { $fn->{$b} <=> $fn->{$a} } keys %$fn;
splice @top, 12 if @top > 12;
printf "  %6.0f  %s\n", $fn->{$_}, $_ for @top;
PERL
    cat "$out"
    exit 0
fi

$pin_srv "$httpd" -d "$raw/plain" -f "$raw/plain/httpd.conf" -k start
$pin_srv "$httpd" -d "$raw/conntimes" -f "$raw/conntimes/httpd.conf" -k start
sleep 1

# CPU time (clock ticks) used by a server's parent and children: the cost
# per request is robust against other load on the machine, throughput is not.
cpu_ticks() {
    pid=$(cat "$raw/$1/httpd.pid")
    for p in $pid $(pgrep -P "$pid"); do
        awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || true
    done | awk '{ s += $1 } END { print s + 0 }'
}

run() { # name port round
    before=$(cpu_ticks "$1")
    $pin_wrk wrk -t1 -c"$CONNS" -d"$DURATION"s --latency \
        "http://127.0.0.1:$2/small.txt" > "$raw/$1.$3.txt" 2>&1
    echo "cpu_ticks $(( $(cpu_ticks "$1") - before )) hz $(getconf CLK_TCK)" \
        >> "$raw/$1.$3.txt"
}

# Warm-up, not counted.
run plain "$pa" warm; run conntimes "$pb" warm
r=1
while [ $r -le "$ROUNDS" ]; do
    if [ $((r % 2)) = 1 ]; then
        run plain "$pa" $r; run conntimes "$pb" $r
    else
        run conntimes "$pb" $r; run plain "$pa" $r
    fi
    r=$((r + 1))
done

# Where the module's own code stands in the server's CPU profile: steadier
# than wall-clock ratios on a shared machine.  Both servers are profiled
# alike (5 s under the same load, 10,000 samples a second), so that the
# report can also say which functions take more time per request on the
# module's server, and which less.  Needs perf and root; the servers are
# pinned, so CPU 0 is the server.
profile=""
if command -v perf >/dev/null && [ "$(id -u)" = 0 ] && [ -n "$pin_srv" ]; then
    for n in plain conntimes; do
        [ $n = plain ] && port=$pa || port=$pb
        $pin_wrk wrk -t1 -c"$CONNS" -d8s "http://127.0.0.1:$port/small.txt" \
            > "$raw/$n.perf-load.txt" 2>&1 &
        sleep 2
        perf record -q -F 10000 -C 0 -o "$raw/$n.perf.data" -- sleep 5 \
            >/dev/null 2>&1 || true
        wait
        perf report -i "$raw/$n.perf.data" --no-children --sort dso,sym -q -n \
            2>/dev/null > "$raw/$n.perf-symbols.txt" || true
    done
    profile=$(perf report -i "$raw/conntimes.perf.data" --no-children \
                  --sort dso -q -g none 2>/dev/null \
              | awk '/mod_conntimes.so/ { print $1 }')
fi

shm=$(sed -n 's/.*CT0008: shared memory \([0-9]*\) bytes (\([^)]*\)).*/\1 bytes (\2)/p' \
      "$raw/conntimes/error_log" | head -1)
lines=$(wc -l < "${BENCH_CT_LOGDIR:-$raw/conntimes}/conntimes.access_log")

perl - "$raw" "$ROUNDS" "$DURATION" "$CONNS" "$shm" "$lines" "$profile" \
    > "$out" <<'PERL'
my ($raw, $rounds, $dur, $conns, $shm, $lines, $profile) = @ARGV;
sub us { my ($v, $u) = @_; $v * ($u eq 's' ? 1e6 : $u eq 'ms' ? 1e3 : 1) }
my %r;
for my $n (qw(plain conntimes)) {
    for my $i (1 .. $rounds) {
        open my $fh, '<', "$raw/$n.$i.txt" or die;
        local $/;
        my $t = <$fh>;
        my ($rps) = $t =~ /Requests\/sec:\s+([\d.]+)/;
        my ($p50, $u50) = $t =~ /^\s+50%\s+([\d.]+)(us|ms|s)/m;
        my ($p99, $u99) = $t =~ /^\s+99%\s+([\d.]+)(us|ms|s)/m;
        my ($reqs) = $t =~ /(\d+) requests in/;
        my ($ticks, $hz) = $t =~ /cpu_ticks (\d+) hz (\d+)/;
        push @{ $r{$n} }, [ $rps, us($p50, $u50), us($p99, $u99),
                            $reqs ? $ticks / $hz * 1e6 / $reqs : 0 ];
    }
}
sub median { my @s = sort { $a <=> $b } @_; @s % 2 ? $s[$#s / 2]
             : ($s[@s / 2 - 1] + $s[@s / 2]) / 2 }
printf "mod_conntimes overhead: wrk -t1 -c%d -d%ds, 1 KB static file, event MPM,\n"
     . "%d interleaved rounds; server on CPU 0, wrk on CPU 1 when pinned.\n\n",
       $conns, $dur, $rounds;
printf "%s: LogFormat %s%s\n",
       ($ENV{BENCH_CT_MODULE} // 1) ? 'module side' : 'second server, without the module',
       $ENV{BENCH_CT_FORMAT} || 'conntimes',
       $ENV{BENCH_CT_EXTRA} ? ", with \"$ENV{BENCH_CT_EXTRA}\"" : '';
printf "both servers: %s; access logs in %s\n\n",
       $ENV{BENCH_CT_BOTH} ? "\"$ENV{BENCH_CT_BOTH}\"" : 'nothing added',
       $ENV{BENCH_CT_LOGDIR} || 'the raw directory (same file system as the repository)';
printf "%-10s %5s %12s %10s %10s %12s\n", 'server', 'round', 'req/s', 'p50 us',
       'p99 us', 'cpu us/req';
for my $n (qw(plain conntimes)) {
    my $i = 0;
    printf "%-10s %5d %12.0f %10.0f %10.0f %12.2f\n", $n, ++$i, @$_
        for @{ $r{$n} };
}
my %m;
for my $n (qw(plain conntimes)) {
    $m{$n} = [ map { my $k = $_; median(map { $_->[$k] } @{ $r{$n} }) } 0 .. 3 ];
    printf "%-10s %5s %12.0f %10.0f %10.0f %12.2f\n", $n, 'med', @{ $m{$n} };
}
printf "\nserver CPU per request (medians): plain %.2f us, conntimes %.2f us "
     . "(%+.2f%%)\n", $m{plain}[3], $m{conntimes}[3],
       100 * ($m{conntimes}[3] / $m{plain}[3] - 1);
printf "\nrequests/s ratio (conntimes / plain, medians): %.4f (%+.2f%%)\n",
       $m{conntimes}[0] / $m{plain}[0], 100 * ($m{conntimes}[0] / $m{plain}[0] - 1);
printf "p99 latency: plain %.0f us, conntimes %.0f us\n", $m{plain}[2], $m{conntimes}[2];
my @pr = map { $r{conntimes}[$_][0] / $r{plain}[$_][0] } 0 .. $rounds - 1;
printf "per-round ratios: %s\n", join ' ', map { sprintf '%.4f', $_ } @pr;
# How far the median of the paired ratios can be trusted: a bootstrap 95 %
# interval (fixed seed, so the same raw files give the same interval).
srand(1);
my @boot = sort { $a <=> $b } map {
    median(map { $pr[int rand @pr] } 1 .. @pr)
} 1 .. 2000;
printf "median per-round ratio %.4f (%+.2f%%), bootstrap 95%% interval %.4f .. %.4f\n",
       median(@pr), 100 * (median(@pr) - 1), $boot[49], $boot[1949];
print "mod_conntimes.so in the server's CPU profile (perf, 5 s under load): ",
      ($profile || 'not measured (needs perf and root)'), "\n";
# Per request: samples of each function over the requests that wrk counted
# in the 5 s window (its rate times 5), in microseconds at 10,000 samples a
# second.  Only where both profiles exist.
my %per;
for my $n (qw(plain conntimes)) {
    open my $fh, '<', "$raw/$n.perf-symbols.txt" or last;
    my ($rps) = do { local $/; open my $l, '<', "$raw/$n.perf-load.txt"
                     or die; <$l> } =~ /Requests\/sec:\s+([\d.]+)/;
    last unless $rps;
    while (<$fh>) {
        my ($samples, $dso, $sym) = /^\s*[\d.]+%\s+(\d+)\s+(\S+)\s+\[.\]\s+(\S+)/
            or next;
        $per{"$dso $sym"}{$n} += $samples / 10000 / ($rps * 5) * 1e6;
    }
}
if (keys %per) {
    my %d = map { $_ => ($per{$_}{conntimes} // 0) - ($per{$_}{plain} // 0) }
            keys %per;
    my @k = sort { $d{$b} <=> $d{$a} } keys %d;
    my ($tp, $tc) = (0, 0);
    $tp += $per{$_}{plain} // 0, $tc += $per{$_}{conntimes} // 0 for keys %per;
    printf "\nCPU 0 time per request in the profiles (idle included): plain "
         . "%.2f us, conntimes %.2f us\n", $tp, $tc;
    print "functions with the most more time per request on the module's server (us):\n";
    printf "  %+.3f  %s\n", $d{$_}, $_ for @k[0 .. 14];
    print "and the most less:\n";
    printf "  %+.3f  %s\n", $d{$_}, $_ for reverse @k[-5 .. -1];
}
print "shared memory (defaults): $shm\n";
print "access log lines written by the conntimes server: $lines\n";
PERL
cat "$out"
