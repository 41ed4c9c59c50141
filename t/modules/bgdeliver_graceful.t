# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# A graceful restart lets in-flight deliveries finish (paced ones drain at
# full speed), then the old children exit; the new generation works.
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use Digest::MD5 qw(md5_hex);
use Time::HiRes qw(time sleep);
use Bgd::Test qw(gen_file slow_clients server_pids wait_until mpm_name request
                 bgd_status private_server http_connect http_send read_response
                 hold_delivery);

my $mpm = mpm_name();
plan tests => 15, need need_module('mod_bgdeliver.c'), need_module('mod_bgd_test.c'),
    need { "needs the event MPM (have $mpm)" => $mpm eq 'event' };

my $file = gen_file('bgdeliver/files/graceful-1m.bin', 1_000_000);
my $want = do { open my $fh, '<', $file; binmode $fh; local $/; md5_hex(<$fh>) };
my $ppid = do { open my $fh, '<', Apache::Test::vars('t_pid_file'); local $_ = <$fh>; chomp; $_ };
my @old = server_pids();

# Fork a group of paced downloads (1 MB at 20 kB/s: 50 s if paced to the
# end) that must drain quickly once the child is stopping.
my $paced_pid = fork;
if (!$paced_pid) {
    my ($res) = slow_clients(n => 3, path => '/paced/files/graceful-1m.bin?pace=20000,0',
                             rcvbuf => 65536, timeout => 30);
    my $ok = grep { $_->{status} == 200 && $_->{md5} eq $want } @$res;
    my $t = 0;
    for (@$res) { $t = $_->{t_end} - $_->{t_start} if $_->{t_end} - $_->{t_start} > $t }
    open my $fh, '>', Apache::Test::vars('t_logs') . "/graceful.paced" or die;
    print $fh "$ok $t\n";
    close $fh;
    require POSIX;
    POSIX::_exit(0);
}

my $t0 = time;
my $signalled;
my ($res) = slow_clients(n => 8, path => '/bgdeliver/files/graceful-1m.bin',
                         rcvbuf => 4096, rate => 250_000, every => 0.2,
                         sample => sub {
    if (!$signalled && time - $t0 > 1) {
        kill 'USR1', $ppid;     # graceful restart
        $signalled = time;
    }
    return ();
});
ok t_cmp(scalar(grep { $_->{status} == 200 && $_->{md5} eq $want } @$res), 8,
         'deliveries under way during the graceful restart finish intact');

waitpid $paced_pid, 0;
my ($ok, $t) = do {
    open my $fh, '<', Apache::Test::vars('t_logs') . "/graceful.paced"; split ' ', <$fh>;
};
ok t_cmp($ok, 3, 'paced deliveries finish intact');
t_debug("paced downloads took $t s");
ok t_cmp($t < 15 ? 1 : 0, 1, "paced deliveries drained at full speed ($t s, not 50)");

my $gone = wait_until(20, sub { !grep { kill 0, $_ } @old });
ok t_cmp($gone ? 1 : 0, 1, 'the old children exited');
my $r = request(GET => '/bgdeliver/files/graceful-1m.bin', rcvbuf => 8192, rate => 5_000_000);
ok t_cmp(md5_hex($r->{body}), $want, 'the new generation delivers');
ok t_cmp(wait_until(5, sub { bgd_status()->{BgDeliverInFlight} == 0 }) ? 1 : 0, 1,
         'the delivery table is clean after the restart');

# A child that only retires (here MaxConnectionsPerChild; the event MPM's
# idle-child reaping is the same) keeps pacing its deliveries: only a new
# generation makes them drain.  60,000 bytes at 20,000 B/s take 3 s.
{
    my $small = gen_file('bgdeliver/files/retire-60k.bin', 60_000);
    my $srv = private_server(<<'CONF', test_modules => ['bgd_test'], std_modules => ['env', 'alias']);
MaxConnectionsPerChild 3
Alias /paced "@DOCROOT@/bgdeliver/files"
<Location /paced>
    SetEnv bgd-test-pace 20000,0
</Location>
<Location /pid>
    SetHandler bgd-test-pid
</Location>
CONF
    my $pid_of = sub {
        my $r = request(GET => '/pid', port => $srv->{port}, timeout => 10);
        return $r->{body} =~ /pid=(\d+)/ ? $1 : 0;
    };
    # Connection 1 was private_server()'s probe.
    my $t0 = time;
    my $s = http_connect(port => $srv->{port});          # connection 2
    http_send($s, 'GET', '/paced/retire-60k.bin');
    my $old = $pid_of->();                               # 3: the last one
    my $r = read_response($s, timeout => 20);
    my $took = time - $t0;
    close $s;
    my $new;
    wait_until(10, sub { $new = $pid_of->(); $new && $new != $old });
    t_debug("pids: old $old new " . ($new // '-'));
    ok t_cmp($old && $new && $new != $old ? 1 : 0, 1,
             'the child retired after its third connection');
    ok t_cmp(slurp_ok($r->{body}, $small), 1, 'the paced delivery finishes intact');
    ok t_cmp($took > 2.7 && $took < 4 ? 1 : 0, 1,
             sprintf('and still paced (%.2f s for 3 s of line)', $took));
    $srv->{stop}->();
}

# A hard stop (SIGTERM) with deliveries in flight: the event MPM exits
# without closing the connections it waits for, so the child logs them
# itself, as aborted, once its threads are gone.  They had no access log
# line at all.
{
    my $srv = private_server(<<'CONF');
LogFormat "%U %>s %X %{bgdeliver}n %B" stoplog
CustomLog "@DIR@/access_log" stoplog
<Location /bgdeliver/files/>
    BgDeliver On
</Location>
CONF
    my @held = map { hold_delivery('/bgdeliver/files/graceful-1m.bin', port => $srv->{port}) } 1 .. 2;
    my $in_flight = wait_until(5, sub {
        my $r = request(GET => '/bgdeliver-status?auto', port => $srv->{port});
        ($r->{body} // '') =~ /^BgDeliverInFlight: 2$/m;
    });
    ok t_cmp($in_flight ? 1 : 0, 1, 'hard stop: two deliveries in flight');
    $srv->{stop}->();
    close $_ for @held;
    my @lines = do { open my $fh, '<', "$srv->{dir}/access_log" or die $!; grep { m{^/bgdeliver/files/graceful-1m.bin } } <$fh> };
    t_debug("logged: @lines");
    my @aborted = grep { m{ 200 X aborted (\d+)$} && $1 > 0 && $1 < 1_000_000 } @lines;
    ok t_cmp(scalar @aborted, 2, 'hard stop: both logged as aborted, with the bytes that left');
    my $log = do { local $/; open my $fh, '<', "$srv->{dir}/error_log" or die $!; <$fh> };
    ok t_cmp($log =~ /BGD038: the child stopped with 2 background deliveries in flight/ ? 1 : 0, 1,
             'hard stop: BGD038');
}

# A spool directory removed while the server runs (a cleaner of temporary
# files) does not stop the server at its next graceful restart: a warning,
# and generated responses go out the ordinary way.  The restart failed
# with a syntax error and the server was gone.
if (have_module('bgd_test')) {
    my $spool = Apache::Test::vars('t_logs') . "/spool-gone.$$";
    mkdir $spool or die "$spool: $!";
    chmod 0777, $spool;
    my $srv = private_server(<<"CONF", test_modules => ['bgd_test']);
BgDeliverSpoolDir $spool
<Location /gen>
    SetHandler bgd-test-gen
    BgDeliver On
</Location>
CONF
    rmdir $spool or die "$spool: $!";
    my $mark = -s "$srv->{dir}/error_log";
    kill 'USR1', $srv->{pid};
    my $log = '';
    wait_until(10, sub {
        open my $fh, '<', "$srv->{dir}/error_log" or return 0;
        seek $fh, $mark, 0;
        $log = do { local $/; <$fh> } // '';
        return $log =~ /resuming normal operations/;
    });
    ok t_cmp($log =~ /BGD039: BgDeliverSpoolDir '\Q$spool\E' is not an existing directory/ ? 1 : 0, 1,
             'spool directory gone at a restart: BGD039');
    ok t_cmp(kill(0, $srv->{pid}) ? 1 : 0, 1, '... and the server runs on');
    my $r = request(GET => '/gen?size=300000&chunk=20000', port => $srv->{port},
                    rcvbuf => 4096, rate => 2_000_000, timeout => 10);
    ok t_cmp(join(' ', $r->{status}, length($r->{body} // '')), '200 300000',
             '... a generated response beyond the memory limit is delivered');
    $srv->{stop}->();
}
else {
    skip 'mod_bgd_test' for 1 .. 3;
}

sub slurp_ok {
    my ($body, $file) = @_;
    open my $fh, '<', $file or return 0;
    binmode $fh;
    local $/;
    return ($body // '') eq <$fh> ? 1 : 0;
}
