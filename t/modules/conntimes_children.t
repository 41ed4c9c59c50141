# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Aggregation across child processes, and the aggregates surviving a
# graceful restart (the segment is found again in the retained data).
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestRequest;
use Apache::TestUtil;
use FindBin;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use lib $FindBin::Bin;
use conntimes_util;

plan tests => 8, need_module('conntimes', 'ct_test', 'status');

ok ct_reset();
my $tag = ct_tag();
# 30 concurrent 300 ms requests: more than one child's 25 threads on
# event/worker, several processes on prefork.
my @s = map {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => ct_port(),
                                  Timeout => 10) or die "connect: $!";
    print $s "GET /conntimes/sleep?ms=300 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           . "X-CT-Tag: $tag\r\nConnection: close\r\n\r\n";
    $s
} 1 .. 30;
my %pids;
for my $s (@s) {
    local $/;
    my $resp = <$s> // '';
    $pids{$1}++ if $resp =~ /^X-CT-Pid: (\d+)/mi;
}
ok t_cmp(scalar(keys %pids) >= 2 ? 1 : 0, 1,
         'served by ' . scalar(keys %pids) . ' processes');
my @lines = ct_wait_lines($tag, 30);
ok t_cmp(scalar(@lines), 30);
my $j;
for (1 .. 50) {
    $j = ct_json();
    last if $j->{requests} >= 30;
    sleep 0.05;
}
ok t_cmp($j->{requests}, 30, 'one aggregate over all children');
my $sum = 0;
$sum += $_->{run} for @lines;
ok t_cmp(sprintf('%.0f', $j->{phases}{run}{sum} * 1e6), $sum);

# Graceful restart: new children, same segment, same counts.
my $logs = Apache::Test::vars('t_logs');
open my $p, '<', "$logs/httpd.pid" or die $!;
chomp(my $ppid = <$p>);
close $p;
sub generation {
    my $r = GET '/server-status?auto';
    return $r->content =~ /^ParentServerConfigGeneration: (\d+)/m ? $1 : -1;
}
my $gen = generation();
kill 'USR1', $ppid;
my $new = $gen;
for (1 .. 100) {
    sleep 0.1;
    $new = generation();
    last if $new > $gen;
}
ok t_cmp($new > $gen ? 1 : 0, 1, "graceful restart ($gen -> $new)");
my $after = ct_json();
ok t_cmp($after->{requests}, 30, 'aggregates survived');
ok t_cmp($after->{since}, $j->{since}, 'same reset time');
