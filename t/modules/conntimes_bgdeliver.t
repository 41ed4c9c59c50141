# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Background deliveries of mod_bgdeliver: the run phase ends at the hand-off,
# the delivery is off-worker time, the class is "bg", and the status page
# shows the deliveries in flight.  Needs the engine: skipped while
# mod_bgdeliver registers no bgdeliver_get_totals (its placeholder).
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestRequest;
use Apache::TestUtil;
use FindBin;
use POSIX ();
use Time::HiRes qw(time sleep);
use lib $FindBin::Bin;
use conntimes_util;

my $j = ct_json();
my $engine = $j && exists $j->{current}{background_in_flight};
plan tests => 11, need(need_module('conntimes', 'ct_test', 'bgdeliver'),
                      { 'the mod_bgdeliver engine (bgdeliver_get_totals) is not loaded' => $engine });

my $mpm = ct_mpm();
my $file = Apache::Test::vars('t_logs') . '/conntimes-big.bin';
open my $fh, '>', $file or die "$file: $!";
print $fh 'x' x (2 * 1024 * 1024);
close $fh;
chmod 0644, $file;

ok ct_reset();
my $tag = ct_tag();
# Watch the in-flight count while a slow reader holds the delivery.
my $pid = fork;
die "fork: $!" unless defined $pid;
if (!$pid) {
    ct_slow_reader('/conntimes-bg', $tag, 4096, 1.0);
    POSIX::_exit(0);
}
sleep 0.5;
my $during = ct_json();
waitpid $pid, 0;
# Only the event MPM lets the engine take the response; elsewhere it is
# delivered the ordinary way and never counted in flight.
ok t_cmp($during->{current}{background_in_flight}, $mpm eq 'event' ? 1 : 0,
         'in flight');

my ($h) = ct_wait_lines($tag, 1);
ok $h;
t_debug($h->{line}) if $h;
if ($mpm eq 'event') {
    ok t_cmp($h->{class}, 'bg');
    ok $h->{run} < 200_000;
    ok $h->{deliver} >= 850_000;
    ok $h->{offworker} >= 700_000 && $h->{worker} < 300_000;
}
else {
    # No WAITIO: the engine delivers in the foreground.
    ok t_cmp($h->{class}, 'fg');
    ok $h->{worker} >= 850_000;     # the worker waited for the reader
    ok $h->{deliver} + $h->{run} >= 850_000;
    ok $h->{offworker} < 300_000;   # nothing happened off the worker
}
ok ct_check_sums($h);
my $after = ct_json();
ok t_cmp($after->{classes}{$mpm eq 'event' ? 'bg' : 'fg'}{requests}, 1);

# A paced response (60,000 bytes at 100,000 B/s: pulses of 10 KB that
# never fill the socket): the engine paces it off the worker on event;
# elsewhere the worker sleeps between the pulses, and that is worker time.
if (have_module('bgd_test')) {
    $tag = ct_tag();
    my $r = GET '/conntimes-paced', Range => 'bytes=0-59999', 'X-CT-Tag' => $tag;
    ($h) = ct_wait_lines($tag, 1);
    t_debug($h ? $h->{line} : 'no line');
    ok t_cmp(($h // {})->{class}, 'bg', 'paced: class bg');
    ok $h && ($mpm eq 'event' ? $h->{worker} < 300_000 && $h->{offworker} >= 400_000
                              : $h->{worker} >= 500_000 && $h->{offworker} == 0);
}
else {
    skip('mod_bgd_test', 1) for 1 .. 2;
}
unlink $file;
