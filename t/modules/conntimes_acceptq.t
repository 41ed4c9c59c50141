# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# The accept-queue figure with listener buckets: with ListenCoresBucketsRatio
# the event MPM opens one SO_REUSEPORT listening socket per bucket, and the
# kernel spreads connections over them.  Only the first bucket's sockets are
# ap_listeners; the status page must still count the connections waiting in
# every bucket's queue, as `ss -ltn` does (TCP_INFO on ap_listeners shows the
# first bucket's queue only, and nothing in a child of another bucket, which
# has closed them).
#
# A private event server with one child of two workers per bucket.  One
# worker is held by the status request itself: its first line is sent
# first, so that a worker accepts the connection and waits for the rest
# (a status request sent later would wait in a queue like the others).
# Then /sleep requests fill the other workers and queue in the kernel, in
# every bucket, since a child whose workers are all busy stops accepting.
# The end of the status request then reads the queues while they stand.
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use FindBin;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use lib $FindBin::Bin;
use conntimes_util;
use Bgd::Test qw(private_server server_pids wait_until);

chomp(my $cpus = `getconf _NPROCESSORS_ONLN 2>/dev/null` || '');
chomp(my $ss = `command -v ss 2>/dev/null` || '');
plan tests => 6, need need_module('conntimes', 'ct_test'),
    { 'Linux (SO_REUSEPORT buckets)' => $^O eq 'linux',
      'ss (iproute2)' => $ss ne '',
      'two CPUs for two listener buckets' => ($cpus || 0) >= 2 };

# httpd makes CPUs / ratio buckets: a ratio of half the CPUs gives two
# (three on a 3-CPU machine), one child each.
my $ratio = int($cpus / 2);
my $buckets = int($cpus / $ratio);
my $workers = 2 * $buckets;
my $mpm_conf = <<"M";
ListenCoresBucketsRatio $ratio
StartServers $buckets
ServerLimit $buckets
ThreadLimit 2
ThreadsPerChild 2
MinSpareThreads 1
MaxSpareThreads $workers
MaxRequestWorkers $workers
M
my $srv = private_server("KeepAlive Off\n" . ct_private_locations(),
                         mpm => 'event', mpm_conf => $mpm_conf,
                         modules => ['conntimes'], test_modules => ['ct_test']);
my ($pid, $port) = @{$srv}{qw(pid port)};

# The listening sockets on our port: [accept queue, backlog] each.
sub listeners {
    my @l;
    for (`$ss -ltnH 'sport = :$port' 2>/dev/null`) {
        push @l, [$1, $2] if /^\S+\s+(\d+)\s+(\d+)\s/;
    }
    return @l;
}
sub sum { my $n = 0; $n += $_ for @_; $n }

wait_until(10, sub { (() = server_pids($pid)) == $buckets
                     && listeners() == $buckets });
ok t_cmp(scalar(listeners()), $buckets,
         "$buckets listening sockets (buckets) on port $port");

sub connect_send {
    my ($data) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 10)
        or die "connect: $!";
    $s->autoflush(1);
    print $s $data;
    return $s;
}

my $status = connect_send("GET /status?auto HTTP/1.0\r\nHost: 127.0.0.1\r\n");
# Accepted by a worker once no listener holds it in its queue.
ok wait_until(5, sub { sum(map { $_->[0] } listeners()) == 0 });

# Fill the workers and queue behind them until every bucket has at least
# two connections waiting; the sleep outlasts what follows.
my @sleepers;
my $req = "GET /sleep?ms=6000 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
push @sleepers, connect_send($req) for 1 .. $workers + 2;
while (@sleepers < 40) {
    sleep 0.3;
    last unless grep { $_->[0] < 2 } listeners();
    push @sleepers, connect_send($req) for 1 .. 2;
}
sleep 0.3;
my @before = listeners();
print $status "\r\n";
my $resp = do { local $/; <$status> } // '';
close $status;
t_debug("Recv-Q/Send-Q: " . join(' ', map { "$_->[0]/$_->[1]" } @before));
t_debug($_) for grep { /^HTTP|AcceptQueue/ } split /\r?\n/, $resp;

# The workers took one connection each, the kernel holds the rest.
my $waiting = @sleepers - ($workers - 1);
my ($q) = $resp =~ /^ConntimesAcceptQueue: (-?\d+)/m;
my ($limit) = $resp =~ /^ConntimesAcceptQueueLimit: (-?\d+)/m;
$q //= 'none';
$limit //= 'none';
ok t_cmp(scalar(grep { $_->[0] >= 2 } @before), $buckets,
         'connections wait in every bucket');
ok t_cmp($q, sum(map { $_->[0] } @before),
         'ConntimesAcceptQueue is the sum of the Recv-Q of every bucket');
# Give or take one the listener may have taken into the MPM while waiting
# for a worker (one bucket's queue alone is at least two short).
t_debug("ConntimesAcceptQueue $q, connections not taken by a worker $waiting");
ok $q =~ /^\d+$/ && $q <= $waiting && $q >= $waiting - 1;
ok t_cmp($limit, sum(map { $_->[1] } @before),
         'ConntimesAcceptQueueLimit is the sum of the backlogs');

close $_ for @sleepers;
$srv->{stop}->();
