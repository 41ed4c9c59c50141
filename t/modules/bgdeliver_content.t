# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Any content: proxied responses, streamed output with flushes (the client
# sees it at once, the worker never waits), and honest accounting in the
# access log (%B after the last byte, %O with mod_logio).
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use Digest::MD5 qw(md5_hex);
use Time::HiRes qw(time sleep);
use Bgd::Test qw(gen_file request slow_clients server_status mpm_name pattern pattern_md5
                 http_connect http_send read_response access_log_lines wait_until
                 log_mark error_log_since bgd_status);

my $mpm = mpm_name();
my $bg = $mpm eq 'event';
plan tests => 24, need need_module('mod_bgdeliver.c'), need_module('mod_bgd_test.c'),
    need_module('mod_proxy_http.c');

my $file = gen_file('bgdeliver/files/content-1m.bin', 1_000_000);
my $want = do { open my $fh, '<', $file; binmode $fh; local $/; md5_hex(<$fh>) };

sub busy_run {
    my (%o) = @_;
    my $t0 = time;
    my $max = 0;
    my ($res) = slow_clients(n => 8, rcvbuf => 4096, rate => 250_000, chunk => 4096,
                             every => 0.2, %o, sample => sub {
        return () if time - $t0 < 1;
        my $b = server_status()->{BusyWorkers};
        $max = $b if $b > $max;
    });
    return (scalar(grep { $_->{status} == 200 && $_->{md5} eq $o{md5} } @$res), $max);
}

# Proxied content (mod_proxy_http, the backend being this server).
my ($ok, $max) = busy_run(path => '/bgdeliver/proxy/content-1m.bin', md5 => $want);
ok t_cmp($ok, 8, 'proxied: exact bytes');
ok t_cmp((!$bg || $max <= 2) ? 1 : 0, 1, "proxied: BusyWorkers at most 2 (saw $max)");

# A handler that flushes big pieces: it finishes at once, the slow
# clients are served without a worker.
($ok, $max) = busy_run(path => '/bgdeliver/h/gen?size=1000000&chunk=65536&flush=1',
                       md5 => pattern_md5(1_000_000));
ok t_cmp($ok, 8, 'flushing handler: exact bytes');
ok t_cmp((!$bg || $max <= 2) ? 1 : 0, 1, "flushing handler: BusyWorkers at most 2 (saw $max)");

# A static file sent with sendfile to slow readers: the core keeps what
# the socket does not take as a file bucket and closes its file when its
# buffer empties, while the next slices of that file wait in the engine.
{
    my $mark = log_mark();
    my ($ok) = busy_run(path => '/sendfile/files/content-1m.bin', md5 => $want);
    ok t_cmp($ok, 8, 'sendfile: every slow reader got the exact bytes');
    ok t_cmp(error_log_since($mark) =~ /BGD020|Bad file descriptor/ ? 1 : 0, 0,
             'sendfile: no delivery failed');
}

# Small flushed pieces of a response that spools (BgDeliverMemoryLimit
# 16k) while earlier pieces are forwarded: reading spooled data must never
# move where the next piece is appended (it once did: spliced bytes), and
# the spool file must stay usable after the core set part of it aside.
{
    my $mark = log_mark();
    my $bad = 0;
    for (1 .. 2) {
        my ($res) = slow_clients(n => 8, rcvbuf => 4096, rate => 400_000, chunk => 4096,
            path => '/bgdeliver/h/gen-spool?size=1000000&chunk=3000&flush=1&delay=1');
        $bad += grep { $_->{md5} ne pattern_md5(1_000_000) } @$res;
    }
    ok t_cmp($bad, 0, 'spooling while forwarding: every byte in place');
    ok t_cmp(error_log_since($mark) =~ /BGD01[01]/ ? 1 : 0, 0,
             'spooling while forwarding: the spool file stayed usable');
}

# A streaming handler (1000 bytes every 200 ms, flushed): the client gets
# each piece as it is produced, not at the end.
{
    my $t0 = time;
    my @arrivals;
    my $r = request(GET => '/bgdeliver/h/gen?size=5000&chunk=1000&flush=1&delay=200',
                    chunk => 512, on_progress => sub { push @arrivals, time - $t0 });
    ok t_cmp(length $r->{body}, 5000, 'streaming: all bytes');
    my $first = $r->{t_first} - $t0;
    ok t_cmp($first < 0.15 ? 1 : 0, 1, sprintf('streaming: first piece at once (%.0f ms)', $first * 1000));
    ok t_cmp(($r->{t_end} - $t0) > 0.75 ? 1 : 0, 1, 'streaming: the last piece when produced');
}

# The same without flushes (an in-process handler that writes 1000 bytes
# every 50 ms and never flushes): as in stock httpd, whose core writes
# from 4 KB on, the client gets the body as it is made, not all of it
# when the handler ends 2 s later.
{
    my $t0 = time;
    my $r = request(GET => '/bgdeliver/h/gen?size=40000&chunk=1000&delay=50', chunk => 512);
    my ($first, $end) = map { $_ - $t0 } $r->{t_first}, $r->{t_end};
    ok t_cmp(length $r->{body}, 40000, 'streaming without flushes: all bytes');
    ok t_cmp($first < 0.8 && $end > 1.5 ? 1 : 0, 1,
             sprintf('streaming without flushes: first bytes at %.0f ms, the last at %.0f ms',
                     $first * 1000, $end * 1000));
}

# %B and %O: a complete delivery counts everything, an aborted one only
# what really left.
{
    my $path = '/bgdeliver/files/content-1m.bin';
    my $r = request(GET => "$path?full", rcvbuf => 8192, rate => 5_000_000);
    my $s = http_connect(rcvbuf => 4096);
    http_send($s, 'GET', "$path?abort");
    read_response($s, max_body => 16384, chunk => 1024, rate => 100_000);
    close $s;
    my ($full, $abort);
    wait_until(5, sub {
        ($full) = reverse grep { index($_, "\"GET $path?full ") >= 0 } access_log_lines();
        ($abort) = reverse grep { index($_, "\"GET $path?abort ") >= 0 } access_log_lines();
        $full && $abort;
    });
    my @f = split ' ', $full // '';
    my @a = split ' ', $abort // '';
    ok t_cmp(($f[9] == 1_000_000 && $f[11] > 1_000_000) ? 1 : 0, 1,
             "complete: %b $f[9], %O $f[11]");
    ok t_cmp(($a[11] < 500_000) ? 1 : 0, 1, "aborted: %O $a[11] is what left, not the size");
    # Stock httpd counts %b when the body enters the filters; the engine
    # takes back what never left.
    ok t_cmp((!$bg || $a[9] < 500_000) ? 1 : 0, 1, "aborted: %b $a[9] corrected too");
}

# A proxied response whose backend breaks off the body (it promised
# 600,000 bytes and closed after 300,000), read slowly enough to go to the
# background however slow the backend (2 s for what it sends): the client
# gets what came, the connection ends, and the log does not call the
# delivery complete.
{
    my $path = '/bgdeliver/proxy-h/gen?size=600000&cut=300000';
    my $aborted = bgd_status()->{BgDeliverAborted};
    my $r = request(GET => $path, rcvbuf => 4096, rate => 150_000, timeout => 10);
    ok t_cmp(join(' ', $r->{status}, length $r->{body}, $r->{eof} ? 'eof' : 'open',
                  $r->{body} eq substr(pattern(600000), 0, 300000) ? 'exact' : 'wrong'),
             '200 300000 eof exact', 'broken backend: its bytes, then the end');
    my $line = wait_until(5, sub {
        (reverse grep { index($_, "\"GET $path ") >= 0 } access_log_lines())[0];
    }) // '';
    my @f = split ' ', $line;
    ok t_cmp(join(' ', @f[9, 12, 13]),
             $bg ? '300000 backend-error X' : '300000 - -',
             'broken backend: logged with what left, not as complete');
    ok t_cmp(bgd_status()->{BgDeliverAborted} - $aborted, $bg ? 1 : 0,
             'broken backend: counted as aborted');
}

# mod_ratelimit's RATE_LIMIT filter sleeps between chunks in the thread
# that passes it data: a response through it goes the ordinary way, counted
# as a fallback (BGD031).
if (have_module('ratelimit')) {
    my $m = log_mark();
    my $fb = bgd_status()->{BgDeliverFallbacks};
    my $r = request(GET => '/ratelimit/files/content-1m.bin', timeout => 20);
    ok t_cmp(md5_hex($r->{body}), $want, 'RATE_LIMIT: exact bytes');
    ok t_cmp(join(' ', bgd_status()->{BgDeliverFallbacks} - $fb,
                  error_log_since($m) =~ /BGD031: mod_ratelimit's RATE_LIMIT filter/ ? 'BGD031' : '-'),
             # Without WAITIO it is a fallback for that reason already.
             $bg ? '1 BGD031' : '1 -', 'RATE_LIMIT: a fallback, logged');
    # A handler that sets rate-limit itself, after the engine looked.
    $m = log_mark();
    $fb = bgd_status()->{BgDeliverFallbacks};
    $r = request(GET => '/ratelimit/h/gen?size=300000&ratelimit=2000',
                 timeout => 20);
    ok t_cmp(join(' ', md5_hex($r->{body} // '') eq pattern_md5(300000)
                           ? 'exact' : 'wrong',
                  bgd_status()->{BgDeliverFallbacks} - $fb,
                  error_log_since($m) =~ /BGD031/ ? 'BGD031' : '-'),
             $bg ? 'exact 1 BGD031' : 'exact 1 -',
             'rate-limit set by the handler: a fallback, logged');
    # The same for a handler that gives its body to a producer: the
    # producer runs in the worker.
    $fb = bgd_status()->{BgDeliverFallbacks};
    $r = request(GET => '/ratelimit/h/producer?size=300000&ratelimit=2000',
                 timeout => 20);
    ok t_cmp(join(' ', md5_hex($r->{body} // '') eq pattern_md5(300000)
                           ? 'exact' : 'wrong',
                  bgd_status()->{BgDeliverFallbacks} - $fb),
             'exact 1', 'rate-limit set by a producer\'s handler: the body, a fallback');
    # Without the rate-limit variable the filter does nothing.
    $fb = bgd_status()->{BgDeliverFallbacks};
    $r = request(GET => '/ratelimit-unset/files/content-1m.bin', timeout => 20);
    ok t_cmp(join(' ', md5_hex($r->{body}) eq $want ? 'exact' : 'wrong',
                  bgd_status()->{BgDeliverFallbacks} - $fb),
             $bg ? 'exact 0' : 'exact 1', 'RATE_LIMIT without rate-limit: no fallback for it');
}
else {
    skip('mod_ratelimit', 1) for 1 .. 5;
}
