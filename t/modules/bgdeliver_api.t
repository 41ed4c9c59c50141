# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# The C API for other modules (include/mod_bgdeliver.h), used by the test
# module's handlers: a producer callback, a file range, a brigade; with and
# without BgDeliver On in the location.
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use Digest::MD5 qw(md5_hex);
use Bgd::Test qw(gen_file request pattern pattern_md5 access_log_lines mpm_name
                 slow_clients server_status log_mark error_log_since bgd_status
                 slurp http_connect http_send read_response private_server
                 wait_until two_workers_conf);
use Time::HiRes qw(time);

my $mpm = mpm_name();
plan tests => 39, need need_module('mod_bgdeliver.c'), need_module('mod_bgd_test.c');

my $bg = $mpm eq 'event';
my $file = gen_file('bgdeliver/files/api-1m.bin', 1_000_000);
my $data = slurp($file);

sub note_of {
    my ($path) = @_;
    my @l = grep { index($_, "\"GET $path ") >= 0 } access_log_lines();
    return @l ? (split ' ', $l[-1])[-2] : '';
}

# Producer: generated slice by slice on whatever worker drives it.
my $r = request(GET => '/api/producer?size=777777', rcvbuf => 4096, rate => 3_000_000);
ok t_cmp($r->{status}, 200, 'producer: 200');
ok t_cmp(md5_hex($r->{body}), pattern_md5(777777), 'producer: exact bytes');
ok t_cmp(note_of('/api/producer?size=777777'), $bg ? 'complete' : '-', 'producer: background');
# Under BgDeliver On the engine sees the response twice (its handler, then
# the API call): where it cannot run, that is still one fallback.
my $fallbacks = bgd_status()->{BgDeliverFallbacks};
$r = request(GET => '/bgdeliver/h/producer?size=100001', rcvbuf => 4096, rate => 3_000_000);
ok t_cmp(md5_hex($r->{body}), pattern_md5(100001), 'producer under BgDeliver On');
ok t_cmp(bgd_status()->{BgDeliverFallbacks} - $fallbacks, $bg ? 0 : 1,
         'producer under BgDeliver On: fallbacks counted once');

my $mark = log_mark();

# File range through bgdeliver_send_file(), plus a client Range on top.
$r = request(GET => '/api/file/api-1m.bin?offset=1000&length=300000', rcvbuf => 4096,
             rate => 3_000_000);
ok t_cmp($r->{headers}{'content-length'}, 300000, 'file range: Content-Length');
ok t_cmp($r->{body} eq substr($data, 1000, 300000) ? 1 : 0, 1, 'file range: exact bytes');
$r = request(GET => '/api/file/api-1m.bin?offset=1000&length=300000',
             headers => { Range => 'bytes=100-199' });
ok t_cmp($r->{status}, 206, 'file range + Range header: 206');
ok t_cmp($r->{body} eq substr($data, 1100, 100) ? 1 : 0, 1, 'file range + Range: bytes');

# A range outside the file is refused while the handler can still answer:
# 500 and BGD028, not a response cut short as if the file had changed.
$r = request(GET => '/api/file/api-1m.bin?offset=1000000&length=1000');
ok t_cmp($r->{status}, 500, 'file range past the end: 500');
$r = request(GET => '/api/file/api-1m.bin?offset=999000&length=2000');
ok t_cmp($r->{status}, 500, 'file range across the end: 500');
ok t_cmp(error_log_since($mark), qr/BGD028: .*1000 bytes from offset 1000000 are not within the file \(1000000 bytes\)/,
         'file range outside the file: logged (BGD028)');

# Brigade.
$r = request(GET => '/bgdeliver/h/brigade?size=250000', rcvbuf => 4096, rate => 3_000_000);
ok t_cmp(md5_hex($r->{body}), pattern_md5(250000), 'brigade: exact bytes');

# HEAD through the producer sends headers only.
$r = request(HEAD => '/api/producer?size=5000');
ok t_cmp($r->{status}, 200, 'producer HEAD: 200');

# A producer with nothing ready yet is asked again on a timer, not in a
# loop: 300 ms of nothing is about 30 calls (10 ms apart), not millions.
{
    my $m = log_mark();
    my $t0 = time;
    $r = request(GET => '/api/producer?size=100000&idle=300', timeout => 20);
    my $took = time - $t0;
    ok t_cmp(md5_hex($r->{body}), pattern_md5(100000), 'idle producer: exact bytes');
    ok t_cmp($took >= 0.29 ? 1 : 0, 1, sprintf('idle producer: took %.3f s', $took));
    my $calls;
    for (1 .. 50) {
        ($calls) = error_log_since($m) =~ /bgd-test: producer \?size=100000&idle=300 called (\d+) times/;
        last if defined $calls;
        select undef, undef, undef, 0.05;
    }
    ok t_cmp(defined $calls && $calls < 100 ? 1 : 0, 1,
             'idle producer: called ' . ($calls // '?') . ' times');
}

# HEAD: the producer is not called at all (the header filter would drop its
# bytes), so an endless one ends too.
{
    my $m = log_mark();
    $r = request(HEAD => '/api/producer?endless=1', timeout => 5);
    ok t_cmp($r->{status}, 200, 'HEAD on an endless producer: 200');
    my $calls;
    for (1 .. 50) {
        ($calls) = error_log_since($m) =~ /bgd-test: producer \?endless=1 called (\d+) times/;
        last if defined $calls;
        select undef, undef, undef, 0.05;
    }
    ok t_cmp($calls // -1, 0, 'HEAD: the producer is never called');
}

# A producer that fails before the first byte (not even the headers went
# out): the client gets httpd's 500 page (a 500 closes the connection, as
# it does in stock httpd), not a connection closed with nothing.
{
    my $m = log_mark();
    my $before = bgd_status();
    $r = request(GET => '/api/producer?size=100000&fail=1&q=fails-at-once', timeout => 10);
    ok t_cmp(join(' ', $r->{status},
                  $r->{body} =~ /Internal Server Error/ ? 'page' : 'no page',
                  error_log_since($m) =~ /BGD032: the producer failed before the first byte/
                      ? 'logged' : 'not logged'),
             '500 page logged', 'producer failing at once: a 500 page');
    # ... and, where the engine ran it, a delivery that failed: logged
    # and counted as a broken backend's, not as complete.
    if ($bg) {
        my $line = wait_until(5, sub { (grep { /q=fails-at-once / } access_log_lines())[0] });
        my $after = bgd_status();
        ok t_cmp(join(' ', ($line // '') =~ / (\S+) (\S+)$/,
                      $after->{BgDeliverCompleted} - $before->{BgDeliverCompleted},
                      $after->{BgDeliverAborted} - $before->{BgDeliverAborted}),
                 'backend-error X 0 1',
                 'producer failing at once: note backend-error, counted aborted');
    }
    else {
        skip 'the engine runs producers only under event';
    }
    # Run in the worker (a RATE_LIMIT filter keeps it out of the engine):
    # the same answer and the same line.
    if (have_module('ratelimit')) {
        $m = log_mark();
        $r = request(GET => '/ratelimit/h/producer?size=1000&fail=1&ratelimit=2000', timeout => 10);
        ok t_cmp(join(' ', $r->{status},
                      error_log_since($m) =~ /BGD032: the producer failed before the first byte/
                          ? 'logged' : 'not logged'),
                 '500 logged', 'producer failing at once, in the worker: 500, logged');
    }
    else {
        skip 'mod_ratelimit';
    }
}

# A producer's idle time is not the client's: with a 1 s grace of
# BgDeliverMinRate, a producer with nothing for 1.5 s (the client has taken
# everything) must not get its client dropped as slow.  But a producer with
# nothing for the server's Timeout ends the response (BGD033), here before
# its first byte: a 500.  Both on whatever driver this MPM gives.
{
    my $srv = private_server(<<'CONF', mpm => $mpm =~ /^(event|worker|prefork)$/ ? $mpm : 'event',
Timeout 2
<Location /p>
    SetHandler bgd-test-producer
    BgDeliverMinRate 1000 1
</Location>
CONF
                             test_modules => ['bgd_test']);
    $r = request(GET => '/p?size=50000&idle=1500', port => $srv->{port}, timeout => 10);
    ok t_cmp(md5_hex($r->{body}), pattern_md5(50000),
             'producer idle 1.5 s past a 1 s grace: not dropped');
    my $t0 = time;
    $r = request(GET => '/p?size=50000&idle=6000', port => $srv->{port}, timeout => 10);
    my $took = time - $t0;
    ok t_cmp($r->{status}, 500, 'producer idle for Timeout: 500');
    ok t_cmp($took > 1.9 && $took < 3 ? 1 : 0, 1, sprintf('after Timeout (%.2f s)', $took));
    my $log = "$srv->{dir}/error_log";
    ok t_cmp(wait_until(3, sub { slurp($log) =~ /BGD033: the producer has had nothing to send for 2 s/ }) ? 1 : 0,
             1, 'logged (BGD033)');
    $srv->{stop}->();
}

# What the client has taken no longer counts against the memory limit: a
# 600,000-byte producer under BgDeliverMemoryLimit 16k and
# BgDeliverSpoolLimit 32k, read at once, never needs the spool's limit
# (before, every byte produced after the hand-off stayed counted, and the
# rest went out in the foreground after BGD013 at about 40 KB).
{
    my $m = log_mark();
    $r = request(GET => '/api/producer-tight?size=600000', timeout => 20);
    ok t_cmp(join(' ', md5_hex($r->{body}) eq pattern_md5(600000) ? 'exact' : 'wrong',
                  error_log_since($m) =~ /BGD013/ ? 'BGD013' : 'no BGD013'),
             'exact no BGD013', 'producer under tight limits: exact, never over the spool limit');
}

# A second API call for one response is refused: the first body arrives
# exact and alone, BGD030 is logged, and the delivery is counted once.
{
    my $m = log_mark();
    my $before = bgd_status();
    # (A small window: a client that takes the body while the handler
    # runs leaves nothing to deliver in the background.)
    my $s = http_connect(rcvbuf => 4096);
    http_send($s, 'GET', '/api/twice?size=300000');
    $r = read_response($s, timeout => 10);
    # Nothing after the first body: the next response on the connection
    # starts right where the first ended.
    http_send($s, 'GET', '/api/twice?size=100');
    my $next = read_response($s, timeout => 10);
    close $s;
    my $log = error_log_since($m);
    ok t_cmp(join(' ', $r->{status}, length $r->{body}, md5_hex($r->{body}) eq pattern_md5(300000) ? 'exact' : 'wrong',
                  $next->{status}, length $next->{body},
                  $log =~ /BGD030: .*called again/ ? 'BGD030' : 'no BGD030',
                  $log =~ /second call returned 500/ ? 500 : '?'),
             '200 300000 exact 200 100 BGD030 500', 'the API called twice');
    # Counted once each: started = completed (the 300,000 bytes are above
    # BgDeliverMinSize; the 100 bytes are not, and go out at once).
    wait_until(5, sub { bgd_status()->{BgDeliverInFlight} == 0 });
    my $after = bgd_status();
    ok t_cmp(join(' ', map { $after->{"BgDeliver$_"} - $before->{"BgDeliver$_"} }
                           qw(Started Completed)),
             $bg ? '1 1' : '0 0', 'the API called twice: one delivery counted');
}

# Slow producer clients do not hold workers.
if (!$bg) {
    skip("needs the event MPM (have $mpm)", 0) for 1 .. 2;
}
else {
    my $t0 = time;
    my $max = 0;
    my ($res) = slow_clients(n => 10, path => '/api/producer?size=800000', rcvbuf => 4096,
                             rate => 250_000, every => 0.2, sample => sub {
        return () if time - $t0 < 1;
        my $b = server_status()->{BusyWorkers};
        $max = $b if $b > $max;
    });
    ok t_cmp(scalar(grep { $_->{md5} eq pattern_md5(800000) } @$res), 10,
             'slow producer clients: exact bytes');
    ok t_cmp($max <= 2 ? 1 : 0, 1, "slow producer clients: BusyWorkers at most 2 (saw $max)");
}

# A caller's mistakes are refused, logged, and answered with a 500: a
# producer that is NULL (it crashed the child), and pacing policies the
# engine could never finish (an infinite or NaN rate) or that would send a
# byte per Timeout (rate 0.5).  request_background() returns APR_EINVAL,
# on which the test module answers 500.
{
    my $m = log_mark();
    my $r = request(GET => '/api/producer?null=1', timeout => 5);
    ok t_cmp(join(' ', $r->{status}, error_log_since($m) =~ /BGD029: bgdeliver_send_producer\(\) called without a producer/
                                     ? 'BGD029' : 'not logged'),
             '500 BGD029', 'a NULL producer: refused');
    for my $rate (qw(nan inf 0.5)) {
        $m = log_mark();
        $r = request(GET => "/paced/h/gen?size=1000&badpace=$rate", timeout => 5);
        ok t_cmp(join(' ', $r->{status}, error_log_since($m) =~ /BGD035: bgdeliver API: pacing refused: rate must be/
                                         ? 'BGD035' : 'not logged'),
                 '500 BGD035', "pacing at rate $rate: refused");
    }
}

# request_background() called again without a policy: full speed (the
# first call's 2,000 bytes/s would take 50 s).
{
    my $t0 = time;
    my $r = request(GET => '/paced/h/gen?size=100000&pace=2000,0&unpace=1', timeout => 10);
    my $t = time - $t0;
    ok t_cmp(($r->{status} == 200 && $r->{complete} && $t < 3) ? 1 : 0, 1,
             sprintf('paced, then a call without a policy: full speed (%.1f s)', $t));
}

# A producer that fails after the first byte, on any MPM: the body ends
# short and the connection closes at once (in the worker too, where it
# used to stay open, its chunked body never ended, until KeepAliveTimeout).
{
    my $s = http_connect();
    my $t0 = time;
    http_send($s, 'GET', '/api/producer?size=300000&fail=5');
    my $r = read_response($s, timeout => 10);
    my $t = time - $t0;
    close $s;
    ok t_cmp(($r->{status} == 200 && !$r->{complete} && $r->{eof} && $t < 3) ? 1 : 0, 1,
             sprintf('producer failing mid-body: cut short, closed (%.1f s, %d bytes)',
                     $t, length $r->{body}));
}

# A producer in a sub-request (an SSI include) runs inside the call; when
# it fails after the page's headers went out, the page must end short
# with the connection closed: it was a complete 200 with the include cut
# at 32,000 bytes, and BGD032 said "answering 500".
{
    my $m = log_mark();
    my $s = http_connect();
    http_send($s, 'GET', '/bgdeliver/ssi/producer-fails.shtml');
    my $r = read_response($s, timeout => 10);
    close $s;
    my $log = error_log_since($m);
    ok t_cmp(join(' ', $r->{status}, $r->{complete} ? 'complete' : 'cut',
                  $r->{eof} ? 'closed' : 'open',
                  $log =~ /BGD020: delivery ends after/ ? 'BGD020' : '-',
                  $log =~ /BGD032/ ? 'BGD032' : '-'),
             '200 cut closed BGD020 -',
             sprintf('producer failing in an SSI include: the page ends short (%d bytes)',
                     length($r->{body} // '')));
}

# ... nor is the time its next call waits for a worker: with both
# workers of a private server held for 3 s by slow handlers, a producer
# that had nothing for 400 ms and 1 s of grace got its client reset as
# slow after a second, with not a byte ever offered to it.
if ($bg) {
    my $srv = private_server(<<'CONF', mpm => 'event', mpm_conf => two_workers_conf('event'), test_modules => ['bgd_test']);
KeepAlive Off
<Location /p>
    SetHandler bgd-test-producer
    BgDeliverMinRate 1000 1
</Location>
<Location /hog>
    SetHandler bgd-test-gen
</Location>
CONF
    my $s = http_connect(port => $srv->{port});
    http_send($s, 'GET', '/p?size=1000&idle=400');
    select undef, undef, undef, 0.15;
    my @hogs = map { my $h = http_connect(port => $srv->{port});
                     http_send($h, 'GET', '/hog?size=2&chunk=1&delay=1500'); $h } 1 .. 2;
    my $r = read_response($s, timeout => 10);
    close $_ for $s, @hogs;
    my $log = slurp("$srv->{dir}/error_log");
    ok t_cmp(join(' ', $r->{status} // 0, length($r->{body} // ''),
                  $log =~ /BGD004/ ? 'BGD004' : '-'),
             '200 1000 -', 'a producer\'s next call waiting for a worker: not the client\'s wait');
    $srv->{stop}->();
}
else {
    skip 'event only: the engine runs producers there';
}
