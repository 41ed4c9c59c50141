# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Failure paths: clients that vanish mid-delivery (while the connection
# waits for the socket, for a pacing timer, or for a spooled response) leave
# no descriptor and no CLOSE-WAIT socket behind; a file truncated during
# delivery aborts the connection instead of sending wrong bytes.
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use Time::HiRes qw(time sleep);
use Bgd::Test qw(gen_file http_connect http_send read_response fd_count
                 close_wait_count wait_until server_pids log_mark
                 error_log_since access_log_lines mpm_name bgd_status
                 read_truncating slurp);

my $mpm = mpm_name();
plan tests => 15, need need_module('mod_bgdeliver.c'), need_module('mod_bgd_test.c'),
    need { "needs the event MPM (have $mpm)" => $mpm eq 'event' };

gen_file('bgdeliver/files/abort-2m.bin', 2_000_000);

# Let the server settle, then take the baseline of the children's fds.
sleep 0.5;
my @pids = server_pids();
my $base = fd_count(@pids);
t_debug("children @pids, baseline fds $base");

sub start_and_drop {
    my ($path, $n, %o) = @_;
    my @s;
    for (1 .. $n) {
        my $s = http_connect(rcvbuf => 4096, %o);
        http_send($s, 'GET', $path);
        # Read the first bytes so that the delivery is surely under way.
        read_response($s, max_body => 20000, rate => 200_000, chunk => 4096);
        push @s, $s;
    }
    sleep 0.3;
    close $_ for @s;
}

sub settled {
    my $want = shift;
    return wait_until(10, sub {
        my $fds = fd_count(@pids);
        return $fds <= $want && close_wait_count() == 0 ? $fds || 1 : 0;
    });
}

# 1. Aborted while waiting for socket writability.
start_and_drop('/bgdeliver/files/abort-2m.bin', 8);
ok t_cmp(settled($base) ? 1 : 0, 1, 'socket waits: descriptors back to baseline, no CLOSE-WAIT');
t_debug('fds now ' . fd_count(@pids) . ', close-wait ' . close_wait_count());

# 2. Aborted while parked on a pacing timer (timerfd under the socket).
start_and_drop('/paced/files/abort-2m.bin?pace=20000,0', 8);
ok t_cmp(settled($base) ? 1 : 0, 1, 'timer waits: descriptors back to baseline, no CLOSE-WAIT');

# 3. Aborted with a spooled generated response (spool file released).
start_and_drop('/bgdeliver/h/gen?size=3000000&chunk=16384', 6);
ok t_cmp(settled($base) ? 1 : 0, 1, 'spooled responses: descriptors back to baseline');

# 4. Aborted over TLS.
start_and_drop('/bgdeliver/files/abort-2m.bin', 6, ssl => 1, vhost => 'bgd_tls');
ok t_cmp(settled($base) ? 1 : 0, 1, 'TLS: descriptors back to baseline, no CLOSE-WAIT');

# The aborted deliveries are logged as such, and nothing is left in flight.
my @aborted = grep { / aborted X$/ } access_log_lines();
ok t_cmp(@aborted >= 28 ? 1 : 0, 1, 'aborted deliveries logged as aborted (' . scalar(@aborted) . ')');
ok t_cmp(wait_until(5, sub { bgd_status()->{BgDeliverInFlight} == 0 }) ? 1 : 0, 1,
         'no delivery left in flight');

# 5. A file truncated during delivery: the client gets fewer bytes than
# announced (never wrong ones), the server logs it, once, and the access
# log says so.  Over HTTPS the engine thread finds the change in its own
# pass through mod_ssl; the worker that then ends the delivery must not
# look again.
for my $case (['shrink', 'plain'], ['shrink-tls', 'HTTPS', ssl => 1, vhost => 'bgd_tls']) {
    my ($name, $label, %o) = @$case;
    my $path = gen_file("bgdeliver/files/$name.bin", 1_500_000);
    my $orig = slurp($path);
    my $mark = log_mark();
    my $s = http_connect(rcvbuf => 4096, %o);
    http_send($s, 'GET', "/bgdeliver/files/$name.bin");
    my $res = read_truncating($s, $path, 200_000, 300_000,
                              rate => 300_000, chunk => 4096, timeout => 10);
    ok t_cmp($res->{complete} ? 1 : 0, 0, "$label, truncated file: response is incomplete");
    my $got = $res->{body};
    ok t_cmp(substr($orig, 0, length $got) eq $got ? 1 : 0, 1,
             "$label, truncated file: every byte sent is a byte of the original");
    wait_until(5, sub { grep { m{/$name\.bin .* file-changed X$} } access_log_lines() });
    my $said = () = error_log_since($mark) =~ /BGD007: \S*\/\Q$name\E\.bin changed/g;
    my $line = (grep { m{/$name\.bin } } access_log_lines())[-1];
    ok t_cmp("BGD007 x$said, " . (($line // '') =~ /(\S+ \S+)$/ ? $1 : ''),
             'BGD007 x1, file-changed X', "$label, truncated file: logged once, as changed");
    unlink $path;
}

# 6. A file replaced (renamed over) during delivery: the old inode is
# delivered, complete and intact.
{
    my $path = gen_file('bgdeliver/files/replace.bin', 1_000_000);
    my $orig = slurp($path);
    my $s = http_connect(rcvbuf => 4096);
    http_send($s, 'GET', '/bgdeliver/files/replace.bin');
    my $done = 0;
    my $res = read_response($s, rate => 400_000, chunk => 4096, timeout => 10,
        on_progress => sub {
            if (!$done && $_[0] > 100_000) {
                open my $fh, '>', "$path.new"; print $fh 'x' x 1000; close $fh;
                rename "$path.new", $path;
                $done = 1;
            }
        });
    ok t_cmp(($res->{complete} && $res->{body} eq $orig) ? 1 : 0, 1,
             'replaced file: the original content, complete');
    unlink $path;
}

# 7. A client gone while a CGI still writes: the capture stops reading its
# pipe at once, instead of spooling on up to BgDeliverSpoolLimit (4M here,
# of the 24 MB the script would write in about 7 s).
{
    my $path = '/bgdeliver/cgi-limited/pattern.pl';
    my $mark = log_mark();
    my $s = http_connect(rcvbuf => 4096);
    http_send($s, 'GET', "$path?size=24000000&pause=20");
    read_response($s, max_body => 20000, rate => 200_000, chunk => 4096);
    close $s;
    my $logged = wait_until(15, sub {
        grep { index($_, "\"GET $path?") >= 0 } access_log_lines() });
    ok t_cmp(join(' ', $logged ? 'logged' : 'not logged',
                  error_log_since($mark) =~ /BGD013/ ? 'BGD013' : '-'),
             'logged -', 'client gone while a CGI writes: the capture stops');
}

ok t_cmp(settled($base) ? 1 : 0, 1, 'descriptors back to baseline at the end');
