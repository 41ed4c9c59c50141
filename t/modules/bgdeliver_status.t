# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# The bgdeliver-status handler (HTML, ?auto, ?json) lists in-flight
# deliveries of every child, escapes what clients control, and mod_status
# shows a section too.
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use Apache::TestRequest qw(GET PUT OPTIONS);
use JSON::PP ();
use Bgd::Test qw(gen_file http_connect http_send read_response wait_until
                 mpm_name bgd_status server_status slow_clients);

my $mpm = mpm_name();
plan tests => 21, need need_module('mod_bgdeliver.c'), need_module('mod_status.c');

gen_file('bgdeliver/files/status-2m.bin', 2_000_000);

# Three slow deliveries in flight, one with markup in its query string and
# one over TLS.
my $evil = '/bgdeliver/files/status-2m.bin?q=<script>alert("x")</script>&z=%22';
my @held;
for my $c ([$evil, 0], ['/bgdeliver/files/status-2m.bin', 0],
           ['/bgdeliver/files/status-2m.bin', 1]) {
    my $s = http_connect(rcvbuf => 4096, $c->[1] ? (ssl => 1, vhost => 'bgd_tls') : ());
    http_send($s, 'GET', $c->[0]);
    read_response($s, max_body => 4096, chunk => 1024);
    push @held, $s;
}
my $bg = $mpm eq 'event';

my $st = wait_until(3, sub { my $s = bgd_status(); @{ $s->{deliveries} } >= 3 ? $s : undef })
         || bgd_status();
ok t_cmp($st->{BgDeliverVersion}, qr{^mod_bgdeliver/\d}, '?auto: version');
ok t_cmp($st->{BgDeliverEngine}, $bg ? 'async' : 'worker', '?auto: engine');
ok t_cmp($st->{BgDeliverInFlight} >= ($bg ? 3 : 0) ? 1 : 0, 1, '?auto: in flight');
my @d = @{ $st->{deliveries} };
ok t_cmp(scalar(@d) >= ($bg ? 3 : 0) ? 1 : 0, 1, '?auto: one Delivery line each');
my ($tls) = grep { $_->{scheme} eq 'https' } @d;
ok t_cmp(($bg ? ($tls ? 1 : 0) : 1), 1, '?auto: the TLS delivery is marked https');
ok t_cmp(scalar(grep { $_->{uri} =~ /[<>" ]/ } @d), 0, '?auto: URIs are encoded');

my $res = GET('/bgdeliver-status?json');
ok t_cmp($res->header('Content-Type'), qr{^application/json}, 'json content type');
my $j = eval { JSON::PP::decode_json($res->content) };
ok t_cmp(ref $j, 'HASH', 'json parses');
ok t_cmp(index($res->content, '<script>'), -1, 'json: no raw markup');
my ($e) = grep { $_->{uri} =~ /script/ } @{ $j->{deliveries} || [] };
ok t_cmp($bg ? ($e && $e->{uri} eq $evil ? 1 : 0) : 1, 1, 'json: the URI round-trips exactly');
ok t_cmp(exists $j->{totals}{started} ? 1 : 0, 1, 'json: totals');

$res = GET('/bgdeliver-status');
my $html = $res->content;
ok t_cmp(index($html, '<script>'), -1, 'HTML: no raw markup from the request');
ok t_cmp($bg ? (index($html, '&lt;script&gt;') >= 0 ? 1 : 0) : 1, 1, 'HTML: escaped URI shown');
ok t_cmp($html, qr{<h1>Background deliveries</h1>}, 'HTML page');

$res = GET('/server-status');
ok t_cmp($res->content, qr{Background deliveries \(mod_bgdeliver\)}, 'mod_status section');
$res = GET('/server-status?auto');
ok t_cmp($res->content, qr{^BgDeliverInFlight: \d+$}m, 'mod_status ?auto lines');
close $_ for @held;

# A response whose handler still runs holds its place under the caps and
# is listed, as "handler", not yet as a delivery; "background" once its
# handler has handed it over (a 1.5 s pause between two pieces, then a
# slow client).
if ($bg && have_module('bgd_test')) {
    my $s = http_connect(rcvbuf => 4096);
    http_send($s, 'GET', '/bgdeliver/h/gen?size=600000&chunk=300000&delay=1500&q=modes');
    my $during = wait_until(1, sub {
        my ($d) = grep { $_->{uri} =~ /modes/ } @{ bgd_status()->{deliveries} };
        $d;
    });
    read_response($s, max_body => 4096, chunk => 1024);
    my $after = wait_until(5, sub {
        my ($d) = grep { $_->{uri} =~ /modes/ && $_->{mode} eq 'background' }
                  @{ bgd_status()->{deliveries} };
        $d;
    });
    close $s;
    ok t_cmp($during ? $during->{mode} : '-', 'handler', 'mode while the handler runs: handler');
    ok t_cmp($after ? $after->{mode} : '-', 'background', 'mode after the hand-off: background');
}
else {
    skip 'the event MPM and mod_bgd_test' for 1 .. 2;
}

# Methods: a 405 names what the page allows, and OPTIONS is answered.
$res = PUT('/bgdeliver-status', content => 'x');
ok t_cmp(join(' ', $res->code, $res->header('Allow') // '-'), qr/^405 .*\bGET\b/,
         'PUT: 405, Allow names GET');
$res = OPTIONS('/bgdeliver-status');
ok t_cmp(join(' ', $res->code, $res->header('Allow') // '-'), qr/^200 .*\bGET\b/,
         'OPTIONS: 200, Allow names GET');

# mod_status' "Total Duration" (ExtendedStatus) sums the time workers
# spent on requests.  A delivery ends on whatever worker the MPM gives
# it, whose start time was its own last request's, or 0: eight deliveries
# of about half a second added the epoch (some 1.8e12 ms) to it.
{
    my $before = server_status()->{'Total Duration'} // 0;
    my $t0 = time;
    slow_clients(n => 8, path => '/bgdeliver/files/status-2m.bin', rcvbuf => 4096,
                 rate => 4_000_000, chunk => 16384);
    my $took = time - $t0;
    wait_until(5, sub { bgd_status()->{BgDeliverInFlight} == 0 });
    my $added = (server_status()->{'Total Duration'} // 0) - $before;
    ok t_cmp($added >= 0 && $added < 8 * $took * 1000 + 5000 ? 1 : 0, 1,
             sprintf('Total Duration grew by %d ms for 8 deliveries in %.1f s', $added, $took));
}
