# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Where pacing runs inside a worker (prefork here; worker MPM and HTTP/2
# streams alike), a client that reads slower than the paced rate fills the
# socket: the worker must then wait for it in the core's blocking write,
# not spin.  The child's CPU time over the transfer tells the two apart
# (a spinning worker burns the whole wall-clock time).
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use Digest::MD5 qw(md5_hex);
use Time::HiRes qw(time);
use Bgd::Test qw(private_server server_pids gen_file http_connect
                 http_send read_response);

plan tests => 7, need need_module('mod_dialup.c'), need_module('mod_bgdeliver.c');

my $file = gen_file('bgdeliver/files/dialup-inworker-1m.bin', 1_000_000);
my $want = do { open my $fh, '<', $file or die $!; binmode $fh; local $/; md5_hex(<$fh>) };

my $srv = private_server(<<'CONF', mpm => 'prefork', modules => ['bgdeliver', 'dialup']);
EnableSendfile Off
<Location /bgdeliver/files/dialup-inworker-1m.bin>
    DialupRate 4M
    DialupLatency 0
</Location>
CONF

# CPU seconds (user + system) of the server's processes.
my $tick = eval { require POSIX; POSIX::sysconf(POSIX::_SC_CLK_TCK()) } || 100;
sub server_cpu {
    my $sum = 0;
    for my $pid ($srv->{pid}, server_pids($srv->{pid})) {
        open my $fh, '<', "/proc/$pid/stat" or next;
        # after "pid (comm) ": state ppid ... utime (12th) stime (13th)
        my @f = split ' ', ((<$fh> // '') =~ s/^.*\) //r);
        $sum += ($f[11] + $f[12]) / $tick if @f > 12;
    }
    return $sum;
}

# 500 KB/s paced, read at 100 KB/s through a 4 KB receive buffer: the
# 32 KB send buffer is full for almost all of the 3 s of this read.
my $s = http_connect(port => $srv->{port}, rcvbuf => 4096);
my $cpu0 = server_cpu();
my $t0 = time;
http_send($s, 'GET', '/bgdeliver/files/dialup-inworker-1m.bin', Connection => 'close');
my $r = read_response($s, rate => 100_000, max_body => 300_000, timeout => 20);
my $wall = time - $t0;
my $cpu = server_cpu() - $cpu0;
t_debug(sprintf 'read %d bytes in %.2f s, server CPU %.2f s',
                length($r->{body} // ''), $wall, $cpu);
ok t_cmp($r->{status}, 200, 'paced response in a prefork child');
ok t_cmp(length($r->{body} // '') >= 290_000 ? 1 : 0, 1, 'the slow client got its bytes');
ok t_cmp($cpu < 0.3 * $wall ? 1 : 0, 1,
         sprintf('the worker waited, it did not spin (%.2f s CPU in %.2f s)', $cpu, $wall));

close $s;

# Paced in the worker at full client speed: the bytes are exact.
my $s2 = http_connect(port => $srv->{port});
http_send($s2, 'GET', '/bgdeliver/files/dialup-inworker-1m.bin', Connection => 'close');
my $full = read_response($s2, timeout => 20);
close $s2;
ok t_cmp(md5_hex($full->{body} // ''), $want, 'paced in the worker: exact bytes');

# Said once at start-up, where it is true.
my $log = do { local $/; open my $fh, '<', "$srv->{dir}/error_log" or die $!; <$fh> };
ok t_cmp(scalar(() = $log =~ /DLP003: the prefork MPM cannot pace without a worker/g), 1,
         'DLP003 once at start-up');

# mod_dialup asks the engine (bgdeliver_waits_off_worker()), so both say
# the same: nothing under event, where the engine waits off the worker.
my $ev = private_server(<<'CONF', modules => ['bgdeliver', 'dialup']);
<Location /bgdeliver/files/dialup-inworker-1m.bin>
    DialupRate 4M
</Location>
CONF
my $evlog = do { local $/; open my $fh, '<', "$ev->{dir}/error_log" or die $!; <$fh> };
ok t_cmp(scalar(() = $evlog =~ /DLP003|BGD001/g), 0, 'event: neither DLP003 nor BGD001');
ok t_cmp(scalar(() = $log =~ /BGD001: the prefork MPM/g), 1, 'prefork: the engine says BGD001 with it');
