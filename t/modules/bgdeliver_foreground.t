# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# A response in a BgDeliver scope that goes out the ordinary way (prefork
# and worker MPMs; on event, past a cap with BgDeliverOverflow fallback) is
# not sent from a mapping of its file: when the file is truncated under
# it, the response stops short with the original bytes, never with the
# zeros that a mapping reads past the new end (EnableMMAP is on here, as
# by default).
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use Bgd::Test qw(gen_file http_connect http_send read_response mpm_name
                 bgd_status read_truncating);

my $mpm = mpm_name();
plan tests => 3, need_module('mod_bgdeliver.c');

my $path = gen_file('bgdeliver/files/fg-shrink.bin', 3_500_000);
my $orig = do { open my $fh, '<', $path; binmode $fh; local $/; <$fh> };
my $uri = '/bgdeliver/files/fg-shrink.bin';
my (@vhost, @hold);
my $fallbacks = bgd_status()->{BgDeliverFallbacks};
if ($mpm eq 'event') {
    # Two deliveries of this client in flight fill bgd_caps' per-client
    # cap (BgDeliverMaxPerClient 2): the next one falls back.
    gen_file('bgdeliver/files/fg-hold.bin', 2_000_000);
    @vhost = (vhost => 'bgd_caps');
    for (1 .. 2) {
        my $s = http_connect(rcvbuf => 4096, @vhost);
        http_send($s, 'GET', '/bgdeliver/files/fg-hold.bin');
        read_response($s, max_body => 8192, chunk => 4096);
        push @hold, $s;
    }
    $uri = '/fallback/files/fg-shrink.bin';
    $fallbacks = bgd_status()->{BgDeliverFallbacks};
}

my $s = http_connect(rcvbuf => 4096, @vhost);
http_send($s, 'GET', $uri);
# To 1,000,001 bytes: the new end falls inside a page of the mapping.
my $res = read_truncating($s, $path, 100_000, 1_000_001,
                          rate => 400_000, chunk => 4096, timeout => 20);
close $_ for @hold;
t_debug("status $res->{status}, " . length($res->{body}) . " body bytes");

ok t_cmp(bgd_status()->{BgDeliverFallbacks} > $fallbacks ? 1 : 0, 1,
         "delivered the ordinary way ($mpm MPM)");
ok t_cmp($res->{complete} ? 1 : 0, 0, 'truncated file: response is incomplete');
my $got = $res->{body};
ok t_cmp(substr($orig, 0, length $got) eq $got ? 1 : 0, 1,
         'truncated file: every byte sent is a byte of the original');
unlink $path;
