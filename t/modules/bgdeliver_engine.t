# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# On the event MPM, once a worker finds the socket of a delivery full, the
# engine thread of mod_bgdeliver waits for writability in its own poller
# and writes the rest itself: a slow reader costs workers its first and
# last visits only (note "bgdeliver-visits"), whether the file is read into
# memory or goes by sendfile(), with exact bytes and exact %O; over HTTPS
# the thread writes through mod_ssl (without it, each of the dozens of
# waits is a worker visit).  A connection the thread has written keeps
# alive.  With BgDeliverEngineThreads 2 (the
# test configuration), concurrent readers are spread over both threads.
# About 6 s in all.
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use Digest::MD5 qw(md5_hex);
use IO::Select;
use Bgd::Test qw(gen_file mpm_name request bgd_status visits_logged
                 http_connect http_send read_response parallel_requests);

plan tests => 19, need need_module('mod_bgdeliver.c'),
    need_module('mod_logio.c'), need_module('mod_ssl.c'),
    need { 'event MPM (the engine thread needs WAITIO)'
           => mpm_name() eq 'event' };

my $size = 1_000_000;
my $file = gen_file('bgdeliver/files/engine-1m.bin', $size);
my $md5 = do { open my $fh, '<', $file or die; binmode $fh; local $/;
               md5_hex(<$fh>) };

# 1-6: a reader of 1 MB at 1 MB/s through a 4 KB receive buffer: without
# the thread, each of the dozens of waits for the socket is a worker visit.
my $pulses0 = bgd_status()->{BgDeliverEnginePulses} // 0;
for my $case (['read', '/bgdeliver/files'], ['sendfile', '/sendfile/files']) {
    my ($how, $dir) = @$case;
    my $r = request('GET', "$dir/engine-1m.bin?engine-$how",
                    rcvbuf => 4096, rate => 1_000_000, chunk => 4096,
                    timeout => 20);
    ok t_cmp(($r->{status} // 0) . ' ' . md5_hex($r->{body} // ''),
             "200 $md5", "slow reader ($how): exact body");
    my ($status, $out, $visits) = visits_logged("engine-$how");
    ok t_cmp($out, ($r->{header_bytes} // 0) + $size,
             "slow reader ($how): %O counts the bytes the thread wrote");
    ok t_cmp($visits >= 1 && $visits <= 3 ? 1 : 0, 1,
             "slow reader ($how): $visits worker visits");
}
# 7
my $pulses = (bgd_status()->{BgDeliverEnginePulses} // 0) - $pulses0;
ok t_cmp($pulses >= 20 ? 1 : 0, 1,
         "the status counts the thread's writes (+$pulses)");

# 8-10: HTTPS, the same reader: the thread encrypts through mod_ssl.
my $writes0 = bgd_status()->{BgDeliverEnginePulses} // 0;
my $tls = request('GET', '/bgdeliver/files/engine-1m.bin?engine-tls',
                  ssl => 1, vhost => 'bgd_tls', rcvbuf => 4096,
                  rate => 1_000_000, chunk => 4096, timeout => 20);
ok t_cmp(($tls->{status} // 0) . ' ' . md5_hex($tls->{body} // ''),
         "200 $md5", 'HTTPS: exact body');
my (undef, $tls_out, $tls_visits) = visits_logged('engine-tls');
ok t_cmp($tls_visits >= 1 && $tls_visits <= 3 ? 1 : 0, 1,
         "HTTPS: $tls_visits worker visits");
my $tls_writes = (bgd_status()->{BgDeliverEnginePulses} // 0) - $writes0;
ok t_cmp($tls_writes >= 20 && $tls_out > $size ? 1 : 0, 1,
         "HTTPS: the thread wrote (+$tls_writes), %O $tls_out");

# 11-15: keep-alive after the thread has written a response (a slow
# start fills the socket first), then a small request on the same
# connection, then the file again at full speed.
my $s = http_connect(rcvbuf => 4096);
http_send($s, 'GET', '/sendfile/files/engine-1m.bin?engine-ka1');
my $r = read_response($s, rate => 2_000_000, chunk => 4096, timeout => 20);
ok t_cmp(($r->{status} // 0) . ' ' . md5_hex($r->{body} // ''),
         "200 $md5", 'keep-alive: first response exact');
my (undef, undef, $ka_visits) = visits_logged('engine-ka1');
ok t_cmp($ka_visits >= 1 && $ka_visits <= 3 ? 1 : 0, 1,
         "keep-alive: the thread wrote it ($ka_visits worker visits)");
http_send($s, 'GET', '/bgdeliver/files/engine-1m.bin?engine-ka2');
$r = read_response($s, timeout => 20);
ok t_cmp(($r->{status} // 0) . ' ' . md5_hex($r->{body} // ''),
         "200 $md5", 'keep-alive: second response on the same connection');
http_send($s, 'GET', '/bgdeliver/files/engine-1m.bin?engine-ka3',
          Connection => 'close');
$r = read_response($s, timeout => 20);
ok t_cmp(($r->{status} // 0) . ' ' . md5_hex($r->{body} // ''),
         "200 $md5", 'keep-alive: third response on the same connection');
my $eof = IO::Select->new($s)->can_read(5) && !sysread($s, my $buf, 1);
ok t_cmp($eof ? 1 : 0, 1, 'keep-alive: closed when asked');
close $s;

# 16-19: six concurrent readers; the test server runs two children, so at
# least one child has several at once and gives them to both of its
# engine threads (the least loaded one each time it parks a connection).
my $threads = bgd_status()->{BgDeliverEngineThreads} // '';
ok t_cmp($threads, 2, 'the status shows the engine threads per child');
my @before = split ' ', bgd_status()->{BgDeliverEngineThreadWrites} // '';
my @res = parallel_requests(map { {
    path => "/sendfile/files/engine-1m.bin?engine-par$_", rcvbuf => 4096,
    rate => 1_000_000, chunk => 4096, timeout => 30 } } 1 .. 6);
my $exact = grep { ($_->{status} // 0) == 200 && ($_->{md5} // '') eq $md5 }
            @res;
ok t_cmp($exact, 6, 'concurrent readers: all six bodies exact');
my @after = split ' ', bgd_status()->{BgDeliverEngineThreadWrites} // '';
ok t_cmp(scalar @after, 2, 'one write counter per engine thread');
my @gain = map { ($after[$_] // 0) - ($before[$_] // 0) } 0 .. 1;
ok t_cmp(($gain[0] > 0 && $gain[1] > 0) ? 1 : 0, 1,
         "both engine threads wrote (+$gain[0], +$gain[1])");
