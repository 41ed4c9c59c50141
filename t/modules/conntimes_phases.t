# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Known delays injected into known phases must show up there, and only there.
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestRequest;
use Apache::TestUtil;
use FindBin;
use lib $FindBin::Bin;
use conntimes_util;
use Time::HiRes qw(time sleep);

plan tests => 51, need_module('conntimes', 'ct_test');

my $mpm = ct_mpm();
t_debug("MPM $mpm");

# 200 ms access checker (filter) + 300 ms handler (run).
{
    my ($r, $h) = ct_get_logged("/conntimes/filter?ms=300");
    ok t_cmp($r->code, 200, 'filter+run request');
    ok $h;
    ok $h->{filter} >= 200_000 && $h->{filter} < 290_000;
    ok $h->{run} >= 300_000 && $h->{run} < 400_000;
    ok $h->{read} < 50_000 && $h->{deliver} < 50_000;
    ok ct_check_sums($h);
    ok t_cmp($h->{handler}, 'ct-sleep');
    ok t_cmp($h->{class}, 'fg');
    # On Linux the kernel stamps the request's arrival.
    ok $^O ne 'linux' || $h->{arrival} eq 'kernel';
}

# Headers sent slowly: 2 x 300 ms show up in read, not anywhere else.
{
    my $tag = ct_tag();
    my $resp = ct_raw("GET /conntimes/sleep?ms=0 HTTP/1.1\r\n", \0.3,
                      "Host: 127.0.0.1\r\nX-CT-Tag: $tag\r\n", \0.3,
                      "Connection: close\r\n\r\n");
    ok $resp =~ m{^HTTP/1\.1 200};
    my ($h) = ct_wait_lines($tag, 1);
    ok $h;
    t_debug($h->{line});
    ok $h->{read} >= 590_000 && $h->{read} < 800_000;
    ok $h->{filter} < 50_000 && $h->{run} < 50_000 && $h->{queue} < 100_000;
    ok ct_check_sums($h);
}

# A request line sent in two pieces, 300 ms apart, on a new connection and
# on a kept-alive one: the wait for its second piece is read, not accept
# (the core's line read returns only once the line is whole).
{
    my $tag = ct_tag();
    my $resp = ct_raw("GET /conntimes/sleep?ms=0 HT", \0.3,
                      "TP/1.1\r\nHost: 127.0.0.1\r\nX-CT-Tag: $tag\r\n\r\n"
                      . "GET /conntimes/sleep?ms=0 HT", \0.3,
                      "TP/1.1\r\nHost: 127.0.0.1\r\nX-CT-Tag: $tag\r\n"
                      . "Connection: close\r\n\r\n");
    my @ok = $resp =~ m{^HTTP/1\.1 200}mg;
    ok t_cmp(scalar(@ok), 2, 'request lines in two pieces: two responses');
    my @h = sort { $a->{start} <=> $b->{start} } ct_wait_lines($tag, 2);
    t_debug($_->{line}) for @h;
    if ($^O eq 'linux' && @h == 2) {
        for my $i (0, 1) {
            my $what = $i ? 'kept-alive' : 'new connection';
            ok $h[$i]{read} >= 250_000 && $h[$i]{accept} < 50_000
                && ct_check_sums($h[$i]), 1;
            t_debug("$what: accept $h[$i]{accept}, read $h[$i]{read}");
        }
    }
    else {
        skip('needs kernel arrival stamps (Linux)', 1) for 1 .. 2;
    }
    ok t_cmp(scalar(@h), 2, 'two log lines');
}

# Two pipelined requests in one packet arrive together: both carry the
# kernel's stamp of that packet, and the second waited in queue while the
# first one's 200 ms handler ran.
{
    my $tag = ct_tag();
    my $resp = ct_raw("GET /conntimes/sleep?ms=200 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      . "X-CT-Tag: $tag\r\n\r\n"
                      . "GET /conntimes/sleep?ms=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      . "X-CT-Tag: $tag\r\nConnection: close\r\n\r\n");
    my @ok = $resp =~ m{^HTTP/1\.1 200}mg;
    ok t_cmp(scalar(@ok), 2, 'two pipelined responses');
    my @h = sort { $a->{start} <=> $b->{start} || $a->{queue} <=> $b->{queue} }
            ct_wait_lines($tag, 2);
    t_debug($_->{line}) for @h;
    ok t_cmp(scalar(@h), 2, 'two log lines');
    if ($^O eq 'linux' && @h == 2) {
        ok t_cmp("$h[0]{arrival} $h[1]{arrival}", 'kernel kernel');
        ok t_cmp($h[1]{start}, $h[0]{start}, 'one packet, one arrival');
        ok $h[1]{queue} >= 190_000 && $h[1]{queue} < 600_000;
    }
    else {
        skip('kernel arrival stamps are Linux only', 1) for 1 .. 3;
    }
    ok !grep { !ct_check_sums($_) } @h;
}

# A slow reader of a sendfile'd 2 MB file: the handler returns at once, the
# time goes to deliver.  On event the worker is released (write completion,
# off-worker); worker and prefork write it on the worker.
{
    my $file = Apache::Test::vars('t_logs') . '/conntimes-big.bin';
    open my $fh, '>', $file or die "$file: $!";
    print $fh 'x' x (2 * 1024 * 1024);
    close $fh;
    chmod 0644, $file;
    my $tag = ct_tag();
    my $n = ct_slow_reader('/conntimes-big', $tag, 4096, 1.0);
    ok $n > 2 * 1024 * 1024;
    my ($h) = ct_wait_lines($tag, 1);
    ok $h;
    t_debug($h->{line});
    ok $h->{deliver} >= 850_000 && $h->{deliver} < 1_600_000;
    ok $h->{run} < 200_000;
    ok ct_check_sums($h);
    if ($mpm eq 'event') {
        ok t_cmp($h->{offworker} >= 700_000 ? 1 : 0, 1, 'event: off-worker');
    }
    else {
        ok t_cmp($h->{worker} >= 850_000 && $h->{offworker} < 50_000 ? 1 : 0,
                 1, "$mpm: delivered on the worker");
    }
    unlink $file;
}

# The optional function, called by a handler, sees the request so far.
{
    my $r = GET '/conntimes/phases';
    t_debug($r->content);
    my %v = $r->content =~ /(\w+)=(\d+)/g;
    ok t_cmp($v{rc}, 2, 'provisional');
    ok $v{filter} >= 100_000 && $v{filter} < 200_000;
    ok $v{deliver} == 0 && $v{run} < 100_000;
}

# The built-in nickname logs the same request in seconds.
{
    my $tag = ct_tag();
    my $r = GET "/conntimes/sleep?ms=50&nick=$tag", 'X-CT-Tag' => $tag;
    my ($h) = ct_wait_lines($tag, 1);
    my $nick = Apache::Test::vars('t_logs') . '/conntimes_nick_log';
    my $line = '';
    for (1 .. 50) {
        open my $fh, '<', $nick or last;
        ($line) = grep { /nick=\Q$tag\E/ } <$fh>;
        last if $line;
        sleep 0.05;
    }
    t_debug($line // 'no line');
    my @f = ($line // '') =~ /" (\d+\.\d{6}) ((?:\d+\.\d{6} ){8})(fg|bg)$/;
    ok @f == 3;
    my @s = split ' ', $f[1] // '';
    # queue accept read filter run deliver total worker
    ok t_cmp(sprintf('%.0f', ($s[6] // 0) * 1e6), $h->{total}, 'same total');
    ok t_cmp(sprintf('%.0f', ($s[4] // 0) * 1e6), $h->{run}, 'same run');

    # One tag for several values: the same, separated by spaces.
    my $list = Apache::Test::vars('t_logs') . '/conntimes_list_log';
    ($line) = ('');
    for (1 .. 50) {
        open my $fh, '<', $list or last;
        ($line) = grep { /^tag=\Q$tag\E / } <$fh>;
        last if $line;
        sleep 0.05;
    }
    chomp($line //= '');
    t_debug($line);
    ok t_cmp($line, sprintf('tag=%s %d - - %.3f %d %s %s - %s', $tag,
                            $h->{run}, $h->{run} / 1000, $h->{total},
                            $h->{class},
                            $h->{arrival}, $h->{handler}),
             'a list of values in one tag; unknown units log -');
    ok t_cmp($line =~ / - ct-sleep$/ ? 1 : 0, 1, 'the handler last');
}

# Handler names.  A request that nothing gave a handler goes to the one of
# its content type, which mod_mime takes from the file name that the client
# chose: it counts as the default handler's, whatever the extension, found
# or not (otherwise clients fill the bounded handler table).
{
    my %want = ('/conntimes/small.txt' => 200, '/conntimes/nosuch.png' => 404,
                '/conntimes/nosuch.pdf' => 404);
    for my $uri (sort keys %want) {
        my (undef, $h) = ct_get_logged($uri);
        ok t_cmp(($h // {})->{handler} // 'no line', 'default-handler',
                 "$uri ($want{$uri}) is the default handler's");
    }
}

# A front controller: per-directory mod_rewrite sends every request of
# /conntimes/front/ to a 150 ms handler through its redirect-handler.  The
# handler that runs is the redirect's target, and its run is the handler's
# 150 ms; what came before the target's handler is filter time.
if (have_module('rewrite')) {
    my ($r, $h) = ct_get_logged('/conntimes/front/anything');
    ok t_cmp($r->code, 200, 'front controller');
    ok t_cmp(($h // {})->{handler}, 'ct-sleep', 'the target handler');
    ok $h && $h->{run} >= 150_000 && $h->{run} < 250_000;
    ok $h && ct_check_sums($h);
}
else {
    skip('mod_rewrite', 1) for 1 .. 4;
}

# The same front controller to a target refused in its access phase (200
# ms there): no handler runs, so as for the target requested directly the
# run is 0 and the access check is filter time, not the redirect-handler's
# run.
if (have_module('rewrite')) {
    my ($r, $h) = ct_get_logged('/conntimes/front-denied/anything');
    ok t_cmp($r->code, 403, 'front controller to a refused target');
    ok t_cmp(($h // {})->{handler}, '(none)', 'no handler named');
    ok $h && $h->{run} < 50_000 && $h->{filter} >= 200_000;
}
else {
    skip('mod_rewrite', 1) for 1 .. 3;
}

# A local ErrorDocument after the request's own handler (the default
# handler's 404): the error page's handler (200 ms) is named, as the
# README says, and its time is run.
{
    my ($r, $h) = ct_get_logged('/conntimes/errdoc/nosuch.txt');
    ok t_cmp($r->code, 404, 'ErrorDocument after a handler');
    ok t_cmp(($h // {})->{handler}, 'ct-sleep', "the error page's handler named");
    ok $h && $h->{run} >= 200_000 && ct_check_sums($h);
}
