# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Helpers shared by t/modules/conntimes*.t (not a test itself).
package conntimes_util;

use strict;
use warnings FATAL => 'all';

use Apache::Test ();
use Apache::TestRequest ();
use Apache::TestUtil ();
use Bgd::FailDiag ();
use IO::Socket::INET ();
use JSON::PP ();
use Socket qw(:all);
use Time::HiRes qw(time sleep);
use Exporter 'import';

our @EXPORT = qw(ct_private_locations ct_port ct_log_file ct_wait_lines
                 ct_raw ct_json ct_reset ct_mpm ct_tag ct_phase_names
                 ct_slow_reader ct_check_sums ct_get_logged);

our @PHASES = qw(queue accept read filter run deliver);

sub ct_phase_names { @PHASES }

# What several private servers share: mod_ct_test's sleeping handler at
# /sleep and the timing status page at /status, which does not record
# itself; @status_extra are more directives for /status.
sub ct_private_locations {
    my (@status_extra) = @_;
    return "<Location /sleep>\n    SetHandler ct-sleep\n</Location>\n"
         . "<Location /status>\n    SetHandler conntimes-status\n"
         . "    ConntimesRecord Off\n"
         . join('', map { "    $_\n" } @status_extra) . "</Location>\n";
}

sub ct_port { Apache::Test::vars('port') }

sub ct_log_file { Apache::Test::vars('t_logs') . '/conntimes_log' }

my $seq = 0;
sub ct_tag { sprintf 'ct%d-%d-%d', $$, time, ++$seq }

# Lines of the test log (or of $file, a private server's) with the given
# tag, parsed into hashes; waits up to $wait seconds for $want lines (the
# log is written after the response).
sub ct_wait_lines {
    my ($tag, $want, $wait, $file) = @_;
    $wait ||= 10;
    $file ||= ct_log_file();
    my $deadline = time + $wait;
    my @lines;
    while (1) {
        @lines = ();
        if (open my $fh, '<', $file) {
            while (my $l = <$fh>) {
                next unless $l =~ /(?:^| )tag=\Q$tag\E /;
                chomp $l;
                my %h = (line => $l);
                $h{start} = $1 if $l =~ /^(\d+)/;
                $h{$1} = $2 while $l =~ /\b(\w+)=([^ "]+)/g;
                $h{handler} = $1 if $l =~ / handler="(.*)"$/;
                push @lines, \%h;
            }
        }
        last if @lines >= $want || time > $deadline;
        sleep 0.05;
    }
    return @lines;
}

# GET $uri with a new tag; returns the response and its log line (parsed
# as by ct_wait_lines(), undef when none came).
sub ct_get_logged {
    my ($uri) = @_;
    my $tag = ct_tag();
    my $r = Apache::TestRequest::GET($uri, 'X-CT-Tag' => $tag);
    my ($h) = ct_wait_lines($tag, 1);
    Apache::TestUtil::t_debug($h ? $h->{line} : 'no line');
    return ($r, $h);
}

# The phases of a line must add up, whatever happened to the request.
sub ct_check_sums {
    my ($h) = @_;
    my $sum = 0;
    $sum += $h->{$_} for @PHASES;
    return $sum == $h->{total}
        && $h->{worker} + $h->{offworker} + $h->{queue} == $h->{total};
}

# Send a request in pieces with pauses in between; returns the response.
sub ct_raw {
    my (@parts) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => ct_port(),
                                  Proto => 'tcp', Timeout => 10)
        or die "connect: $!";
    for my $p (@parts) {
        if (ref $p) { sleep $$p; next }
        print $s $p;
    }
    local $/;
    my $resp = <$s>;
    close $s;
    return $resp // '';
}

# A client with a 4 KB receive buffer that reads $first bytes, pauses
# $pause seconds, then reads the rest; returns the number of bytes read.
sub ct_slow_reader {
    my ($path, $tag, $first, $pause) = @_;
    socket(my $s, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
    setsockopt($s, SOL_SOCKET, SO_RCVBUF, 4096) or die "rcvbuf: $!";
    connect($s, pack_sockaddr_in(ct_port(), inet_aton('127.0.0.1')))
        or die "connect: $!";
    syswrite $s, "GET $path HTTP/1.1\r\nHost: 127.0.0.1\r\nX-CT-Tag: $tag\r\n"
               . "Connection: close\r\n\r\n";
    my ($total, $buf) = (0, '');
    while ($total < $first) {
        my $n = sysread $s, $buf, 1024;
        last unless $n;
        $total += $n;
    }
    sleep $pause;
    while (my $n = sysread $s, $buf, 65536) { $total += $n }
    close $s;
    return $total;
}

sub ct_json {
    my ($path) = @_;
    my $r = Apache::TestRequest::GET($path || '/conntimes-status?json');
    return undef unless $r->code == 200;
    return JSON::PP->new->decode($r->content);
}

# Reset the aggregates through the protected form of the status page.
sub ct_reset {
    my $j = ct_json() or return 0;
    my $r = Apache::TestRequest::POST('/conntimes-status',
                                      [ reset => $j->{reset_token} ]);
    return $r->code == 303;
}

sub ct_mpm {
    my $r = Apache::TestRequest::GET('/server-status?auto');
    return $r->content =~ /^ServerMPM: (\w+)/m ? $1 : 'unknown';
}

1;
