# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# The engine's pacing (what mod_dialup builds on), driven here through the
# public API by the test module: first byte at the latency, rate on the
# wire, bodiless responses not paced, keep-alive across timed waits, TLS,
# and timed waits that stay on time on an otherwise idle server.
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use Time::HiRes qw(time);
use Bgd::Test qw(gen_file http_connect http_send read_response request
                 mpm_name bgd_status pattern slurp log_mark error_log_since
                 wait_until private_server visits_logged);

plan tests => 24, need need_module('mod_bgdeliver.c'), need_module('mod_bgd_test.c');

my $file = gen_file('bgdeliver/files/pace-1m.bin', 1_000_000);
my $data = slurp($file);

# 40,000 B/s, 150 ms latency, 60,000 bytes of body: ~1.66 s in all.
my $path = '/paced/files/pace-1m.bin?pace=40000,150';
my $s = http_connect(rcvbuf => 65536);
my $t0 = time;
http_send($s, 'GET', $path, Range => 'bytes=0-59999');
my $r = read_response($s);
my $ttfb = $r->{t_first} - $t0;
my $wire = $r->{header_bytes} + length $r->{body};
my $rate = ($wire - 1) / ($r->{t_end} - $r->{t_first});
t_debug(sprintf "ttfb %.1f ms, %d wire bytes, %.0f B/s", $ttfb * 1000, $wire, $rate);
ok t_cmp($r->{body} eq substr($data, 0, 60000) ? 1 : 0, 1, 'paced: exact bytes');
ok t_cmp(abs($ttfb - 0.150) < 0.010 ? 1 : 0, 1, sprintf('first byte at the latency (%.1f ms)', $ttfb * 1000));
ok t_cmp(abs($rate / 40000 - 1) < 0.03 ? 1 : 0, 1, sprintf('rate on the wire %.0f B/s', $rate));

# The same connection carries the next request: the socket came back from
# its timed waits intact.
$t0 = time;
http_send($s, 'GET', $path, Range => 'bytes=100-4099');
$r = read_response($s);
ok t_cmp($r->{body} eq substr($data, 100, 4000) ? 1 : 0, 1, 'keep-alive after timed waits');
ok t_cmp(abs(($r->{t_first} - $t0) - 0.150) < 0.010 ? 1 : 0, 1, 'second request: latency again');

# HEAD: the latency, but no pacing of the headers.
$t0 = time;
http_send($s, 'HEAD', $path);
$r = read_response($s, head => 1);
my $head_t = $r->{t_end} - $t0;
ok t_cmp(($r->{status} == 200 && $head_t < 0.2) ? 1 : 0, 1,
         sprintf('HEAD: answered after the latency only (%.0f ms)', $head_t * 1000));
close $s;

# Over TLS: same schedule.
$s = http_connect(ssl => 1, vhost => 'bgd_tls', rcvbuf => 65536);
$t0 = time;
http_send($s, 'GET', $path, Range => 'bytes=0-39999');
$r = read_response($s);
ok t_cmp($r->{body} eq substr($data, 0, 40000) ? 1 : 0, 1, 'TLS paced: exact bytes');
my $t = $r->{t_end} - $t0;
ok t_cmp(($t > 0.95 && $t < 1.35) ? 1 : 0, 1, sprintf('TLS paced: on schedule (%.2f s)', $t));
close $s;

# Over TLS at a high rate: each visit sends what the line carried by its
# start, in full slices.  Topping up with what accrued while a slice was
# written made passes of a few dozen bytes, each its own TLS record (the
# wire grew sevenfold, a worker spun).  mod_logio's %O counts the bytes
# encrypted.
$s = http_connect(ssl => 1, vhost => 'bgd_tls', rcvbuf => 262144);
http_send($s, 'GET', '/paced/files/pace-1m.bin?pace=500000,0&records',
          Range => 'bytes=0-399999');
$r = read_response($s);
close $s;
ok t_cmp($r->{body} eq substr($data, 0, 400000) ? 1 : 0, 1, 'TLS paced at 500 kB/s: exact bytes');
my (undef, $tls_out) = visits_logged('pace=500000,0&records');
ok t_cmp($tls_out > 0 && $tls_out < 400000 * 1.05 ? 1 : 0, 1,
         "TLS paced at 500 kB/s: $tls_out bytes on the wire for 400,000 of body");

# An idle server (nothing else going on) keeps the pulses on time: 20
# short paced responses in a row, each ~0.4 s, none late by more than a
# pulse.
my $late = 0;
for my $i (1 .. 5) {
    $t0 = time;
    $r = request(GET => '/paced/files/pace-1m.bin?pace=20000,100',
                 headers => { Range => 'bytes=0-5999' }, rcvbuf => 65536);
    my $expect = 0.100 + ($r->{header_bytes} + 6000 - 1) / 20000;
    my $took = $r->{t_end} - $t0;
    $late++ if $took > $expect + 0.05 || $took < $expect - 0.02;
    t_debug(sprintf "idle run %d: %.3f s (expected %.3f)", $i, $took, $expect);
}
ok t_cmp($late, 0, 'idle server: every paced response on schedule');

# A latency without a rate (the C API's rate 0): the first byte waits for
# it, for a small file (below BgDeliverMinSize) and for content that the
# handler streams with flushes while it runs.
for my $case (
    [ 'small file', '/paced/files/pace-1m.bin?pace=0,200',
      { Range => 'bytes=0-999' }, substr($data, 0, 1000) ],
    [ 'streamed', '/paced/h/gen?size=200000&chunk=8192&flush=1&pace=0,200',
      {}, pattern(200_000) ],
) {
    my ($what, $uri, $headers, $want) = @$case;
    $t0 = time;
    $r = request(GET => $uri, headers => $headers);
    $ttfb = $r->{t_first} - $t0;
    ok t_cmp($r->{body} eq $want && $ttfb > 0.19 && $ttfb < 0.3 ? 1 : 0, 1,
             sprintf('latency only, %s: first byte at %.0f ms', $what,
                     $ttfb * 1000));
}

# A paced stream that lasts (a handler producing 1000 bytes every 50 ms
# for 1.5 s) is paced from its first byte's due time, not held back until
# the handler ends; and never ahead of the emulated line.
{
    $t0 = time;
    my $ahead = 0;
    $r = request(GET => '/paced/h/gen?size=30000&chunk=1000&flush=1&delay=50&pace=20000,100',
                 on_progress => sub {
                     my ($got) = @_;
                     $ahead++ if $got > 20000 * (time - $t0 - 0.1) + 1500;
                 });
    $ttfb = $r->{t_first} - $t0;
    ok t_cmp($r->{body} eq pattern(30_000) && $ttfb > 0.09 && $ttfb < 0.6 ? 1 : 0, 1,
             sprintf('paced stream: first byte at %.0f ms, handler runs 1.5 s',
                     $ttfb * 1000));
    ok t_cmp($ahead, 0, 'paced stream: never ahead of the line');
}

# A handler that writes, then waits longer than the line needs for what it
# wrote (a CGI or a proxy waiting for its backend), gets only the time its
# line stood idle back: the rest is paced too.  At 4000 B/s, 8000 bytes, a
# 3 s wait, 8000 bytes: on the line the last byte leaves at 5 s, here at
# 4.8 s (200 ms of catching up); it left at 4 s when the whole wait
# counted as line time.
{
    $t0 = time;
    $r = request(GET => '/paced/h/gen?size=16000&chunk=8000&delay=3000&pace=4000,0');
    my $took = time - $t0;
    ok t_cmp($r->{body} eq pattern(16_000) && $took > 4.5 && $took < 5.6 ? 1 : 0, 1,
             sprintf('paced, a 3 s wait of the handler between two halves: %.2f s', $took));
}

# A line banks no time it had nothing to carry: a producer with nothing
# for its first second gets its 2000 bytes (and the headers) onto a 2000
# B/s line in about a second (less the 200 ms it may catch up), instead of
# all at once when it starts.
{
    $t0 = time;
    $r = request(GET => '/paced/h/producer?size=2000&idle=1000&pace=2000,0');
    my $took = time - $t0;
    ok t_cmp($r->{body} eq pattern(2000) && $took > 1.7 && $took < 2.6 ? 1 : 0, 1,
             sprintf('paced, after the producer idled 1 s: %.2f s', $took));
}

# A paced request's local error page is made under the engine's wrapper
# (and paced too): it must reach the client, the connection go on.
{
    my $s = http_connect();
    my @got;
    for my $path ('/paced/errdoc/missing.txt', '/paced/errdoc/page.txt') {
        http_send($s, 'GET', $path);
        my $res = read_response($s, timeout => 5);
        push @got, ($res->{status} || 0) . ' ' . ($res->{body} // '');
    }
    ok t_cmp("@got", "404 not here\n 200 not here\n",
             'paced 404 with a local ErrorDocument, then keep-alive');
}

# BgDeliverMaxTime bounds a paced response wherever it is paced (in the
# worker on prefork, worker and HTTP/2 too): 3 s of line, dropped at 1 s.
{
    gen_file('bgdeliver/files/maxtime/paced-60k.bin', 60_000);
    my $m = log_mark();
    $t0 = time;
    $r = request(GET => '/paced/files/maxtime/paced-60k.bin?pace=20000,0', timeout => 10);
    my $took = time - $t0;
    ok t_cmp(!$r->{complete} && $took > 0.9 && $took < 1.6 ? 1 : 0, 1,
             sprintf('paced, BgDeliverMaxTime 1: dropped after %.2f s', $took));
    ok t_cmp(wait_until(3, sub { error_log_since($m) =~ /BGD004: .* max-time/ }) ? 1 : 0, 1,
             'paced, max-time: logged (BGD004)');
}

# A graceful restart drains paced deliveries at full speed, also where the
# worker paces them (prefork runs child_stopping only after its request):
# 60,000 bytes at 20,000 B/s would take 3 s.
for my $m (qw(prefork event)) {
    gen_file('bgdeliver/files/drain-60k.bin', 60_000);
    my $srv = private_server(<<'CONF', mpm => $m, test_modules => ['bgd_test'], std_modules => ['env', 'alias']);
Alias /paced "@DOCROOT@/bgdeliver/files"
<Location /paced>
    SetEnv bgd-test-pace 20000,0
</Location>
CONF
    my $s = http_connect(port => $srv->{port});
    my $t1 = time;
    http_send($s, 'GET', '/paced/drain-60k.bin');
    # Raw reads: the restart comes once a few kB of body are in.
    my ($data, $signalled, $left) = ('', 0, 60_000);
    my $end = time + 10;
    while (time < $end) {
        vec(my $rin = '', fileno($s), 1) = 1;
        next unless select($rin, undef, undef, 0.5);
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        $data .= $buf;
        my $at = index($data, "\r\n\r\n");
        next if $at < 0;
        $left = 60_000 - (length($data) - $at - 4);
        if (!$signalled && $left < 56_000) {
            kill 'USR1', $srv->{pid};
            $signalled = 1;
        }
        last if $left <= 0;
    }
    my $took = time - $t1;
    close $s;
    ok t_cmp($left <= 0 && $took < 2.2 ? 1 : 0, 1, sprintf('%s: a graceful restart drains a '
             . 'paced delivery (%.2f s of 3, %d bytes missing)', $m, $took, $left));
    # Let the restart finish (the new generation answers) before stopping.
    wait_until(5, sub {
        my $r = request(GET => '/server-status?auto', port => $srv->{port}, timeout => 5);
        return ($r->{body} // '') =~ /^ParentServerConfigGeneration: [2-9]/m;
    });
    $srv->{stop}->();
}

my $st = bgd_status();
ok t_cmp($st->{BgDeliverInFlight}, 0, 'nothing left in flight');
ok t_cmp($st->{BgDeliverEngine}, mpm_name() eq 'event' ? 'async' : 'worker', 'engine mode');
