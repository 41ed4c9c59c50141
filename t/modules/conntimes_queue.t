# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# The NaviServer queueing scenario: a server with two workers, six
# near-simultaneous requests to a 500 ms handler.  Two are served at once,
# two wait 0.5 s, two wait 1 s: in the kernel's accept backlog, which is
# exactly what the queue phase must show.  This needs its own small server
# (same MPM as the suite), started here and stopped by its pid.
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use FindBin;
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(time sleep);
use lib $FindBin::Bin;
use conntimes_util;
use Bgd::Test qw(private_server two_workers_conf);

plan tests => 12, need_module('conntimes', 'ct_test');

my $mpm = ct_mpm();
$mpm = 'event' unless $mpm =~ /^(event|worker|prefork)$/;

my $mpm_conf = two_workers_conf($mpm);
my $conf = <<'CONF' . ct_private_locations();
KeepAlive Off
LogFormat "tag=%{X-CT-Tag}i queue=%{queue}^CT accept=%{accept}^CT read=%{read}^CT filter=%{filter}^CT run=%{run}^CT deliver=%{deliver}^CT total=%{total}^CT worker=%{worker}^CT offworker=%{offworker}^CT arrival=%{arrival}^CT" ct
CustomLog "@DIR@/access_log" ct
CONF
my $srv = private_server($conf, mpm => $mpm, mpm_conf => $mpm_conf,
                         modules => ['conntimes'], test_modules => ['ct_test']);
my ($dir, $port) = ($srv->{dir}, $srv->{port});
ok t_cmp(kill(0, $srv->{pid}) ? 1 : 0, 1, "private $mpm server with 2 workers on port $port");

sub request {
    my ($tag, $ms) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 10)
        or die "connect: $!";
    print $s "GET /sleep?ms=$ms HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           . "X-CT-Tag: $tag\r\nConnection: close\r\n\r\n";
    return $s;
}

# Let both workers come up and go idle.
for (1 .. 2) {
    my $s = request('warm', 0);
    local $/;
    <$s>;
}
sleep 0.3;

my $tag = ct_tag();
my @socks = map { request("$tag-$_", 500) } 1 .. 6;
# Read whichever answers first and close it at once: the server's lingering
# close waits for our FIN, and on prefork that holds the process.
my (%buf, @codes);
my $sel = IO::Select->new(@socks);
my $deadline = time + 10;
while ($sel->count && time < $deadline) {
    for my $s ($sel->can_read(0.5)) {
        my $n = sysread $s, $buf{$s}, 4096, length($buf{$s} // '');
        next if $n;
        push @codes, ($buf{$s} // '') =~ m{^HTTP/1\.1 (\d+)} ? $1 : 0;
        $sel->remove($s);
        close $s;
    }
}
ok t_cmp("@codes", '200 200 200 200 200 200', 'six responses');

my @lines;
for (1 .. 100) {
    open my $log, '<', "$dir/access_log" or die $!;
    @lines = grep { /tag=\Q$tag\E-/ } <$log>;
    last if @lines == 6;
    sleep 0.05;
}
ok t_cmp(scalar(@lines), 6, 'six log lines');
my @h = map { my %h = /(\w+)=(\S+)/g; \%h } @lines;
t_debug($_) for @lines;
my @q = sort { $a <=> $b } map { $_->{queue} } @h;
t_debug("queue: @q");
ok $q[0] < 100_000 && $q[1] < 100_000;
ok $q[2] >= 450_000 && $q[3] >= 450_000 && $q[3] < 700_000;
ok $q[4] >= 950_000 && $q[5] >= 950_000 && $q[5] < 1_250_000;
ok !grep { $_->{run} < 495_000 || $_->{run} > 650_000 } @h;
my $bad = 0;
for my $h (@h) {
    my $sum = 0;
    $sum += $h->{$_} for qw(queue accept read filter run deliver);
    $bad++ if $sum != $h->{total}
           || $h->{worker} + $h->{offworker} + $h->{queue} != $h->{total};
}
ok t_cmp($bad, 0, 'phases add up');
# The wait happened before any worker held the request.
ok !grep { $_->{worker} > 700_000 } @h;
ok $^O ne 'linux' || !grep { $_->{arrival} ne 'kernel' } @h;

# The private server's aggregates saw the same queue times.
my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 10);
print $s "GET /status?json HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
my $resp = do { local $/; <$s> } // '';
my ($body) = $resp =~ /\r\n\r\n(.*)$/s;
my $j = eval { JSON::PP->new->decode($body) } || {};
my $q = $j->{phases}{queue} || {};
ok t_cmp($j->{requests}, 8, 'two warm-ups and six timed');
ok $q->{max} && abs($q->{max} * 1e6 - $q[5]) < 2;
