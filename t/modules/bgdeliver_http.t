# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# HTTP stays correct through background delivery: HEAD, conditional GET,
# Range / multi-range / If-Range, HTTP/1.0, error documents, internal
# redirects, SSI sub-requests, keep-alive and pipelining.
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use Digest::MD5 qw(md5_hex);
use Time::HiRes qw(sleep);
use Bgd::Test qw(gen_file request http_connect http_send read_response
                 access_log_lines mpm_name bgd_status slurp pattern
                 private_server);

plan tests => 45, need need_module('mod_bgdeliver.c');

my $size = 200_000;
my $file = gen_file('bgdeliver/files/http-200k.bin', $size);
my $data = slurp($file);
my $url = '/bgdeliver/files/http-200k.bin';
my $bg = mpm_name() eq 'event';

sub last_note {
    my ($path) = @_;
    my @l = grep { index($_, "\"GET $path ") >= 0 || index($_, "\"HEAD $path ") >= 0 }
            access_log_lines();
    return '' unless @l;
    my @f = split ' ', $l[-1];
    return $f[-2];
}

# Plain GET, Content-Length kept.
my $r = request(GET => $url, rcvbuf => 8192, rate => 2_000_000);
ok t_cmp($r->{status}, 200, 'GET 200');
ok t_cmp($r->{headers}{'content-length'}, $size, 'Content-Length kept');
ok t_cmp(md5_hex($r->{body}), md5_hex($data), 'body intact');
ok t_cmp(last_note($url), $bg ? 'complete' : '-',
         'delivered in the background (event) or normally (other MPMs)');

# HEAD: headers only, same Content-Length.
$r = request(HEAD => $url);
ok t_cmp($r->{status}, 200, 'HEAD 200');
ok t_cmp($r->{headers}{'content-length'}, $size, 'HEAD Content-Length');
ok t_cmp(length $r->{leftover}, 0, 'HEAD sends no body');

# Conditional GET.
my $etag = $r->{headers}{etag};
$r = request(GET => $url, headers => { 'If-None-Match' => $etag });
ok t_cmp($r->{status}, 304, 'If-None-Match: 304');
$r = request(GET => $url, headers => { 'If-Modified-Since' => $r->{headers}{date} || 'Sun, 01 Jan 2090 00:00:00 GMT' });
ok t_cmp($r->{status}, 304, 'If-Modified-Since: 304');

# Single range, multiple ranges, If-Range.
$r = request(GET => $url, headers => { Range => 'bytes=1000-100999' },
             rcvbuf => 4096, rate => 1_000_000);
ok t_cmp($r->{status}, 206, 'single range: 206');
ok t_cmp($r->{body} eq substr($data, 1000, 100000) ? 1 : 0, 1, 'single range bytes');

$r = request(GET => $url, headers => { Range => 'bytes=0-99,150000-199999' },
             rcvbuf => 4096, rate => 1_000_000);
ok t_cmp($r->{status}, 206, 'multi range: 206');
my ($boundary) = ($r->{headers}{'content-type'} || '') =~ /boundary=(\S+)/;
my @parts = $boundary ? grep { /Content-Range/i } split /--\Q$boundary\E/, $r->{body} : ();
ok t_cmp(scalar @parts, 2, 'two parts');
ok t_cmp((@parts == 2 && index($parts[1], substr($data, 150000, 50000)) >= 0) ? 1 : 0, 1,
         'second part carries the right bytes');

$r = request(GET => $url, headers => { Range => 'bytes=0-9', 'If-Range' => $etag });
ok t_cmp($r->{status}, 206, 'If-Range matching: 206');
$r = request(GET => $url, headers => { Range => 'bytes=0-9', 'If-Range' => '"nope"' },
             rcvbuf => 8192, rate => 2_000_000);
ok t_cmp($r->{status}, 200, 'If-Range not matching: full 200');
ok t_cmp(length $r->{body}, $size, 'If-Range not matching: whole body');

# HTTP/1.0 client: the connection closes after the body.
{
    my $s = http_connect(rcvbuf => 8192);
    syswrite $s, "GET $url HTTP/1.0\r\n\r\n";
    my $res = read_response($s, rate => 2_000_000);
    ok t_cmp($res->{body} eq $data ? 1 : 0, 1, 'HTTP/1.0: body intact');
    my $n = sysread($s, my $buf, 10);
    ok t_cmp($n, 0, 'HTTP/1.0: connection closed after the response');
}

# Error document that is a large file (internal redirect): correct bytes.
$r = request(GET => '/bgdeliver/errdoc/missing.bin', rcvbuf => 8192, rate => 2_000_000);
ok t_cmp($r->{status}, 404, 'error document status');
ok t_cmp(md5_hex($r->{body}), md5_hex($data), 'error document body');

# Internal redirect by mod_rewrite [PT] in a per-dir context, as in any
# .htaccess front controller: the first request suspends for the new one,
# whose response is delivered in the background.
my $once = "/bgdeliver/redirect/anything.txt?run=$$." . time;
$r = request(GET => $once, rcvbuf => 8192, rate => 2_000_000);
ok t_cmp(md5_hex($r->{body}), md5_hex($data), 'internal redirect body');
{
    my @lines;
    for (1 .. 40) {
        @lines = grep { index($_, "\"GET $once ") >= 0 } access_log_lines();
        last if @lines;
        sleep 0.05;
    }
    my @outcome = map { / 200 200000 \d+ \d+ (\S+) \+$/ ? $1 : $_ } @lines;
    ok t_cmp("@outcome", $bg ? 'complete' : '-',
             'internal redirect: delivered in the background, logged once');
}

# SSI: the included file is a sub-request, part of the main response.  The
# page itself is small: its output is not.
# (Where the engine cannot run, prefork and worker, it counts a fallback.)
my $taken = sub { my $st = bgd_status();
                  $st->{BgDeliverStarted} + $st->{BgDeliverFallbacks} };
my $before = $taken->();
$r = request(GET => '/bgdeliver/ssi/page.shtml', rcvbuf => 8192, rate => 2_000_000);
ok t_cmp($r->{status}, 200, 'SSI 200');
ok t_cmp(index($r->{body}, $data) > 0 ? 1 : 0, 1, 'SSI includes the whole file');
ok t_cmp($taken->() - $before, 1,
         'SSI: a small page whose output is large goes to the engine');


# Keep-alive: three requests on one connection, the first two delivered
# in the background; the socket is reused.
{
    my $s = http_connect(rcvbuf => 8192);
    my $ok = 0;
    for my $i (1 .. 3) {
        http_send($s, 'GET', $i < 3 ? $url : '/bgdeliver/small.txt');
        my $res = read_response($s, rate => 4_000_000);
        $ok++ if $res->{status} == 200
                 && ($i < 3 ? $res->{body} eq $data : $res->{body} eq "hello\n");
    }
    ok t_cmp($ok, 3, 'keep-alive: three responses on one connection');
}

# GET each [path, body] in turn on one keep-alive connection: "ok" or
# "bad" for each response.
sub on_one_connection {
    my $s = http_connect(rcvbuf => 8192);
    my @got;
    for my $want (@_) {
        http_send($s, 'GET', $want->[0]);
        my $res = read_response($s, rate => 4_000_000);
        push @got, ($res->{status} || 0) == 200
                   && ($res->{body} // '') eq $want->[1] ? 'ok' : 'bad';
    }
    return "@got";
}

# A CGI's local Location: is an internal redirect from inside its handler
# too: in the background, and the connection goes on.
{
    my $cgi = '/bgdeliver/cgi/local-redirect.pl';
    ok t_cmp(on_one_connection([ $cgi, $data ],
                               [ '/bgdeliver/small.txt', "hello\n" ]),
             'ok ok', 'CGI local redirect, then keep-alive');
    ok t_cmp(last_note($cgi), $bg ? 'complete' : '-',
             'CGI local redirect: delivered in the background');
}

# A redirect to a handler that gives its body to a producer (also by way of
# a CGI's local Location:, three requests): the body is the producer's,
# chunked, and the connection goes on.
ok t_cmp(on_one_connection([ '/bgdeliver/redirect-producer/x', pattern(100000) ],
                           [ '/bgdeliver/small.txt', "hello\n" ],
                           [ '/bgdeliver/redirect-cgi/x', pattern(100000) ],
                           [ '/bgdeliver/small.txt', "hello\n" ]),
         'ok ok ok ok',
         'redirect to a producer, directly and through a CGI, then keep-alive');

# Pipelining: three requests written at once, answered in order.
{
    my $s = http_connect(rcvbuf => 8192);
    my $req = "GET $url HTTP/1.1\r\nHost: x\r\n\r\n"
            . "GET /bgdeliver/small.txt HTTP/1.1\r\nHost: x\r\n\r\n"
            . "GET $url HTTP/1.1\r\nHost: x\r\nRange: bytes=5-14\r\n\r\n";
    syswrite $s, $req;
    my @res = map { read_response($s, rate => 4_000_000) } 1 .. 3;
    ok t_cmp($res[0]{body} eq $data ? 1 : 0, 1, 'pipelined 1: big body first');
    ok t_cmp($res[1]{body}, "hello\n", 'pipelined 2: small body second');
    ok t_cmp($res[2]{body}, substr($data, 5, 10), 'pipelined 3: range third');
}

# Generated content of unknown length goes out chunked, correctly.
{
    my $res = request(GET => '/bgdeliver/h/gen?size=300000&chunk=5000',
                      rcvbuf => 8192, rate => 2_000_000);
    ok t_cmp(($res->{headers}{'transfer-encoding'} || '') =~ /chunked/ ? 1 : 0, 1,
             'generated: chunked');
    ok t_cmp(length $res->{body}, 300000, 'generated: all bytes');
}

# A small file is not worth the engine (BgDeliverMinSize).
request(GET => '/bgdeliver/small.txt');
ok t_cmp(last_note('/bgdeliver/small.txt'), '-', 'small response: normal delivery');

# The access log line carries the true bytes.
my @l = grep { index($_, "\"GET $url HTTP/1.1\" 200 ") >= 0 } access_log_lines();
ok t_cmp((split ' ', $l[0])[9], $size, '%b is the body size');

# Large ranges of a file without sendfile, to a client that takes them as
# fast as they come: with room for a pass of megabytes in the socket (no
# SendBufferSize, the private server's own), a direct write reads a 512 KB
# block of the file and must end there, not go on to the boundary after a
# range that did not fit (which once went out in place of the file's bytes:
# same length, a corrupt part).
{
    my $big = 3_000_000;
    my $bigfile = gen_file('bgdeliver/files/http-3m.bin', $big);
    my $bigdata = slurp($bigfile);
    my $srv = private_server(<<'CONF');
SendBufferSize 0
<Location /bgdeliver/>
    BgDeliver On
    EnableSendfile Off
</Location>
CONF
    my @ranges = ([0, 999_999], [1_000_100, 1_999_999], [2_000_100, 2_999_999]);
    my $spec = 'bytes=' . join ',', map { "$_->[0]-$_->[1]" } @ranges;
    for my $round (1 .. 3) {
        my $res = request(GET => '/bgdeliver/files/http-3m.bin',
                          port => $srv->{port}, rcvbuf => 8 << 20,
                          headers => { Range => $spec });
        my ($b) = ($res->{headers}{'content-type'} || '') =~ /boundary=(\S+)/;
        my @got;
        for my $part ($b ? split(/\r\n--\Q$b\E(?:--)?\r\n/, "\r\n$res->{body}") : ()) {
            my ($head, $body) = split /\r\n\r\n/, $part, 2;
            next unless defined $body && $head =~ m{Content-Range: bytes (\d+)-(\d+)/}i;
            push @got, [$1, $2, $body];
        }
        my $right = grep { $got[$_] && $got[$_][0] == $ranges[$_][0]
                           && $got[$_][2] eq substr($bigdata, $ranges[$_][0],
                                                    $ranges[$_][1] - $ranges[$_][0] + 1) }
                    0 .. $#ranges;
        ok t_cmp(scalar @got, 3, "3 MB in three ranges, round $round: three parts");
        ok t_cmp($right, 3, "3 MB in three ranges, round $round: every part's bytes right");
    }
    $srv->{stop}->();
}

# An empty file included by SSI where sendfile is on comes as a file bucket
# of no bytes.  To a client that takes the page's first half as fast as it
# comes, that bucket is soon all that is left to send: it must not be a
# pass of nothing that waits for the socket for ever (the client was cut
# after Timeout, as a slow reader, and an engine thread spun meanwhile).
{
    my $srv = private_server(<<'CONF', std_modules => ['include', 'alias'], mkdir => ['ssi']);
SendBufferSize 0
Alias /ssi/ "@DIR@/ssi/"
<Location /ssi/>
    BgDeliver On
    EnableSendfile On
    Options +Includes
    # Not on the empty file: the filter would read its bucket away.
    AddOutputFilter INCLUDES .shtml
    AddType text/html .shtml
</Location>
CONF
    my $half = ('x' x 99) . "\n";
    $half x= 2000;
    open my $fh, '>', "$srv->{dir}/ssi/empty.txt" or die $!;
    close $fh;
    open $fh, '>', "$srv->{dir}/ssi/page.shtml" or die $!;
    print $fh $half, qq{<!--#include virtual="/ssi/empty.txt" -->}, $half;
    close $fh;
    my $res = request(GET => '/ssi/page.shtml', port => $srv->{port},
                      rcvbuf => 8 << 20, timeout => 10);
    ok t_cmp(length $res->{body}, 2 * length $half,
             'SSI: an empty file between two halves of a page, all of it in time');
    ok t_cmp($res->{body} eq $half . $half ? 1 : 0, 1, 'and the right bytes');
    $srv->{stop}->();
}

