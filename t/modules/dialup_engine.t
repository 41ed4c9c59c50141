# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# On the event MPM the engine thread of mod_bgdeliver writes the pulses of
# a paced delivery: a 2-second V.92 download costs workers only its first
# and last visits, the bytes are right and mod_logio counts them (%O).
# Over HTTPS the thread writes the pulses through mod_ssl (without it,
# each pulse is a worker visit); the note "bgdeliver-visits" counts them.
#
# Both downloads run at once (about 2.3 s); then a client that stalls while
# the thread writes fills its socket, for which the thread waits itself,
# with the file read into memory and with sendfile() (about 2.2 s each);
# then a file truncated while the thread paces it, both ways (about 1 s
# each).
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use Digest::MD5 qw(md5_hex);
use Time::HiRes qw(time sleep);
use Bgd::Test qw(parallel_requests gen_file mpm_name wait_until http_connect
                 http_send read_response docroot log_mark
                 error_log_since bgd_status visits_logged read_truncating);

plan tests => 22, need need_module('mod_dialup.c'),
    need_module('mod_bgdeliver.c'), need_module('mod_logio.c'),
    need_module('mod_ssl.c'),
    need { 'event MPM (the engine thread needs WAITIO)'
           => mpm_name() eq 'event' };

my $V92 = 7000;
my $size = 14000;       # 2 s at V.92
my $file = gen_file('dialup/files/engine.bin', $size);
my $md5 = do { open my $fh, '<', $file or die; binmode $fh; local $/;
               md5_hex(<$fh>) };

my $pulses0 = bgd_status()->{BgDeliverEnginePulses};
my ($plain, $tls) = parallel_requests(
    { path => '/dialup/v92/engine.bin?plain' },
    { path => '/dialup/v92/engine.bin?tls', ssl => 1, vhost => 'dialup_tls' });

# 1-5: plain HTTP.
ok t_cmp("$plain->{status} $plain->{md5}", "200 $md5", 'plain: exact body');
my $secs = $plain->{t_end} - $plain->{t_start};
ok t_cmp(abs($secs - 0.120 - ($plain->{header_bytes} + $size - 1) / $V92)
         < 0.05 ? 1 : 0, 1, sprintf('plain: paced (%.3f s)', $secs));
my ($status, $out, $visits) = visits_logged('plain');
ok t_cmp($out, $plain->{header_bytes} + $size,
         'plain: %O counts the bytes the engine thread wrote');
ok t_cmp($visits >= 0 && $visits <= 3 ? 1 : 0, 1,
         "plain: $visits worker visits for about 20 pulses");
my $pulses = (bgd_status()->{BgDeliverEnginePulses} // 0) - ($pulses0 // 0);
ok t_cmp($pulses >= 15 ? 1 : 0, 1,
         "plain: the status counts the engine thread's pulses (+$pulses)");

# 6-9: HTTPS.
ok t_cmp("$tls->{status} $tls->{md5}", "200 $md5", 'HTTPS: exact body');
$secs = $tls->{t_end} - $tls->{t_start};
ok t_cmp(abs($secs - 0.120 - ($tls->{header_bytes} + $size - 1) / $V92)
         < 0.05 ? 1 : 0, 1, sprintf('HTTPS: paced (%.3f s)', $secs));
($status, $out, $visits) = visits_logged('tls');
ok t_cmp($status, 200, 'HTTPS: logged');
ok t_cmp($visits >= 0 && $visits <= 3 ? 1 : 0, 1,
         "HTTPS: $visits worker visits for about 20 pulses");

# 10-16: a T1 line (193,000 B/s) to a client with a 4 KB receive buffer
# that reads nothing for 1 s: the socket fills, the thread waits for
# writability itself (no worker visit), and pacing resumes on schedule
# once the client reads.
my $big = 400000;
my $bigfile = gen_file('dialup/files/engine-big.bin', $big);
my $bigmd5 = do { open my $fh, '<', $bigfile or die; binmode $fh; local $/;
                  md5_hex(<$fh>) };
for my $scope (qw(t1 t1sf)) {
    my $how = $scope eq 't1' ? 'read' : 'sendfile';
    my $s = http_connect(rcvbuf => 4096);
    my $t0 = time;
    http_send($s, 'GET', "/dialup/$scope/engine-big.bin?stall-$scope");
    sleep 1;
    my $r = read_response($s, timeout => 20);
    my $t1 = time;
    ok t_cmp(($r->{status} // 0) . ' ' . md5_hex($r->{body} // ''),
             "200 $bigmd5", "stalled client ($how): exact body");
    my $want = 0.020 + ($r->{header_bytes} + $big - 1) / 193000;
    ok t_cmp(abs(($t1 - $t0) - $want) < 0.25 ? 1 : 0, 1,
             sprintf('stalled client (%s): done on schedule (%.2f s, want '
                     . '%.2f s)', $how, $t1 - $t0, $want));
    ($status, $out, $visits) = visits_logged("stall-$scope");
    ok t_cmp($visits >= 0 && $visits <= 3 ? 1 : 0, 1, "stalled client "
             . "($how): the thread waits for the socket ($visits worker "
             . "visits)");
    next if $scope ne 't1';
    http_send($s, 'GET', '/dialup/v92/small.txt');
    $r = read_response($s, timeout => 5);
    ok t_cmp(($r->{status} // 0) . ' ' . ($r->{body} // ''), "200 " . do {
        open my $fh, '<', docroot() . '/dialup/files/small.txt' or die;
        local $/; <$fh> }, 'stalled client: keep-alive afterwards');
    close $s;
}

# 17-22: a file truncated while the thread paces it: the client gets fewer
# bytes than announced, each of them right, and BGD007 is logged.
for my $scope (qw(t1 t1sf)) {
    my $how = $scope eq 't1' ? 'read' : 'sendfile';
    my $rel = "dialup/files/engine-shrink-$scope.bin";
    unlink docroot() . "/$rel";
    my $path = gen_file($rel, 300000);
    my $orig = do { open my $fh, '<', $path or die; binmode $fh; local $/;
                    <$fh> };
    my $mark = log_mark();
    my $s = http_connect();
    http_send($s, 'GET', "/dialup/$scope/engine-shrink-$scope.bin");
    my $r = read_truncating($s, $path, 50000, 100000, timeout => 10);
    my $got = $r->{body} // '';
    ok t_cmp(!$r->{complete} && length($got) < 300000 ? 1 : 0, 1,
             "truncated file ($how): response incomplete ("
             . length($got) . ' bytes)');
    ok t_cmp(substr($orig, 0, length $got) eq $got ? 1 : 0, 1,
             "truncated file ($how): every byte sent is the original's");
    ok t_cmp(wait_until(5, sub { error_log_since($mark) =~ /BGD007/ })
             ? 1 : 0, 1, "truncated file ($how): logged (BGD007)");
    close $s;
    unlink $path;
}
