# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# The demo of `make run`: t/demo/demo.sh starts it (here on free ports and
# in t/logs/demo, never disturbing a demo the user runs), every URL it
# advertises answers as described, and `stop` ends it.
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use Time::HiRes qw(time);
use Bgd::Test qw(free_port request wait_until);

plan tests => 16, need_module('mod_bgdeliver.c', 'mod_dialup.c', 'mod_conntimes.c');

my $vars = Apache::Test::vars();
my $top = $vars->{top_dir};
my $mpm = $ENV{TEST_MPM} || 'event';
my ($port, $tls) = (free_port(), free_port());
$ENV{DEMO_DIR} = "$vars->{t_logs}/demo";
my @cmd = ('sh', "$top/t/demo/demo.sh", undef, $vars->{httpd}, $port, $tls, $mpm);

$cmd[2] = 'start';
my $out = `@cmd 2>&1`;
ok t_cmp($?, 0, 'demo starts');
ok t_cmp($out, qr{http://127\.0\.0\.1:$port/dialup/}, 'it prints the URLs to try');
ok t_cmp($out, qr{make stop}, 'and how to stop it');

my $r = request(GET => '/', port => $port);
ok t_cmp($r->{status}, 200, 'index page');

$r = request(GET => '/big/big.bin', port => $port, rcvbuf => 65536, timeout => 60);
ok t_cmp(length $r->{body}, 52428800, 'the 50 MB file arrives whole');
my $bg = request(GET => '/bgdeliver-status?auto', port => $port);
ok t_cmp($bg->{body}, $mpm eq 'event' ? qr/^BgDeliverCompleted: [1-9]/m
                                       : qr/^BgDeliverEngine: worker$/m,
         'bgdeliver-status: through the engine (event), normal delivery otherwise');

my $t0 = time;
$r = request(GET => '/dialup/', port => $port);
my $ttfb = $r->{t_first} - $t0;
ok t_cmp(($r->{status} == 200 && $ttfb > 0.11) ? 1 : 0, 1,
         sprintf('/dialup/ at V.92: first byte after the latency (%.0f ms)', $ttfb * 1000));

# 8 MB, more than the kernel's socket buffers hold, read at 16 MB/s: the
# script is done long before its last byte leaves.
$r = request(GET => '/cgi-bin/stream.cgi?mb=8', port => $port,
             rcvbuf => 65536, rate => 16_000_000);
ok t_cmp(length $r->{body}, 8 << 20, 'the CGI streams 8 MB');
# Its access log line: delivered in the background (event), with the
# phases of mod_conntimes.  (A client that takes it all while the script
# runs gets it in the foreground: nothing is left to hand off.)
my $line;
wait_until(5, sub {
    open my $fh, '<', "$ENV{DEMO_DIR}/logs/access_log" or return 0;
    # The last: the log outlives a run of the demo.
    ($line) = (grep { m{"GET /cgi-bin/stream\.cgi\?mb=8 } } <$fh>)[-1];
    return $line;
});
ok t_cmp($line // '', $mpm eq 'event'
                      ? qr/ 200 8388608 .* bg=complete dialup=- [\d.]+( [\d.]+){5} bg$/
                      : qr/ 200 8388608 .* bg=- dialup=- [\d.]+( [\d.]+){5} fg$/,
         'its log line: delivered in the background (event), phases in ms');

$r = request(GET => '/conntimes-status?auto', port => $port);
ok t_cmp($r->{body}, qr/^ConntimesRequests: \d+/m, 'conntimes-status answers');
$r = request(GET => '/server-status?auto', port => $port);
ok t_cmp($r->{body}, qr/^ServerMPM: $mpm$/m, 'server-status answers, pinned MPM');
ok t_cmp($r->{body}, qr/^DialupVersion: mod_dialup\//m, 'our mod_dialup is the one loaded');

$r = request(GET => '/', port => $tls, ssl => 1);
ok t_cmp($r->{status}, 200, 'the TLS port answers');

my $listen = `ss -ltnH 2>/dev/null` // '';
my @ours = grep { /:(\Q$port\E|\Q$tls\E)\s/ } split /\n/, $listen;
ok t_cmp(scalar(grep { !/127\.0\.0\.1:/ } @ours), 0, 'it listens on 127.0.0.1 only');

$cmd[2] = 'stop';
$out = `@cmd 2>&1`;
ok t_cmp($?, 0, 'demo stops');
my $down = wait_until(5, sub {
    socket(my $s, Socket::PF_INET(), Socket::SOCK_STREAM(), 0);
    !connect($s, Socket::pack_sockaddr_in($port, Socket::inet_aton('127.0.0.1')));
});
ok t_cmp($down ? 1 : 0, 1, 'nothing listens on its port any more');
