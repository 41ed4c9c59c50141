# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Slow-read defence (minimum read rate, idle timeout, absolute time limit)
# and caps on concurrent deliveries (503 with Retry-After, or fallback).
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use Time::HiRes qw(time sleep);
use Bgd::Test qw(gen_file http_connect http_send read_response request
                 log_mark error_log_since wait_until mpm_name bgd_status
                 access_log_lines private_server hold_delivery pattern);

my $mpm = mpm_name();
plan tests => 43, need need_module('mod_bgdeliver.c'),
    need { "needs the event MPM (have $mpm)" => $mpm eq 'event' };

for my $d (qw(minrate minrate/default-grace idle maxtime)) {
    gen_file("bgdeliver/files/$d/big.bin", 3_000_000);
}
gen_file('bgdeliver/files/caps-1m.bin', 1_000_000);

# A client that reads $rate bytes/s until the server ends the response;
# returns (seconds until the end, body bytes, complete).
sub dropped_after {
    my ($path, $rate) = @_;
    my $s = http_connect(rcvbuf => 4096);
    http_send($s, 'GET', $path);
    my $t0 = time;
    my $res = read_response($s, rate => $rate, chunk => 1024, timeout => 15);
    return (time - $t0, length $res->{body}, $res->{complete});
}

# A private server whose files are delivered under BgDeliverMinRate
# $minrate, with SendBufferSize $sndbuf (0: the kernel's autotuning).
sub minrate_server {
    my ($sndbuf, $minrate) = @_;
    return private_server("SendBufferSize $sndbuf\n<Location /bgdeliver/files/>\n"
                          . "    BgDeliver On\n    BgDeliverMinRate $minrate\n</Location>\n");
}

my $mark = log_mark();

# Minimum rate 50 kB/s after a 1 s grace; the client reads 5 kB/s.
my ($t, $n, $c) = dropped_after('/bgdeliver/files/minrate/big.bin', 5000);
t_debug("min-rate: dropped after $t s, $n bytes");
ok t_cmp(!$c && $t < 6 ? 1 : 0, 1, 'min-rate: slow reader dropped within seconds');
ok t_cmp(wait_until(3, sub { error_log_since($mark) =~ /BGD004: dropping slow client .* min-rate/ }) ? 1 : 0,
         1, 'min-rate: logged with BGD004');

# A pipelined request whose response starts while the socket still holds
# the end of the one before: the client reads those bytes first, and that
# is reading all the same.  Counted as nothing, they dropped a client at
# 1.25 times the minimum rate a second into its second response.
{
    gen_file('bgdeliver/files/pipelined-3m.bin', 3_000_000);
    my $srv = minrate_server(1048576, '1000000 1');
    my $s = http_connect(port => $srv->{port}, rcvbuf => 4096);
    my $req = "GET /bgdeliver/files/pipelined-3m.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    print $s $req . $req;
    my $t0 = time;
    my @r = map { read_response($s, rate => 1_250_000, chunk => 16384, timeout => 10) } 1 .. 2;
    close $s;
    t_debug(sprintf 'pipelined: %s in %.2f s', join(' ', map { length($_->{body} // '') } @r), time - $t0);
    ok t_cmp(join(' ', map { $_->{complete} ? 'complete' : 'cut' } @r), 'complete complete',
             'pipelined at 1.25 times the minimum rate: both responses complete');
    my $log = do { local $/; open my $fh, '<', "$srv->{dir}/error_log" or die $!; <$fh> };
    ok t_cmp($log =~ /BGD004/ ? 1 : 0, 0, '... nobody dropped');
    $srv->{stop}->();
}

# The drop of a pipelined response must not take the one before with it:
# that one was logged complete while the client had still to read most of
# it, and the reset of a dropped client threw away what the socket held.
{
    gen_file('bgdeliver/files/pipelined-100k.bin', 100_000);
    my $srv = minrate_server(1048576, '50000 1');
    my $s = http_connect(port => $srv->{port}, rcvbuf => 4096);
    print $s join '', map { "GET /bgdeliver/files/$_ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" }
                      'pipelined-100k.bin', 'pipelined-3m.bin';
    my @r = map { read_response($s, rate => 30_000, chunk => 4096, timeout => 15) } 1 .. 2;
    close $s;
    my $log = do { local $/; open my $fh, '<', "$srv->{dir}/error_log" or die $!; <$fh> };
    my $want = do { local $/; open my $fh, '<', gen_file('bgdeliver/files/pipelined-100k.bin', 100_000) or die $!; <$fh> };
    ok t_cmp(join(' ', $r[0]{complete} && ($r[0]{body} // '') eq $want ? 'first whole' : 'first cut',
                  $r[1]{complete} ? 'second complete' : 'second cut',
                  $log =~ /BGD004: .*min-rate/ ? 'BGD004' : '-'),
             'first whole second cut BGD004',
             sprintf('pipelined, the second dropped at 30 kB/s: the first arrives whole (%d bytes)',
                     length($r[0]{body} // '')));
    $srv->{stop}->();
}

# A handler slower than BgDeliverMinRate (20 bytes, 1.5 s, 20 bytes, as a
# heartbeat or a page computed after its headers) is not its client's
# slow reading: the rate counts from the hand-off.
if (have_module('bgd_test')) {
    my $srv = private_server(<<'CONF', test_modules => ['bgd_test']);
<Location /gen>
    SetHandler bgd-test-gen
    BgDeliver On
    BgDeliverMinRate 1000 1
</Location>
CONF
    my $r = request(GET => '/gen?size=40&chunk=20&delay=1500&flush=1', port => $srv->{port},
                    timeout => 10);
    ok t_cmp(join(' ', $r->{status}, length($r->{body} // ''), $r->{complete} ? 'complete' : 'cut'),
             '200 40 complete', 'a handler slower than the minimum rate: its client is not dropped');
    $srv->{stop}->();
}
else {
    skip 'mod_bgd_test';
}

# BgDeliverMinRate without a grace inside the location above: the default
# 30 s, not its 1 s, so the same reader keeps going for 3 s.
{
    my $s = http_connect(rcvbuf => 4096);
    http_send($s, 'GET', '/bgdeliver/files/minrate/default-grace/big.bin');
    my $res = read_response($s, rate => 5000, chunk => 1024, max_body => 15_000, timeout => 10);
    close $s;
    ok t_cmp(length($res->{body} // ''), 15_000,
             'min-rate without a grace: the default grace, not the enclosing one');
}

# A fast enough reader of the same URL is not dropped.
my $r = request(GET => '/bgdeliver/files/minrate/big.bin', rcvbuf => 8192,
                rate => 3_000_000, timeout => 15);
ok t_cmp($r->{complete} ? 1 : 0, 1, 'min-rate: a reader above the rate completes');

# Idle timeout 1 s: the client stops reading entirely.
{
    my $s = http_connect(rcvbuf => 4096);
    http_send($s, 'GET', '/bgdeliver/files/idle/big.bin');
    read_response($s, max_body => 10000, chunk => 1024);
    my $t0 = time;
    sleep 2.5;      # read nothing: the server must give up meanwhile
    my $res = read_response($s, timeout => 5, chunk => 65536);
    my $drained = 0;
    while (sysread($s, my $buf, 65536)) { $drained += length $buf }
    ok t_cmp(time - $t0 < 6 ? 1 : 0, 1, 'idle timeout: connection closed');
    ok t_cmp(wait_until(3, sub { error_log_since($mark) =~ /BGD004: .* idle-timeout/ }) ? 1 : 0,
             1, 'idle timeout: logged');
}

# Absolute limit 1.5 s on a transfer that would take 15 s.
($t, $n, $c) = dropped_after('/bgdeliver/files/maxtime/big.bin', 200_000);
t_debug("max-time: dropped after $t s");
ok t_cmp(!$c && $t > 1.2 && $t < 4 ? 1 : 0, 1, 'max-time: dropped after about 1.5 s');
ok t_cmp(wait_until(3, sub { error_log_since($mark) =~ /BGD004: .* max-time/ }) ? 1 : 0,
         1, 'max-time: logged');

my @dropped = grep { m{/bgdeliver/files/(minrate|idle|maxtime)/} && / (min-rate|idle-timeout|max-time) X$/ }
              access_log_lines();
ok t_cmp(scalar @dropped >= 3 ? 1 : 0, 1, 'drops are in the access log with their reason');
ok t_cmp(bgd_status()->{BgDeliverDropped} >= 3 ? 1 : 0, 1, 'drops counted in the status');

# Caps: two deliveries per client address in the bgd_caps virtual host.
{
    my @held = map { hold_delivery('/bgdeliver/files/caps-1m.bin', vhost => 'bgd_caps') } 1 .. 2;
    my $before = bgd_status();
    my $res = request(GET => '/bgdeliver/files/caps-1m.bin', vhost => 'bgd_caps');
    ok t_cmp($res->{status}, 503, 'third delivery of the client: 503');
    ok t_cmp($res->{headers}{'retry-after'}, 7, 'with Retry-After');
    $res = request(GET => '/bgdeliver/bare/files/caps-1m.bin', vhost => 'bgd_caps');
    ok t_cmp(join(' ', $res->{status}, $res->{headers}{'retry-after'} // 'none'), '503 none',
             'a bare "BgDeliverOverflow reject" below "reject 7": no Retry-After');
    ok t_cmp(wait_until(3, sub { error_log_since($mark) =~ /BGD002: BgDeliverMaxPerClient reached/ }) ? 1 : 0,
             1, 'refusal logged (BGD002)');

    $res = request(GET => '/fallback/files/caps-1m.bin', vhost => 'bgd_caps',
                   rcvbuf => 8192, rate => 5_000_000);
    ok t_cmp(($res->{status} == 200 && length($res->{body}) == 1_000_000) ? 1 : 0, 1,
             'fallback location: delivered in the foreground instead');
    ok t_cmp(wait_until(3, sub { error_log_since($mark) =~ /BGD003: BgDeliverMaxPerClient reached/ }) ? 1 : 0,
             1, 'fallback logged (BGD003)');
    my $after = bgd_status();
    ok t_cmp($after->{BgDeliverRejected} - $before->{BgDeliverRejected}, 2, 'rejections counted');
    # A HEAD request has no body to deliver: it never takes a slot, so a
    # cap never refuses it.
    $res = request(HEAD => '/bgdeliver/files/caps-1m.bin', vhost => 'bgd_caps');
    ok t_cmp($res->{status}, 200, 'HEAD at the cap: 200');
    # Nor does a body handed to the C API whole and known to be small; a
    # big one does.
    if (have_module('bgd_test')) {
        $res = request(GET => '/api-caps/brigade?size=1000', vhost => 'bgd_caps');
        my $big = request(GET => '/api-caps/brigade?size=200000', vhost => 'bgd_caps');
        ok t_cmp("$res->{status} $big->{status}", '200 503',
                 'C API at the cap: a small body 200, a big one 503');
    }
    else {
        skip 'mod_bgd_test';
    }
    # The status page, under BgDeliver On with 503 past the caps, still
    # answers: it is what tells the operator why.
    $res = request(GET => '/bgdeliver-status?auto', vhost => 'bgd_caps');
    ok t_cmp($res->{status}, 200, 'status page at the cap: 200');
    # A paced response past the cap (BgDeliverOverflow fallback) is paced
    # in the worker: 20,000 bytes at 20,000 bytes/s take a second, not a
    # millisecond at full speed.
    if (have_module('bgd_test')) {
        my $t0 = time;
        $res = request(GET => '/paced/h/gen?size=20000&pace=20000,0', vhost => 'bgd_caps');
        my $t = time - $t0;
        ok t_cmp(($res->{status} == 200 && $res->{complete} && $t > 0.8 && $t < 3) ? 1 : 0, 1,
                 sprintf('paced at the cap: still paced, in the worker (%.2f s)', $t));
    }
    else {
        skip 'mod_bgd_test';
    }
    close $_ for @held;
    # The same for a static file over HTTPS, whose location spools at most
    # 128k: the file is paced from the file (1 MB at 400 kB/s), not read
    # into memory, spooled, and sent at full speed past the spool limit.
    if (have_module('bgd_test') && have_module('ssl')) {
        my @tls = (vhost => 'bgd_tls_caps', ssl => 1);
        my @hold = map { hold_delivery('/fallback/files/caps-1m.bin', @tls) } 1 .. 2;
        my $m = log_mark();
        my $t0 = time;
        my $r = request(GET => '/paced/files/caps-1m.bin?pace=400000,0', @tls, timeout => 20);
        my $t = time - $t0;
        close $_ for @hold;
        ok t_cmp(join(' ', $r->{status}, length($r->{body} // ''),
                      ($t > 2.0 && $t < 6) ? 'paced' : sprintf('%.2f s', $t),
                      error_log_since($m) =~ /BGD013/ ? 'BGD013' : '-'),
                 '200 1000000 paced -',
                 sprintf('paced HTTPS file at the cap: paced from the file (%.2f s)', $t));
    }
    else {
        skip 'mod_bgd_test and mod_ssl';
    }
    # Once the held deliveries are gone, the client may start new ones.
    wait_until(5, sub { bgd_status()->{BgDeliverInFlight} == 0 });
    $res = request(GET => '/bgdeliver/files/caps-1m.bin', vhost => 'bgd_caps',
                   rcvbuf => 8192, rate => 5_000_000);
    ok t_cmp($res->{status}, 200, 'below the cap again: 200');
}

# The minimum rate counts what the client has taken, not what the kernel
# queued for it.  Without SendBufferSize the kernel grows the send buffer
# of a connection that keeps it full to megabytes: counted as read, those
# let a client at 20 kB/s, under a 50 kB/s minimum, pass for minutes.
{
    gen_file('bgdeliver/files/minrate-16m.bin', 16_000_000);
    my $srv = minrate_server(0, '50000 1');
    my $s = http_connect(port => $srv->{port}, rcvbuf => 4096);
    http_send($s, 'GET', '/bgdeliver/files/minrate-16m.bin');
    my $t0 = time;
    my $res = read_response($s, rate => 20_000, chunk => 4096, max_body => 200_000,
                            timeout => 12);
    my $t = time - $t0;
    close $s;
    my $log = do { local $/; open my $fh, '<', "$srv->{dir}/error_log" or die $!; <$fh> };
    t_debug(sprintf 'large send buffer: %d bytes in %.2f s', length($res->{body} // ''), $t);
    ok t_cmp(length($res->{body} // '') < 200_000 && $t < 8 ? 1 : 0, 1,
             sprintf('min-rate with a large send buffer: dropped after %.2f s', $t));
    ok t_cmp($log =~ /BGD004: dropping slow client .* min-rate/ ? 1 : 0, 1,
             'min-rate with a large send buffer: logged');
    # A reader above the minimum through the same buffers is not dropped:
    # what the queue holds is not held against it either.
    my $r = request(GET => '/bgdeliver/files/minrate-16m.bin', port => $srv->{port},
                    rcvbuf => 4096, rate => 120_000, max_body => 600_000, timeout => 12);
    ok t_cmp(length($r->{body} // ''), 600_000,
             'min-rate with a large send buffer: a reader above the rate keeps going');
    $srv->{stop}->();
}

# The rules watch the client while the handler still writes: a client that
# stops reading is dropped after BgDeliverIdleTimeout even though its
# handler streams on (3 MB over 3 s, flushed piece by piece as a CGI's
# output is offered whenever the script pauses; spooled), and the handler
# stops at its next write.  It was dropped only a second after the handler's end: a
# stream that never ends held its handler and filled the spool meanwhile.
if (have_module('bgd_test')) {
    my $srv = private_server(<<'CONF', test_modules => ['bgd_test']);
LogFormat "%U %>s %X %{bgdeliver}n %D" caplog
CustomLog "@DIR@/access_log" caplog
Timeout 2
<Location /gen>
    SetHandler bgd-test-gen
    BgDeliver On
    BgDeliverIdleTimeout 1
</Location>
<Location /genmt>
    SetHandler bgd-test-gen
    BgDeliver On
    BgDeliverMaxTime 1
</Location>
CONF
    my $s = http_connect(port => $srv->{port}, rcvbuf => 4096);
    http_send($s, 'GET', '/gen?size=3000000&chunk=100000&delay=100&flush=1');
    read_response($s, max_body => 10_000, chunk => 1024);
    sleep 4;            # reads nothing meanwhile
    close $s;
    # A client that reads at full speed through a stream that lasts longer
    # than Timeout and BgDeliverIdleTimeout is never idle.
    my $r = request(GET => '/gen?size=3000000&chunk=100000&delay=100&flush=1',
                    port => $srv->{port}, timeout => 15);
    my @l;
    wait_until(5, sub {
        open my $fh, '<', "$srv->{dir}/access_log" or return 0;
        @l = grep { m{^/gen } } <$fh>;
        return @l >= 2;
    });
    my ($stalled) = grep { /idle-timeout/ } @l;
    t_debug("logged: @l");
    my ($us) = ($stalled // '') =~ / (\d+)$/;
    ok t_cmp(defined $stalled ? 1 : 0, 1, 'handler still writing: the stalled client dropped (idle-timeout)');
    ok t_cmp(defined $us && $us < 2_500_000 ? 1 : 0, 1,
             sprintf('... about a second after it stopped reading, before the handler\'s end (%.2f s)',
                     ($us // 0) / 1e6));
    ok t_cmp(($stalled // '') =~ m{^/gen 200 X idle-timeout } ? 1 : 0, 1, '... logged as dropped');
    my $log = do { local $/; open my $fh, '<', "$srv->{dir}/error_log" or die $!; <$fh> };
    ok t_cmp($log =~ /BGD004: dropping slow client .* idle-timeout/ ? 1 : 0, 1, '... BGD004');
    ok t_cmp(join(' ', $r->{status}, length($r->{body} // '')), '200 3000000',
             'handler writing for 3 s, client reading at full speed: complete');
    # BgDeliverMaxTime while the handler writes: logged and counted as a
    # drop like any other (it was logged '-', counted nowhere).
    my $before = request(GET => '/bgdeliver-status?auto', port => $srv->{port});
    my ($d0) = ($before->{body} // '') =~ /^BgDeliverDropped: (\d+)/m;
    my $mt = request(GET => '/genmt?size=3000000&chunk=100000&delay=100&flush=1', port => $srv->{port},
                     rcvbuf => 4096, rate => 50_000, timeout => 10);
    my $after = request(GET => '/bgdeliver-status?auto', port => $srv->{port});
    my ($d1) = ($after->{body} // '') =~ /^BgDeliverDropped: (\d+)/m;
    my $line;
    wait_until(5, sub {
        open my $fh, '<', "$srv->{dir}/access_log" or return 0;
        ($line) = grep { m{^/genmt } } <$fh>;
        return defined $line;
    });
    ok t_cmp(($line // '') =~ m{^/genmt 200 X max-time } ? 1 : 0, 1,
             'max-time while the handler writes: logged as max-time');
    ok t_cmp(($d1 // 0) - ($d0 // 0), 1, '... and counted as dropped');
    $srv->{stop}->();
}
else {
    skip 'mod_bgd_test' for 1 .. 7;
}

# An internal redirect from the handler phase (an .htaccess-style front
# controller) to a paced response: the redirected request takes its slot,
# the first one no longer counts, so BgDeliverMaxPerClient 1 admits it.
{
    gen_file('bgdeliver/files/front-20k.bin', 20_000);
    my $srv = private_server(<<'CONF', test_modules => ['bgd_test'], std_modules => ['env', 'alias', 'rewrite']);
BgDeliverMaxPerClient 1
Alias /p/ "@DOCROOT@/bgdeliver/"
<Location /p/>
    BgDeliver On
    BgDeliverOverflow reject
    SetEnv bgd-test-pace 200000,0
</Location>
<Directory "@DOCROOT@/bgdeliver/front">
    RewriteEngine On
    RewriteRule "^" "/p/files/front-20k.bin" [L]
</Directory>
CONF
    my $r = request(GET => '/p/front/anything', port => $srv->{port}, timeout => 10);
    ok t_cmp(join(' ', $r->{status}, length($r->{body} // '')), '200 20000',
             'a paced redirect under BgDeliverMaxPerClient 1: admitted');
    $srv->{stop}->();
}

# A paced generated body several times BgDeliverSpoolLimit (32k): the
# handler waits for its line once the spool is full, instead of sending
# the rest at full speed; also when the client reads slower than the line.
if (have_module('bgd_test')) {
    for my $case (['line', '/paced/h/gen-tight?size=150000&pace=75000,0', undef, 1.7, 4],
                  ['client', '/paced/h/gen-tight?size=100000&pace=400000,0', 40_000, 2.0, 5]) {
        my ($who, $path, $rate, $lo, $hi) = @$case;
        my $m = log_mark();
        my $t0 = time;
        my $r = request(GET => $path, timeout => 15,
                        $rate ? (rcvbuf => 4096, rate => $rate) : ());
        my $t = time - $t0;
        my ($size) = $path =~ /size=(\d+)/;
        ok t_cmp(join(' ', $r->{status},
                      ($r->{body} // '') eq pattern($size) ? 'exact' : 'wrong bytes',
                      ($t > $lo && $t < $hi) ? 'paced' : sprintf('%.2f s', $t),
                      error_log_since($m) =~ /BGD013/ ? 'BGD013' : '-'),
                 '200 exact paced -',
                 sprintf('paced body past BgDeliverSpoolLimit, %s the slower: '
                         . 'the handler waits (%.2f s)', $who, $t));
    }
    # BgDeliverMaxTime ends it while its handler waits.
    my $m = log_mark();
    my $t0 = time;
    my $cut = request(GET => '/paced/h/gen-tight-maxtime?size=150000&pace=30000,0',
                      timeout => 15);
    my $took = time - $t0;
    ok t_cmp(join(' ', $cut->{complete} ? 'complete' : 'cut',
                  ($took > 0.8 && $took < 3) ? 'at the limit' : sprintf('%.2f s', $took),
                  error_log_since($m) =~ /BGD004.*max-time/ ? 'BGD004' : '-'),
             'cut at the limit BGD004',
             sprintf('BgDeliverMaxTime ends a paced body whose handler waits (%.2f s)', $took));
}
else {
    skip 'mod_bgd_test' for 1 .. 3;
}

# BgDeliverMaxPerClient counts an IPv6 client by its /64 (it can take any
# address in it) and an IPv4 one by its address; BgDeliverClientPrefix
# changes both.  The addresses come from X-Forwarded-For (mod_remoteip).
for my $case (['', '503 200 200 200'], ['BgDeliverClientPrefix 24 128', '200 200 503 200']) {
    my ($prefix, $expect) = @$case;
    my $srv = private_server(<<"CONF", std_modules => ['remoteip']);
RemoteIPHeader X-Forwarded-For
RemoteIPInternalProxy 127.0.0.1
BgDeliverMaxPerClient 1
$prefix
<Location /bgdeliver/>
    BgDeliver On
    BgDeliverOverflow reject
</Location>
CONF
    my $path = '/bgdeliver/files/caps-1m.bin';
    my @held = map { hold_delivery($path, port => $srv->{port},
                                   headers => { 'X-Forwarded-For' => $_ }) }
               ('2001:db8:0:1::1', '192.0.2.1');
    my @got = map { request(GET => $path, port => $srv->{port}, rcvbuf => 65536,
                            headers => { 'X-Forwarded-For' => $_ },
                            timeout => 10)->{status} }
              ('2001:db8:0:1::2', '2001:db8:0:2::1', '192.0.2.2', '192.0.3.1');
    close $_ for @held;
    ok t_cmp("@got", $expect,
             'one client per ' . ($prefix ? $prefix : 'IPv6 /64 and IPv4 address (default)')
             . ': 2001:db8:0:1::2, 2001:db8:0:2::1, 192.0.2.2, 192.0.3.1 '
             . 'next to held 2001:db8:0:1::1 and 192.0.2.1');
    $srv->{stop}->();
}
