# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# The time series with a huge ConntimesSeriesSlots: the page's charts merge
# consecutive intervals into at most 512 points (count summed, average
# weighted by count, p99 the highest), ?json&points=N merges the same way,
# ?json alone keeps a point per interval, and a series that fits the chart
# is drawn a point per interval.  Two private servers (100000 and 512 slots
# of 10 s) get requests spread over the 100000-slot window, then one in each
# of 1000 consecutive intervals: libfaketime moves their clock ahead before
# each (by an offset in a file it re-reads; ConntimesKernelTimestamps Off,
# as the kernel's stamps do not move).  Without libfaketime the requests
# share an interval or two and the checks that need many are skipped.
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use FindBin;
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(time sleep);
use lib $FindBin::Bin;
use conntimes_util;
use Bgd::Test qw(private_server);

plan tests => 24, need_module('conntimes', 'ct_test');

my $iv = 10;
my $steps = 1000;                       # intervals with a request
my $small_steps = 600;                  # the last ones, on the 512-slot server
my $max_points = 512;                   # the page's limit
# Intervals to a point of the page with 100000 slots: 100000 / 512 rounded
# up, where the points aligned on multiples of it are 512 at most.
my $per = 196;
# The plot of conntimes_svg_chart(): x from 52 to 52 + 526.
my ($plot_left, $plot_width) = (52, 526);

my ($ft) = grep { -e } map { "$_/faketime/libfaketimeMT.so.1" }
                         '/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu',
                         '/usr/lib';
# Preloaded next to the sanitizer runtime (make SANITIZE=1), libfaketime
# deadlocks processes at start-up.
my $dense = $ft && !$ENV{LD_PRELOAD};
my $why = $ft ? 'libfaketime does not start next to the sanitizer runtime'
              : 'libfaketime not installed';
my $offset = Apache::Test::vars('t_logs') . "/faketime-series.$$";
my $set_offset = sub {
    open my $fh, '>', "$offset.new" or die $!;
    printf $fh "%+d\n", $_[0];
    close $fh;
    rename "$offset.new", $offset or die $!;
};
# First a request every 196 intervals (a point of the page each) over the
# 100000-slot window of 11.6 days, from 11.3 days back; then one in each of
# $steps intervals, 10 s of server time after the last, to both servers.
my $sweep = $per * $iv;
my @sweep;
for (my $o = -100000 * $iv + $steps * $iv + 2000; $dense && $o < 0; $o += $sweep) {
    push @sweep, $o;
}
$set_offset->($sweep[0] // 0);

my $mpm = ct_mpm();
$mpm = 'event' unless $mpm =~ /^(event|worker|prefork)$/;
my %srv;
for my $slots (100000, $max_points) {
    $srv{$slots} = private_server(
        "ConntimesSeriesInterval $iv\nConntimesSeriesSlots $slots\n"
        . "ConntimesKernelTimestamps Off\n" . ct_private_locations(),
        mpm => $mpm, modules => ['conntimes'], test_modules => ['ct_test'],
        $dense ? (env => { LD_PRELOAD => $ft, FAKETIME_TIMESTAMP_FILE => $offset,
                           FAKETIME_NO_CACHE => 1,
                           FAKETIME_DONT_FAKE_MONOTONIC => 1 })
               : ());
}
my $big = "http://127.0.0.1:$srv{100000}{port}";
my $small = "http://127.0.0.1:$srv{$max_points}{port}";
# A connection per request: a kept-alive one would time out at each jump.
my $http = HTTP::Tiny->new(timeout => 10, keep_alive => 0);

sub json {
    my ($url, $query) = @_;
    my $r = $http->get("$url/status?json$query");
    return $r->{success} ? (eval { decode_json($r->{content}) } || {}) : {};
}

# Whether $url has recorded $n requests (a response can come first), soon.
sub recorded {
    my ($url, $n) = @_;
    for (1 .. 1000) {
        my $auto = $http->get("$url/status?auto")->{content} // '';
        return 1 if $auto =~ /^ConntimesRequests: (\d+)$/m && $1 >= $n;
        sleep 0.001;
    }
    return 0;
}

# Each request is recorded before the clock moves on: later, it would
# count in the next interval, or, 196 intervals late, look like one from a
# clock set back (the series would go on from its interval).
my %made = ($big => 0, $small => 0);
my $t0 = time;
for my $o (@sweep) {
    $set_offset->($o);
    $made{$big}++ if $http->get("$big/sleep?ms=0")->{success};
    recorded($big, $made{$big});
}
for my $k (0 .. ($dense ? $steps - 1 : 4)) {
    $set_offset->($iv * $k) if $dense;
    for my $url ($big, $k >= $steps - $small_steps || !$dense ? $small : ()) {
        $made{$url}++ if $http->get("$url/sleep?ms=0")->{success};
        recorded($url, $made{$url});
    }
}
t_debug(sprintf "%d + %d requests in %.1f s", $made{$big}, $made{$small}, time - $t0);
ok t_cmp("$made{$big} $made{$small}",
         $dense ? ($steps + @sweep) . " $small_steps" : '5 5', 'requests answered');

# The points of a page's chart: class => [[x, y], ...] per polyline, and its
# title.
sub charts {
    my ($html) = @_;
    my %c;
    while ($html =~ m{<svg[^>]*><title>(\w+): ([^<]*)</title>(.*?)</svg>}gs) {
        my ($phase, $title, $svg) = ($1, $2, $3);
        $c{$phase}{title} = $title;
        while ($svg =~ m{<polyline class="(\w+)" points="([^"]*)"/>}g) {
            push @{ $c{$phase}{$1} },
                 [ map { [ split /,/ ] } split ' ', $2 ];
        }
    }
    return \%c;
}

# The x of a point over the window of $slots intervals ending at the
# server's interval of $now, as conntimes_svg_chart() places it.
sub x_of {
    my ($p, $slots, $now) = @_;
    my $first = int($now / $iv) - $slots + 1;
    return $plot_left + $plot_width
           * ($p->{t} / $iv - $first + ($p->{intervals} // 1) / 2) / $slots;
}

# Whether the avg polylines of a chart have a vertex at each point's x and
# no other (but the mark drawn 1.5 px right of a lone point).
sub xs_match {
    my ($chart, $pts, $slots, $now) = @_;
    my @want = map { x_of($_, $slots, $now) } grep { $_->{count} } @$pts;
    my @got = map { $_->[0] } map { @$_ } @{ $chart->{avg} || [] };
    my ($i, $miss) = (0, 0);
    for my $x (@got) {
        if ($i < @want && abs($x - $want[$i]) < 0.06) {
            $i++;
        }
        elsif (!$i || abs($x - $want[$i - 1] - 1.5) >= 0.06) {
            $miss++;
            t_debug("x $x: expected " . ($want[$i] // 'none'));
        }
    }
    return $miss == 0 && $i == @want;
}

# --- 100000 slots: the page
{
    my ($html, $j512, $now);
    # The page and ?json&points=512 (the same merging) in one interval.
    for (1 .. 5) {
        $j512 = json($big, "&points=$max_points");
        $html = $http->get("$big/status")->{content} // '';
        $now = json($big, '&points=1')->{now} // 0;
        last if int($now / $iv) == int(($j512->{now} // 0) / $iv);
    }
    my $c = charts($html);
    my @lines = map { @{ $_->{avg} || [] }, @{ $_->{p99} || [] } } values %$c;
    my $longest = 0;
    for (@lines) {
        $longest = @$_ if @$_ > $longest;
    }
    t_debug(sprintf "100000 slots: page of %d bytes, %d polylines, the longest "
                    . "of %d points", length($html), scalar(@lines), $longest);
    ok t_cmp(scalar(keys %$c), 7, 'seven charts');
    if ($dense) {
        ok t_cmp(length($html) < 200_000 ? 1 : 0, 1,
                 'the page stays small: ' . length($html) . ' bytes');
    }
    else {
        skip($why, 1);
    }
    ok t_cmp($longest <= $max_points && $longest > 0 ? 1 : 0, 1,
             "no polyline has more than $max_points points");
    ok t_cmp($c->{total}{title} // '',
             "average and p99 (highest of $per intervals per point) per $per &#215; 10 s",
             'the title says how many intervals a point covers and that its '
             . 'p99 is their highest');
    ok t_cmp(scalar(grep { ($_->{title} // '') =~ /highest of $per intervals per point/ }
                         values %$c), 7, 'so do all seven');
    my ($legend) = $html =~ m{<h2>Last [^<]*</h2>\s*<p>(.*?)</p>}s;
    ok t_cmp($legend // '', qr/p99<\/span> \(highest of $per intervals per point\)/,
             'and the legend');
    ok xs_match($c->{total}, $j512->{series}{points} || [], 100000, $now);
}

# --- 100000 slots: ?json
{
    my $j = json($big, '');
    my @pts = @{ $j->{series}{points} || [] };
    my ($sum, $odd) = (0, 0);
    for (@pts) {
        $sum += $_->{count};
        $odd++ if join(',', sort keys %$_) ne 'avg,count,p99,t' || $_->{t} % $iv;
    }
    t_debug(scalar(@pts) . " points in ?json");
    ok t_cmp($odd, 0, '?json: a point per interval as before, no "intervals"');
    ok t_cmp($sum, $made{$big}, '?json: every request');
    if ($dense) {
        # Two requests share an interval where the real clock crossed one.
        ok t_cmp(scalar(@pts) >= $steps * 0.9 + @sweep ? 1 : 0, 1,
                 '?json: all points');
    }
    else {
        skip($why, 1);
    }

    my $m = json($big, '&points=100');
    my @mp = @{ $m->{series}{points} || [] };
    ok t_cmp(scalar(@mp) <= 100 && @mp ? 1 : 0, 1, '?json&points=100: at most 100 '
             . 'points (' . scalar(@mp) . ')');
    my $msum = 0;
    $msum += $_->{count} for @mp;
    ok t_cmp($msum, $made{$big}, '?json&points=100: their counts add up to the '
             . 'requests made');
    # Each merged point is the merge of the intervals it covers.
    my ($bad, $end) = (0, 0);
    my %by_t = map { $_->{t} => $_ } @pts;
    for my $p (@mp) {
        my @in = grep { $_ } map { $by_t{$p->{t} + $_ * $iv} }
                             0 .. ($p->{intervals} // 1) - 1;
        my $n = 0;
        $n += $_->{count} for @in;
        $bad++, $bad < 10 && t_debug("t $p->{t}: count $p->{count}, its "
                                     . "intervals' $n")
            if $n != $p->{count} || !$p->{intervals} || $p->{t} < $end;
        $end = $p->{t} + ($p->{intervals} // 1) * $iv;
        for my $ph (keys %{ $p->{avg} }) {
            my ($w, $hi) = (0, 0);
            for (@in) {
                $w += $_->{avg}{$ph} * $_->{count};
                $hi = $_->{p99}{$ph} if $_->{p99}{$ph} > $hi;
            }
            my $avg = $n ? $w / $n : -1;
            # The averages are rounded to the µs in JSON.
            next if abs($p->{avg}{$ph} - $avg) <= 1.01e-6
                    && abs($p->{p99}{$ph} - $hi) < 1e-9;
            $bad++;
            t_debug("t $p->{t} $ph: avg $p->{avg}{$ph}, p99 $p->{p99}{$ph}; "
                    . "expected $avg, $hi") if $bad < 10;
        }
    }
    ok t_cmp($bad, 0, 'a merged point: counts summed, averages weighted, the '
             . 'highest p99');

    my $one = json($big, '&points=1')->{series}{points} || [];
    ok t_cmp(join(' ', map { "$_->{count}/" . ($_->{intervals} // '-') } @$one),
             "$made{$big}/100000", '?json&points=1: one point of every interval');
    my $all = json($big, '&points=100000')->{series}{points} || [];
    ok t_cmp((grep { exists $_->{intervals} } @$all) ? 1 : 0, 0,
             '?json&points=N, N >= slots: no merging');
    my $huge = json($big, '&points=99999999999999999999999')->{series}{points} || [];
    ok t_cmp(scalar(@$huge), scalar(@$all), 'a huge N is no limit');
}

# --- a bad points=: 400, saying why
{
    my @r = map { [ $_, $http->get("$big/status?json&points=$_") ] }
            '0', '', 'abc', '-5', '1.5', '%31';
    ok t_cmp(join(' ', map { $_->[1]{status} } @r), '400 400 400 400 400 400',
             'points=0, empty, abc, -5, 1.5, %31: 400');
    ok t_cmp(scalar(grep { $_->[1]{content} =~ /points=.*whole number/s } @r),
             scalar(@r), 'the answer says what points= must be');
}

# --- 512 slots: a point per interval on the page, as before
{
    my ($j, $html);
    for (1 .. 5) {
        $j = json($small, '');
        $html = $http->get("$small/status")->{content} // '';
        last if int(($j->{now} // 0) / $iv) == int((json($small, '')->{now} // 0) / $iv);
    }
    my $c = charts($html);
    my @pts = @{ $j->{series}{points} || [] };
    my $vertices = 0;
    $vertices += @$_ for @{ $c->{total}{avg} || [] };
    t_debug(sprintf "512 slots: page of %d bytes, %d points in ?json, %d vertices",
                    length($html), scalar(@pts), $vertices);
    ok t_cmp($c->{total}{title} // '', 'average and p99 per 10 s',
             'not merged: the title as before');
    my ($legend) = $html =~ m{<h2>Last [^<]*</h2>\s*<p>(.*?)</p>}s;
    ok t_cmp($legend // '', qr/p99<\/span> per 10 s,/, 'nor the legend');
    ok xs_match($c->{total}, \@pts, $max_points, $j->{now} // 0);
    if ($dense) {
        ok t_cmp(scalar(@pts) >= $max_points * 0.9 ? 1 : 0, 1,
                 'the window full of points');
    }
    else {
        skip($why, 1);
    }
    my $canon = JSON::PP->new->canonical;
    my $same = json($small, "&points=$max_points");
    ok $canon->encode($same->{series}) eq $canon->encode($j->{series});
}

$srv{$_}{stop}->() for keys %srv;
unlink $offset;
