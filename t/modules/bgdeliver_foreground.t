# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# A response in a BgDeliver scope that goes out the ordinary way (prefork
# and worker MPMs; on event, past a cap with BgDeliverOverflow fallback;
# a file below BgDeliverMinSize), with its file truncated under it:
# - it is not sent from a mapping of the file: the response stops short
#   with the original bytes, never with the zeros that a mapping reads past
#   the new end (EnableMMAP is on here, as by default);
# - over TLS, the connection is aborted at once and BGD026 is logged.
#   Stock mod_ssl ends such a response silently and keeps the connection,
#   so the client would wait for the missing bytes until KeepAliveTimeout;
# - over plain HTTP the core aborts such a connection by itself, but says
#   nothing: BGD026 is logged where mod_bgdeliver reads the file (prefork,
#   worker), BGD027 where the core writes it (event) and the response
#   ends aborted with its file now too short;
# - the child survives: stock Apache, reading a mapping past the new end
#   of the file, dies of SIGBUS with every connection it served.
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use Bgd::Test qw(gen_file http_connect http_send read_response mpm_name
                 bgd_status read_truncating log_mark error_log_since
                 access_log_lines wait_until slurp hold_delivery);

my $mpm = mpm_name();
my $tls = have_module('mod_ssl.c') && eval { require IO::Socket::SSL; 1 };
plan tests => 20, need_module('mod_bgdeliver.c');

my $keepalive_timeout = 5;              # t/conf/httpd.conf.in

# Holds two deliveries in flight in $vhost, the cap of bgd_caps and
# bgd_tls_caps (BgDeliverMaxPerClient 2): the next one falls back.
sub fill_cap {
    my (@o) = @_;
    return map { hold_delivery('/fallback/files/fg-hold.bin', @o) } 1 .. 2;
}

# GET $uri and truncate its file ($path) to 1,000,001 bytes after 100,000
# body bytes: the new end falls inside a page of a mapping.
sub get_truncated {
    my ($path, $uri, @o) = @_;
    my $s = http_connect(rcvbuf => 4096, @o);
    http_send($s, 'GET', $uri);
    my $res = read_truncating($s, $path, 100_000, 1_000_001,
                              rate => 400_000, chunk => 4096, timeout => 20);
    # How long the connection stayed open after its last byte: until its
    # end (EOF, or a reset), or until the read gave up (timeout).
    $res->{closed_after} = $res->{t_end} - ($res->{t_last} // $res->{t_start});
    t_debug("status $res->{status}, " . length($res->{body})
            . " body bytes, closed " . sprintf('%.2f', $res->{closed_after})
            . " s after the last one");
    return $res;
}

sub original_prefix {
    my ($orig, $res) = @_;
    my $got = $res->{body};
    return substr($orig, 0, length $got) eq $got ? 1 : 0;
}

sub last_access_line {
    my ($uri) = @_;
    my ($line) = grep { index($_, "\"GET $uri ") >= 0 }
                 reverse access_log_lines();
    return $line // '';
}

gen_file('bgdeliver/files/fg-hold.bin', 2_000_000);

# Plain HTTP.
my $path = gen_file('bgdeliver/files/fg-shrink.bin', 3_500_000);
my $orig = slurp($path);
my $uri = '/bgdeliver/files/fg-shrink.bin';
my @vhost;
my @hold;
if ($mpm eq 'event') {
    @vhost = (vhost => 'bgd_caps');
    @hold = fill_cap(@vhost);
    $uri = '/fallback/files/fg-shrink.bin';
}
my $fallbacks = bgd_status()->{BgDeliverFallbacks};
my $mark = log_mark();
my $res = get_truncated($path, $uri, @vhost);
close $_ for @hold;

ok t_cmp(bgd_status()->{BgDeliverFallbacks} > $fallbacks ? 1 : 0, 1,
         "delivered the ordinary way ($mpm MPM)");
ok t_cmp($res->{complete} ? 1 : 0, 0, 'truncated file: response is incomplete');
ok t_cmp(original_prefix($orig, $res), 1,
         'truncated file: every byte sent is a byte of the original');
# Read by the core (event) or by mod_bgdeliver (prefork, worker); on event
# the truncation is found when the response ends, after the access log.
my $tag = $mpm eq 'event' ? 'BGD027' : 'BGD026';
my $logged = wait_until(5, sub {
    error_log_since($mark) =~ /$tag: \S*fg-shrink\.bin changed/
});
ok t_cmp($logged ? 1 : 0, 1, "plain HTTP: the truncation is logged ($tag)");
unlink $path;

# Below BgDeliverMinSize (8M in /small/): the core serves the file.
sub small_file_truncated {
    my ($what, %o) = @_;
    my $name = $o{ssl} ? 'fg-small-tls.bin' : 'fg-small.bin';
    my $small = gen_file("bgdeliver/files/$name", 3_500_000);
    my $small_orig = slurp($small);
    my $m = log_mark();
    my $r = get_truncated($small, "/small/files/$name", %o);
    my $t = $o{ssl} || $mpm ne 'event' ? 'BGD026' : 'BGD027';
    ok t_cmp(!$r->{complete} && original_prefix($small_orig, $r) ? 1 : 0, 1,
             "$what, below BgDeliverMinSize, truncated: incomplete, every "
             . 'byte of the original');
    ok t_cmp(wait_until(5, sub {
                 error_log_since($m) =~ /$t: \S*\Q$name\E changed/
             }) ? 1 : 0, 1, "$what, below BgDeliverMinSize: logged ($t)");
    ok t_cmp(error_log_since($m) =~ /exit signal/ ? 1 : 0, 0,
             "$what, below BgDeliverMinSize: no child died");
    unlink $small;
}
small_file_truncated('plain HTTP');

# Paced through the API (a worker paces it on prefork and worker, the MPM
# on event): the truncation ends the connection at once, logged, marked X.
$path = gen_file('bgdeliver/files/fg-shrink-paced.bin', 3_500_000);
$orig = slurp($path);
$uri = '/paced/files/fg-shrink-paced.bin?pace=400000,0';
$mark = log_mark();
$res = get_truncated($path, $uri);
ok t_cmp(!$res->{complete} && original_prefix($orig, $res) ? 1 : 0, 1,
         'paced, truncated file: incomplete, every byte of the original');
ok t_cmp($res->{closed_after} < $keepalive_timeout - 2 ? 1 : 0, 1,
         'paced: the connection is closed after the last byte');
ok t_cmp(error_log_since($mark), qr/BGD007: \S*fg-shrink-paced\.bin changed/,
         'paced: the truncation is logged (BGD007)');
ok t_cmp(wait_until(5, sub { last_access_line($uri) =~ / X$/ }) ? 1 : 0, 1,
         'paced: the access log marks the response aborted (%X)');
unlink $path;

# HTTPS: mod_ssl reads the file.
if (!$tls) {
    skip('mod_ssl and IO::Socket::SSL needed', 1) for 1 .. 9;
    exit 0;
}
@vhost = (vhost => 'bgd_tls_caps', ssl => 1);
$path = gen_file('bgdeliver/files/fg-shrink-tls.bin', 3_500_000);
$orig = slurp($path);
$uri = '/fallback/files/fg-shrink-tls.bin';
@hold = $mpm eq 'event' ? fill_cap(@vhost) : ();
$fallbacks = bgd_status()->{BgDeliverFallbacks};
$mark = log_mark();
$res = get_truncated($path, $uri, @vhost);
close $_ for @hold;

ok t_cmp(bgd_status()->{BgDeliverFallbacks} > $fallbacks ? 1 : 0, 1,
         "HTTPS: delivered the ordinary way ($mpm MPM)");
ok t_cmp($res->{complete} ? 1 : 0, 0,
         'HTTPS, truncated file: response is incomplete');
ok t_cmp(original_prefix($orig, $res), 1,
         'HTTPS, truncated file: every byte sent is a byte of the original');
ok t_cmp($res->{closed_after} < $keepalive_timeout - 2 ? 1 : 0, 1,
         'HTTPS: the connection is closed after the last byte, not kept '
         . 'until KeepAliveTimeout');
ok t_cmp(error_log_since($mark), qr/BGD026: \S*fg-shrink-tls\.bin changed/,
         'HTTPS: the truncation is logged (BGD026)');
ok t_cmp(last_access_line($uri), qr/ X$/,
         'HTTPS: the access log marks the response aborted (%X)');
unlink $path;

small_file_truncated('HTTPS', vhost => 'bgd_tls_caps', ssl => 1);
