# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# The status handler: protected reset, aggregates equal to the sum of what
# was logged, every format parses (Prometheus by a strict parser of the text
# exposition format), content negotiation, escaping, mod_status section, and
# the time series across a new interval and a reset (a private server with
# 10 s intervals).
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestRequest;
use Apache::TestUtil;
use FindBin;
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(time sleep);
use lib $FindBin::Bin;
use conntimes_util;
use Bgd::Test qw(private_server);

plan tests => 74, need_module('conntimes', 'ct_test', 'status');

my @PH = qw(accept queue read filter run deliver total worker offworker);

# A private server's ?json once it has recorded $n requests (a response
# can reach the client before its request is recorded), or the last one.
sub private_json {
    my ($http, $url, $n) = @_;
    my $j = {};
    for (1 .. 50) {
        my $r = $http->get("$url/status?json");
        $j = decode_json($r->{content}) if $r->{success};
        last if ($j->{requests} // 0) >= $n;
        sleep 0.05;
    }
    return $j;
}

# --- reset is protected
{
    my $j = ct_json();
    ok $j && $j->{reset_token} =~ /^[0-9a-f]{32}$/;
    my $ro = ct_json('/conntimes-status-ro?json');
    ok $ro && !exists $ro->{reset_token};
    my $r = POST '/conntimes-status-ro', [ reset => $j->{reset_token} ];
    ok t_cmp($r->code, 403, 'reset where ConntimesAllowReset is Off');
    $r = POST '/conntimes-status', [ reset => 'f' x 32 ];
    ok t_cmp($r->code, 403, 'reset with a wrong token');
    $r = POST '/conntimes-status';
    ok t_cmp($r->code, 403, 'reset without a token');
    ok t_cmp(ct_reset() ? 1 : 0, 1, 'reset with the token');
    my $after = ct_json();
    ok t_cmp($after->{requests}, 0, 'nothing counted after the reset');
    ok t_cmp(join(' ', map { $after->{arrivals}{$_} } qw(kernel worker stream)),
             '0 0 0', 'arrival sources zeroed by the reset');
    ok $after->{reset_token} ne $j->{reset_token};
    $r = PUT '/conntimes-status', content => 'x';
    ok t_cmp($r->code, 405, 'PUT');
    my $allow = $r->header('Allow') // '';
    ok t_cmp(($allow =~ /\bGET\b/ && $allow =~ /\bPOST\b/) ? 1 : 0, 1,
             "405: Allow names GET and POST ($allow)");
    $r = OPTIONS '/conntimes-status';
    ok t_cmp(join(' ', $r->code, $r->header('Allow') // '-'), qr/^200 .*\bPOST\b/,
             'OPTIONS answered with what the page allows');
}

# --- aggregates equal the sum of the logged values
my $tag = ct_tag();
for my $ms (5, 10, 20, 30, 40) {
    GET "/conntimes/sleep?ms=$ms", 'X-CT-Tag' => $tag;
}
GET '/conntimes/norecord?ms=1', 'X-CT-Tag' => $tag;      # not recorded
GET '/conntimes/xss', 'X-CT-Tag' => $tag;                # odd handler name
# A slow request whose URI carries markup.
ct_raw("GET /conntimes/sleep/%3Cscript%3Ealert(1)%3C/script%3E<b>?ms=260 "
       . "HTTP/1.1\r\nHost: 127.0.0.1\r\nX-CT-Tag: $tag\r\nConnection: close"
       . "\r\n\r\n");
my @lines = ct_wait_lines($tag, 8);
ok t_cmp(scalar(@lines), 8, 'eight logged');
my @rec = grep { $_->{uri} !~ /norecord/ } @lines;

my $j;
for (1 .. 50) {
    $j = ct_json();
    last if $j->{requests} >= 7;
    sleep 0.05;
}
ok t_cmp($j->{requests}, 7, 'seven recorded (ConntimesRecord Off honoured)');
my ($bad_sum, $bad_max) = (0, 0);
for my $p (@PH) {
    my ($sum, $max) = (0, 0);
    for my $h (@rec) {
        $sum += $h->{$p};
        $max = $h->{$p} if $h->{$p} > $max;
    }
    my $got = sprintf '%.0f', $j->{phases}{$p}{sum} * 1e6;
    $bad_sum++, t_debug("$p: json $got logged $sum") if $got != $sum;
    $bad_max++ if sprintf('%.0f', $j->{phases}{$p}{max} * 1e6) != $max;
    my $ph = $j->{phases}{$p};
    $bad_max++ unless $ph->{count} == 7 && $ph->{p50} <= $ph->{p90}
                      && $ph->{p90} <= $ph->{p99} && $ph->{p99} <= $ph->{max};
}
ok t_cmp($bad_sum, 0, 'sums equal the logged sums');
ok t_cmp($bad_max, 0, 'max and percentiles consistent');
ok t_cmp($j->{classes}{fg}{requests}, 7);
{
    my %logged = (kernel => 0, worker => 0, stream => 0);
    $logged{ $_->{arrival} }++ for @rec;
    ok t_cmp(join(' ', map { $j->{arrivals}{$_} } qw(kernel worker stream)),
             join(' ', map { $logged{$_} } qw(kernel worker stream)),
             'arrival sources counted as logged');
}
my %hd = map { $_->{handler} => $_->{requests} } @{ $j->{handlers} };
ok t_cmp($hd{'ct-sleep'}, 6, 'by handler');
ok exists $hd{"ct-<script>alert('x')</script>&amp;"};
t_debug(encode_json($j->{slow}));
ok t_cmp(scalar(grep { $_->{uri} =~ /script/ } @{ $j->{slow} }), 1,
         'the slow request is listed');
my $now = int(time / 60) * 60;
# The requests may straddle a minute boundary.  A reset keeps the requests
# the open interval already had, those of the test files before this one:
# with 100 or more requests in a point, a few slow ones can lift the
# average above the 99th percentile, so p99 >= average only holds below
# that (the rank then falls in the bucket of the slowest request).
my @pts = grep { $_->{t} >= $now - 60 } @{ $j->{series}{points} };
my $cnt = 0;
$cnt += $_->{count} for @pts;
ok $cnt >= 7 && !grep { $_->{count} < 100
                        && $_->{p99}{run} < $_->{avg}{run} * 0.99 } @pts;

# --- ?auto
{
    my $r = GET '/conntimes-status?auto';
    my @l = split /\n/, $r->content;
    my @bad = grep { !/^Conntimes[A-Za-z0-9]+: -?\d+(\.\d+)?$/ } @l;
    t_debug("bad auto line: $_") for @bad;
    ok !@bad;
    ok $r->content =~ /^ConntimesRequests: 7$/m;
    ok $r->content =~ /^ConntimesRunMaxUs: (\d+)$/m && $1 == sprintf('%.0f', $j->{phases}{run}{max} * 1e6);
}

# --- Prometheus exposition, parsed strictly
sub parse_prom {
    my ($text, $err) = @_;
    my (%type, %help, %seen, %series, $fam, %done);
    my $name_re = qr/[a-zA-Z_:][a-zA-Z0-9_:]*/;
    my $n = 0;
    for my $line (split /\n/, $text, -1) {
        $n++;
        next if $line eq '' && $n > 1 && $text =~ /\n\z/;
        if ($line =~ /^# HELP ($name_re) (.+)$/) {
            push @$err, "$n: HELP twice for $1" if $help{$1}++;
            next;
        }
        if ($line =~ /^# TYPE ($name_re) (counter|gauge|histogram|summary|untyped)$/) {
            push @$err, "$n: TYPE twice for $1" if $type{$1};
            push @$err, "$n: family $1 reopened" if $done{$1};
            $done{$fam} = 1 if $fam && $fam ne $1;
            $type{$1} = $2;
            $fam = $1;
            next;
        }
        if ($line =~ /^#/) { push @$err, "$n: bad comment: $line"; next }
        unless ($line =~ /^($name_re)(?:\{(.*)\})? (\S+)$/) {
            push @$err, "$n: bad sample: $line";
            next;
        }
        my ($name, $labels, $value) = ($1, $2 // '', $3);
        push @$err, "$n: bad value $value"
            unless $value =~ /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$|^[+-]Inf$|^NaN$/;
        my %l;
        my $rest = $labels;
        while (length $rest) {
            unless ($rest =~ s/^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)//) {
                push @$err, "$n: bad labels: $labels";
                last;
            }
            push @$err, "$n: label $1 twice" if exists $l{$1};
            $l{$1} = $2;
        }
        my $base = $name;
        $base =~ s/_(bucket|sum|count)$// if !$type{$name};
        my $t = $type{$base};
        push @$err, "$n: sample $name before its TYPE" unless $t && $base eq $fam;
        push @$err, "$n: counter $name does not end in _total"
            if $t && $t eq 'counter' && $name !~ /_total$/;
        my $key = $name . '{' . join(',', map { "$_=$l{$_}" } sort keys %l) . '}';
        push @$err, "$n: duplicate $key" if $seen{$key}++;
        push @{ $series{$base} }, [ $name, \%l, $value ];
    }
    # Histograms: le ascending, cumulative, +Inf equal to _count, a _sum.
    for my $base (grep { $type{$_} eq 'histogram' } keys %type) {
        my %by;
        for my $s (@{ $series{$base} || [] }) {
            my ($name, $l, $v) = @$s;
            my %k = %$l;
            my $le = delete $k{le};
            my $id = join ',', map { "$_=$k{$_}" } sort keys %k;
            if ($name eq "${base}_bucket") {
                push @$err, "bucket without le" unless defined $le;
                push @{ $by{$id}{b} }, [ $le, $v ];
            }
            elsif ($name eq "${base}_count") { $by{$id}{c} = $v }
            elsif ($name eq "${base}_sum")   { $by{$id}{s} = $v }
            else { push @$err, "stray $name in histogram $base" }
        }
        for my $id (keys %by) {
            my $b = $by{$id}{b} || [];
            my ($prev_le, $prev_v) = (-1, 0);
            for my $x (@$b) {
                my $le = $x->[0] eq '+Inf' ? 9**9**9 : $x->[0];
                push @$err, "$base {$id}: le not ascending" if $le <= $prev_le;
                push @$err, "$base {$id}: not cumulative" if $x->[1] < $prev_v;
                ($prev_le, $prev_v) = ($le, $x->[1]);
            }
            push @$err, "$base {$id}: no +Inf bucket"
                unless @$b && $b->[-1][0] eq '+Inf';
            push @$err, "$base {$id}: +Inf != _count"
                unless defined $by{$id}{c} && @$b && $b->[-1][1] == $by{$id}{c};
            push @$err, "$base {$id}: no _sum" unless defined $by{$id}{s};
        }
    }
    return (\%type, \%series);
}

{
    my $r = GET '/conntimes-status?prometheus';
    ok t_cmp($r->header('Content-Type'), qr{^text/plain; version=0\.0\.4});
    my @err;
    my ($type, $series) = parse_prom($r->content, \@err);
    t_debug($_) for @err[0 .. ($#err > 9 ? 9 : $#err)];
    ok t_cmp(scalar(@err), 0, 'exposition parses strictly');
    ok t_cmp($type->{conntimes_request_phase_seconds}, 'histogram');
    my ($count, $sum) = (0, 0);
    for my $s (@{ $series->{conntimes_request_phase_seconds} }) {
        next unless $s->[1]{phase} eq 'total';
        $count += $s->[2] if $s->[0] =~ /_count$/;
        $sum += $s->[2] if $s->[0] =~ /_sum$/;
    }
    ok t_cmp($count, 7, 'histogram count');
    ok abs($sum - $j->{phases}{total}{sum}) < 1e-5;
    my ($req) = grep { $_->[1]{class} eq 'fg' } @{ $series->{conntimes_requests_total} };
    ok $req && $req->[2] == 7;
    ok $r->content =~ /handler="ct-<script>alert\('x'\)<\/script>&amp;"/;
    my $promtool = $ENV{PROMTOOL} || 'promtool';
    system("$promtool --version >/dev/null 2>&1") == 0
        ? do {
            my $f = Apache::Test::vars('t_logs') . '/conntimes.prom';
            open my $fh, '>', $f or die $!;
            print $fh $r->content;
            close $fh;
            ok t_cmp(system("$promtool check metrics < $f >/dev/null 2>&1") >> 8,
                     0, 'promtool');
        }
        : skip('promtool not installed', 1);
}

# --- content negotiation
{
    my $r = GET '/conntimes-status',
        Accept => 'application/openmetrics-text;version=1.0.0,application/'
                . 'openmetrics-text;version=0.0.1;q=0.75,text/plain;'
                . 'version=0.0.4;q=0.5,*/*;q=0.1';
    ok $r->content =~ /^# TYPE conntimes_request_phase_seconds histogram$/m;
    ok t_cmp($r->header('Vary'), qr/Accept/);
    $r = GET '/conntimes-status', Accept => 'application/json';
    ok t_cmp($r->header('Content-Type'), 'application/json');
    ok eval { decode_json($r->content)->{version} } == 1;
    $r = GET '/conntimes-status',
        Accept => 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';
    ok t_cmp($r->header('Content-Type'), qr{^text/html});
    # q=0 refuses a format; the highest q wins.
    $r = GET '/conntimes-status',
        Accept => 'application/json, application/openmetrics-text;q=0';
    ok t_cmp($r->header('Content-Type'), 'application/json', 'q=0 refuses');
    $r = GET '/conntimes-status',
        Accept => 'text/html;q=0.5, application/json;q=0.9';
    ok t_cmp($r->header('Content-Type'), 'application/json', 'highest q');
    # A tie goes to Prometheus; a wildcard does not bring back a refused
    # text/html.
    $r = GET '/conntimes-status', Accept => 'application/openmetrics-text, text/html';
    ok t_cmp($r->header('Content-Type'), qr{^text/plain; version=0\.0\.4}, 'a tie: Prometheus');
    $r = GET '/conntimes-status', Accept => 'text/html;q=0, */*, application/json;q=0.5';
    ok t_cmp($r->header('Content-Type'), 'application/json', 'text/html;q=0 beats */*');
    # Prometheus 3 limited to its text format 1.0.0, and a quoted version.
    for my $a ('text/plain;version=1.0.0;escaping=underscores',
               'text/plain; version="0.0.4"') {
        $r = GET '/conntimes-status', Accept => $a;
        ok t_cmp($r->header('Content-Type'), qr{^text/plain; version=0\.0\.4}, $a);
    }
    $r = GET '/conntimes-status', Accept => 'text/plain;version=2.0.0';
    ok t_cmp($r->header('Content-Type'), qr{^text/html}, 'an unknown version: the page');
    $r = GET '/conntimes-status', Accept => 'text/x-version=0.0.4';
    ok t_cmp($r->header('Content-Type'), qr{^text/html}, 'a media type, '
             . 'not a substring');
}

# --- HTML: escaped, inline SVG, nothing external
{
    my $r = GET '/conntimes-status';
    my $html = $r->content;
    ok $html =~ /<svg / && $html =~ /<polyline /;
    ok $html !~ /<script/i;
    ok $html =~ /ct-&#60;script&#62;alert\(&#39;x&#39;\)&#60;\/script&#62;&#38;amp;/;
    ok $html =~ m{<code>GET /conntimes/sleep/%3Cscript%3Ealert\(1\)%3C/script%3E&#60;b&#62;\?ms=260</code>};
    ok $html !~ /\b(?:src|href)="(?:https?:)?\/\//;
    ok t_cmp($r->header('Content-Security-Policy'), qr/default-src 'none'/);
}

# --- mod_status section
{
    my $r = GET '/server-status';
    ok $r->content =~ /Request phases \(mod_conntimes\)/;
    $r = GET '/server-status?auto';
    ok $r->content =~ /^ConntimesRequests: \d+$/m
        && $r->content =~ /^ConntimesQueueP99Us: \d+$/m;
}

# --- a URI in UTF-8 is shown as such; a byte that is not UTF-8 as its
# Latin-1 character (a JSON escape, an HTML character reference).
{
    ct_raw("GET /conntimes/sleep/\xc3\xa9t\xc3\xa9\xff?ms=260 HTTP/1.1\r\n"
           . "Host: 127.0.0.1\r\nConnection: close\r\n\r\n");
    my ($e, $body);
    for (1 .. 50) {
        $body = GET_BODY('/conntimes-status?json');
        ($e) = grep { $_->{uri} =~ /sleep\/.*t/ && $_->{uri} !~ /script/ }
               @{ (eval { decode_json($body) } || {})->{slow} || [] };
        last if $e;
        sleep 0.05;
    }
    ok t_cmp($e ? $e->{uri} : '-', qr{/conntimes/sleep/\x{e9}t\x{e9}\x{ff}\?ms=260},
             'json: UTF-8 as it is, another byte as \u00XX');
    my $html = GET_BODY('/conntimes-status');
    ok t_cmp(index($html, "/conntimes/sleep/\xc3\xa9t\xc3\xa9&#255;?ms=260") >= 0 ? 1 : 0,
             1, 'HTML: UTF-8 as it is, another byte as a character reference');
}

# --- a single request: its percentiles are that request's time, not the
# middle of its histogram bucket.
{
    ok ct_reset();
    GET '/conntimes/sleep?ms=60';
    my $j;
    for (1 .. 50) {
        $j = ct_json();
        last if $j->{requests} >= 1;
        sleep 0.05;
    }
    my $run = $j->{phases}{run};
    t_debug(encode_json($run));
    ok t_cmp(join(' ', $run->{count}, $run->{p50}, $run->{p99}),
             join(' ', 1, $run->{max}, $run->{max}),
             'one request: p50 = p99 = max');
}

# --- the chart's scale spans both lines.  One 1 s request among 150 fast
# ones puts the run average (~7 ms) above the run p99 (a fast request's):
# the y axis must reach down to that p99 and up to that average.  A private
# server, so that no earlier request shares the interval.
{
    my $mpm = ct_mpm();
    $mpm = 'event' unless $mpm =~ /^(event|worker|prefork)$/;
    # One-hour intervals: the 151 requests all but surely share one point
    # (a boundary among the first hundred would leave no point whose
    # average is above its p99).
    my $srv = private_server("ConntimesSeriesInterval 3600\n" . ct_private_locations(),
                             mpm => $mpm, modules => ['conntimes'],
                             test_modules => ['ct_test']);
    my $url = "http://127.0.0.1:$srv->{port}";
    my $http = HTTP::Tiny->new(timeout => 10);
    $http->get("$url/sleep?ms=1000");
    $http->get("$url/sleep?ms=0") for 1 .. 150;
    my $j = private_json($http, $url, 151);
    my $html = $http->get("$url/status")->{content} // '';
    my ($svg) = $html =~ m{(<svg[^>]*><title>run: .*?</svg>)}s;
    my %decade = ('1µs' => 0, '10µs' => 1, '100µs' => 2, '1ms' => 3,
                  '10ms' => 4, '100ms' => 5, '1s' => 6, '10s' => 7);
    my @d = sort { $a <=> $b } grep { defined }
            map { $decade{$_} } ($svg // '') =~ m{class="y">([^<]+)</text>}g;
    my ($lo, $hi) = (10 ** ($d[0] // 9), 10 ** ($d[-1] // -1));
    my ($out, $above) = (0, 0);
    for my $p (grep { $_->{count} } @{ $j->{series}{points} || [] }) {
        my ($avg, $p99) = ($p->{avg}{run} * 1e6, $p->{p99}{run} * 1e6);
        t_debug("run chart $lo .. $hi us: avg $avg us, p99 $p99 us");
        $above++ if $avg > $p99;
        $out += grep { ($_ < 1 ? 1 : $_) < $lo || $_ > $hi } $avg, $p99;
    }
    ok t_cmp($above ? 1 : 0, 1, 'an average above its p99');
    ok t_cmp($out, 0, 'the run chart spans every average and p99');
    $srv->{stop}->();
}

# --- a clock set back: the time series goes on from the present interval.
# libfaketime moves the server's clock (not the kernel's stamps, hence
# ConntimesKernelTimestamps Off) by the offset in a file it re-reads.
{
    my ($ft) = grep { -e } map { "$_/faketime/libfaketimeMT.so.1" }
                             '/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu',
                             '/usr/lib';
    if (!$ft || $ENV{LD_PRELOAD}) {
        # Preloaded next to the sanitizer runtime (make SANITIZE=1), it
        # deadlocks processes at start-up.
        skip($ft ? 'libfaketime does not start next to the sanitizer runtime'
                 : 'libfaketime not installed', 1);
    }
    else {
        my $mpm = ct_mpm();
        $mpm = 'event' unless $mpm =~ /^(event|worker|prefork)$/;
        my $offset = Apache::Test::vars('t_logs') . "/faketime.$$";
        open my $fh, '>', $offset or die $!;
        print $fh "+0\n";
        close $fh;
        my $srv = private_server("ConntimesSeriesInterval 10\nConntimesKernelTimestamps Off\n"
                                 . ct_private_locations(), mpm => $mpm,
                                 modules => ['conntimes'], test_modules => ['ct_test'],
                                 env => { LD_PRELOAD => $ft,
                                          FAKETIME_TIMESTAMP_FILE => $offset,
                                          FAKETIME_NO_CACHE => 1,
                                          FAKETIME_DONT_FAKE_MONOTONIC => 1 });
        my $url = "http://127.0.0.1:$srv->{port}";
        my $http = HTTP::Tiny->new(timeout => 10);
        $http->get("$url/sleep?ms=0") for 1 .. 3;
        # A response can reach the client before its request is recorded:
        # wait for the three before moving the clock.
        private_json($http, $url, 3);
        open $fh, '>', $offset or die $!;
        print $fh "-120\n";                             # twelve intervals back
        close $fh;
        $http->get("$url/sleep?ms=0") for 1 .. 2;
        my $j = private_json($http, $url, 5);
        my $shown = 0;
        $shown += $_->{count} for @{ $j->{series}{points} || [] };
        ok t_cmp($shown, 2, 'after the clock went back 2 minutes, the series '
                 . 'shows the requests made since');
        $srv->{stop}->();
        unlink $offset;
    }
}

# --- bounded handler cardinality: 12 named slots, the rest in "(other)".
# A handler that calls itself "(other)" goes there too, and names that
# differ only in bytes shown as '?' share one slot: the exposition must not
# carry two series with the same labels.
if (have_module('rewrite')) {
    ok ct_reset();
    GET "/conntimes/hx/$_" for '%28other%29', 'ct-%C3%A91', 'ct-%C3%BC1';
    my $j;
    for (1 .. 50) {
        $j = ct_json();
        last if $j->{requests} >= 3;
        sleep 0.05;
    }
    GET "/conntimes/h/n$_" for 1 .. 20;
    for (1 .. 50) {
        $j = ct_json();
        last if $j->{requests} >= 23;
        sleep 0.05;
    }
    my %h = map { $_->{handler} => $_->{requests} } @{ $j->{handlers} };
    my $named = grep { /^ct-h-n\d+$/ } keys %h;
    ok t_cmp($named, 11, 'ConntimesMaxHandlers 12 named slots');
    ok t_cmp($h{'ct-??1'}, 2, 'names differing in non-ASCII bytes share one');
    ok t_cmp($h{'(other)'}, 10, 'the rest in (other), with its namesake');
    my @err;
    parse_prom(GET_BODY('/conntimes-status?prometheus'), \@err);
    t_debug($_) for @err;
    ok t_cmp(scalar(@err), 0, 'no duplicate series');
    # A name taken from the URL cannot forge log fields or lines.
    my (undef, $l) = ct_get_logged('/conntimes/hx/a%22b%5cc%1b');
    ok t_cmp($l ? $l->{handler} : '-', 'a\\"b\\\\c\\x1b',
             'handler from the URL: escaped in the access log');
}
else {
    skip('mod_rewrite', 1) for 1 .. 6;
}

# --- the time series across a new interval and a reset.  The series is
# derived from the aggregates, so each point must hold exactly the requests
# that ended in its interval (as logged: start + total): the first request
# of an interval must not count in the previous one, a reset must not take
# the open interval's requests away, and an interval's p99 is bounded by
# its own maximum, not by an earlier interval's.
{
    my $iv = 10;
    my $mpm = ct_mpm();
    $mpm = 'event' unless $mpm =~ /^(event|worker|prefork)$/;
    my $locations = ct_private_locations('ConntimesAllowReset On');
    my $srv = private_server(<<'CONF' . $locations, mpm => $mpm,
ConntimesSeriesInterval 10
LogFormat "tag=%{X-CT-Tag}i start=%{us}^CS total=%{total}^CT run=%{run}^CT" ct
CustomLog "@DIR@/access_log" ct
CONF
                             modules => ['conntimes'],
                             test_modules => ['ct_test']);
    my $url = "http://127.0.0.1:$srv->{port}";
    my $http = HTTP::Tiny->new(timeout => 10, max_redirect => 0);
    my $tag = ct_tag();
    my @codes;
    my $get = sub {
        push @codes, $http->get("$url/sleep?ms=$_[0]",
                                { headers => { 'X-CT-Tag' => $tag } })->{status};
    };
    my $json = sub {
        my $r = $http->get("$url/status?json");
        return $r->{success} ? decode_json($r->{content}) : {};
    };
    my $sleep_until = sub { my $d = $_[0] - time; sleep $d if $d > 0 };

    # Three requests in one interval (half a second to spare), the next
    # interval: two, a reset, two more.  At most one interval's wait.
    my $next = (int(time / $iv) + 1) * $iv;
    if ($next - time < 0.5) {
        $sleep_until->($next + 0.2);
        $next += $iv;
    }
    $get->($_) for 10, 20, 42;
    $sleep_until->($next + 0.2);
    $get->($_) for 5, 5;
    push @codes, $http->post_form("$url/status",
                                  { reset => $json->()->{reset_token} // '' })->{status};
    $get->($_) for 5, 10;
    my $j = $json->();
    ok t_cmp("@codes", '200 200 200 200 200 303 200 200', 'requests and reset');

    my @lines;
    for (1 .. 100) {
        open my $log, '<', "$srv->{dir}/access_log" or die $!;
        @lines = grep { /tag=\Q$tag\E / } <$log>;
        last if @lines >= 7;
        sleep 0.05;
    }
    my %by;
    for (@lines) {
        my %h = /(\w+)=(\S+)/g;
        my $i = int(($h{start} + $h{total}) / 1e6 / $iv);
        push @{ $by{$i} }, \%h;
    }
    my @iv = sort { $a <=> $b } keys %by;
    ok t_cmp(join(' ', map { scalar @{ $by{$_} } } @iv), '3 4',
             'logged: three requests in one interval, four in the next');

    my %pt = map { $_->{t} / $iv => $_ } @{ $j->{series}{points} || [] };
    t_debug(encode_json($j->{series}));
    ok t_cmp(join(' ', sort { $a <=> $b } keys %pt), "@iv",
             'a point for each of the two intervals, no other');
    my ($bad_count, $bad_sum, $bad_p99) = (0, 0, 0);
    for my $i (@iv) {
        my $p = $pt{$i} or next;
        my @h = @{ $by{$i} };
        $bad_count++ if $p->{count} != @h;
        for my $ph (qw(total run)) {
            my $sum = 0;
            $sum += $_->{$ph} for @h;
            $bad_sum++, t_debug("$i $ph: avg $p->{avg}{$ph} x $p->{count}, logged $sum")
                if abs($p->{avg}{$ph} * 1e6 * $p->{count} - $sum) > @h;
        }
        my @t = sort { $a <=> $b } map { $_->{total} } @h;
        my $p99 = $p->{p99}{total} * 1e6;
        $bad_p99++, t_debug("$i: p99 $p99 outside the logged $t[0] .. $t[-1]")
            if $p99 < $t[0] - 1 || $p99 > $t[-1] + 1;
    }
    ok t_cmp($bad_count, 0, 'each point counts the requests that ended in it');
    ok t_cmp($bad_sum, 0, 'averages equal the logged ones');
    ok t_cmp($bad_p99, 0, "p99 within the interval's own range");
    ok t_cmp($j->{requests}, 2, 'aggregates: the two requests since the reset');
}
