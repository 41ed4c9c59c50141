# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Helpers shared by the t/modules/*.t tests: raw HTTP/1.1 clients over real
# sockets (with a small receive buffer, optional TLS and read-rate limit),
# the deterministic test pattern, /server-status parsing, and probes of the
# server's children (descriptors, CLOSE-WAIT sockets).

package Bgd::Test;

use strict;
use warnings FATAL => 'all';

use Exporter 'import';
use Socket qw(:all);
use IO::Handle;
use IO::Select;
use Time::HiRes qw(time sleep);
use Digest::MD5 qw(md5_hex);
use Apache::Test ();
use Apache::TestRequest ();
use Apache::TestConfig ();
use Bgd::FailDiag ();
use POSIX ();

our @EXPORT_OK = qw(
    pattern pattern_md5 gen_file slurp docroot hostport_of
    http_connect http_send read_response request
    server_status status_value mpm_name
    server_pids fd_count close_wait_count error_log_since log_mark
    wait_until access_log_lines bgd_status slow_clients configtest
    private_server free_port
);

my $LINE = 64;

# The deterministic byte stream every generator of the suite produces
# (t/c-src/mod_bgd_test.c and the CGI scripts): 64-byte numbered lines.
sub pattern {
    my ($size, $offset) = @_;
    $offset ||= 0;
    my $first = int($offset / $LINE);
    my $last  = int(($offset + $size + $LINE - 1) / $LINE);
    my $s = join '', map { sprintf("%08d %-54s\n", $_, 'bgdeliver-test-pattern-' . ($_ % 997)) }
                     $first .. $last;
    return substr($s, $offset - $first * $LINE, $size);
}

sub pattern_md5 { md5_hex(pattern(@_)) }

sub docroot {
    return Apache::Test::vars('documentroot');
}

# The whole content of the file at $path, as bytes ('' when empty).
sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or die "$path: $!";
    binmode $fh;
    local $/;
    return <$fh> // '';
}

# A file of $size pseudo-random bytes under htdocs, created once.
sub gen_file {
    my ($rel, $size) = @_;
    my $path = docroot() . "/$rel";
    return $path if -e $path && -s $path == $size;
    (my $dir = $path) =~ s{/[^/]+$}{};
    mkdir $dir unless -d $dir;
    open my $fh, '>', "$path.tmp" or die "$path: $!";
    binmode $fh;
    srand(length $rel);
    my $left = $size;
    while ($left > 0) {
        my $n = $left > 65536 ? 65536 : $left;
        my $data = pack('N*', map { int(rand(4294967296)) } 1 .. int(($n + 3) / 4));
        print $fh substr($data, 0, $n);
        $left -= $n;
    }
    close $fh;
    chmod 0644, "$path.tmp";
    # An hour old: Apache gives files modified within the last second weak
    # ETags, which If-Range (rightly) never matches.
    utime time - 3600, time - 3600, "$path.tmp";
    rename "$path.tmp", $path or die "rename $path: $!";
    return $path;
}

sub hostport_of {
    my ($module) = @_;
    my $cfg = Apache::Test::config();
    if ($module) {
        my $vh = $cfg->{vhosts}->{$module} or die "no vhost $module";
        return ('127.0.0.1', $vh->{port});
    }
    return ('127.0.0.1', $cfg->{vars}->{port});
}

# Connect over TCP with the receive buffer set before connect (so that the
# window really is small), optionally wrapping the socket in TLS.
sub http_connect {
    my (%o) = @_;
    my ($host, $port) = $o{port} ? ($o{host} || '127.0.0.1', $o{port})
                                  : hostport_of($o{vhost});
    socket(my $s, PF_INET, SOCK_STREAM, IPPROTO_TCP) or die "socket: $!";
    if ($o{rcvbuf}) {
        setsockopt($s, SOL_SOCKET, SO_RCVBUF, pack('i', $o{rcvbuf}))
            or die "SO_RCVBUF: $!";
    }
    connect($s, pack_sockaddr_in($port, inet_aton($host)))
        or die "connect $host:$port: $!";
    $s->autoflush(1);
    if ($o{ssl}) {
        require IO::Socket::SSL;
        IO::Socket::SSL->start_SSL($s, SSL_verify_mode => 0,
                                   SSL_hostname => 'localhost')
            or die "TLS handshake failed: " . IO::Socket::SSL::errstr();
    }
    return $s;
}

sub http_send {
    my ($s, $method, $path, %h) = @_;
    my $req = "$method $path HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    $req .= "$_: $h{$_}\r\n" for sort keys %h;
    $req .= "\r\n";
    my $off = 0;
    while ($off < length $req) {
        my $n = syswrite($s, $req, length($req) - $off, $off);
        die "write: $!" unless defined $n;
        $off += $n;
    }
}

# Read one response.  Options: head => 1 (no body expected), rate =>
# bytes/s (read no faster), chunk => bytes per read, timeout => seconds,
# max_body => stop after that many body bytes (then the socket is left
# half read), on_progress => sub($bytes_so_far).
# Bytes read past the end of a response are kept in the socket glob's
# own hash for the next response on the same socket (pipelining).

sub read_response {
    my ($s, %o) = @_;
    my $timeout = $o{timeout} || 60;
    my $chunk = $o{chunk} || 16384;
    my $buf = delete(${*$s}{bgd_carry}) // '';
    # t_start: when the request was sent, if the caller noted it (option
    # t_sent: a process descheduled between its send and this line would
    # otherwise see the response come early), or now.
    my $t0 = $o{t_sent} // time;
    my ($t_first, $t_last, $eof);
    my $sel = IO::Select->new($s);
    my $total_read = 0;

    my $fill = sub {
        my ($want) = @_;
        while (length($buf) < $want) {
            if ($o{rate}) {
                my $due = $t0 + $total_read / $o{rate};
                my $now = time;
                sleep($due - $now) if $due > $now;
            }
            my $pending = ($s->can('pending') && $s->pending) ? 1 : 0;
            if (!$pending && !$sel->can_read($timeout)) {
                return 0;
            }
            my $n = sysread($s, my $data, $chunk);
            if (!defined $n) {
                next if $!{EAGAIN} || $!{EINTR};
                return 0;
            }
            if ($n == 0) { $eof = 1; return 0; }
            $t_first ||= time;
            $t_last = time;
            $total_read += $n;
            $buf .= $data;
            $Bgd::Test::raw .= $data if defined $Bgd::Test::raw;
        }
        return 1;
    };
    my $line = sub {
        while ((my $i = index($buf, "\r\n")) < 0) {
            return undef unless $fill->(length($buf) + 1);
        }
        my $i = index($buf, "\r\n");
        my $l = substr($buf, 0, $i);
        substr($buf, 0, $i + 2) = '';
        return $l;
    };

    my $status_line = $line->();
    return { status => 0, error => 'no response', eof => $eof,
             t_start => $t0 } unless defined $status_line;
    my ($proto, $status) = $status_line =~ m{^(HTTP/\d\.\d) (\d{3})};
    my (%hdr, @hdr);
    while (defined(my $l = $line->())) {
        last if $l eq '';
        my ($k, $v) = split /:\s*/, $l, 2;
        push @hdr, [$k, $v];
        $hdr{lc $k} = defined $hdr{lc $k} ? "$hdr{lc $k}, $v" : $v;
    }
    my $header_bytes = $total_read - length($buf);
    my $body = '';
    my $complete = 0;
    my $max = $o{max_body};
    if ($o{head} || $status == 304 || $status == 204) {
        $complete = 1;
    }
    elsif (defined $hdr{'content-length'}) {
        my $len = $hdr{'content-length'};
        $len = $max if defined $max && $max < $len;
        while (length($buf) < $len) {
            last unless $fill->(length($buf) < $len - $chunk
                                ? length($buf) + $chunk : $len);
            $o{on_progress}->(length $buf) if $o{on_progress};
        }
        $body = substr($buf, 0, $len);
        substr($buf, 0, length $body) = '';
        $complete = length($body) == $hdr{'content-length'};
    }
    elsif (($hdr{'transfer-encoding'} || '') =~ /chunked/i) {
        while (1) {
            my $size_line = $line->();
            last unless defined $size_line;
            my $n = hex($size_line);
            if ($n == 0) {
                while (defined(my $t = $line->())) { last if $t eq '' }
                $complete = 1;
                last;
            }
            last unless $fill->($n + 2);
            $body .= substr($buf, 0, $n);
            substr($buf, 0, $n + 2) = '';
            $o{on_progress}->(length $body) if $o{on_progress};
            last if defined $max && length($body) >= $max;
        }
    }
    else {
        1 while $fill->(length($buf) + $chunk);
        $body = $buf;
        $buf = '';
        $complete = $eof ? 1 : 0;
    }
    ${*$s}{bgd_carry} = $buf if length $buf;
    return {
        status => $status, proto => $proto, headers => \%hdr,
        header_list => \@hdr, body => $body, complete => $complete,
        t_start => $t0, t_first => $t_first, t_last => $t_last, t_end => time,
        header_bytes => $header_bytes, leftover => $buf, eof => $eof,
    };
}

# One request on a new connection; returns the response hash.
sub request {
    my ($method, $path, %o) = @_;
    my $s = http_connect(%o);
    http_send($s, $method, $path, %{ $o{headers} || {} });
    my $r = read_response($s, %o, head => $method eq 'HEAD');
    close $s unless $o{keep};
    $r->{sock} = $s if $o{keep};
    return $r;
}

sub server_status {
    my $res = Apache::TestRequest::GET('/server-status?auto');
    my %st;
    for (split /\n/, $res->content) {
        $st{$1} = $2 if /^([^:]+):\s*(.*)$/;
    }
    return \%st;
}

sub status_value { server_status()->{$_[0]} }

sub mpm_name { lc(server_status()->{ServerMPM} || '') }

sub bgd_status {
    my $res = Apache::TestRequest::GET('/bgdeliver-status?auto');
    my %st;
    my @d;
    for (split /\n/, $res->content) {
        if (/^Delivery: (.*)$/) {
            push @d, { map { split /=/, $_, 2 } split / /, $1 };
        }
        elsif (/^([^:]+):\s*(.*)$/) {
            $st{$1} = $2;
        }
    }
    $st{deliveries} = \@d;
    return \%st;
}

# Children of the test server (workers and the cgid daemon).
# The child processes of the test server, or of the server whose parent
# process is $ppid (a private_server's pid).
sub server_pids {
    my ($ppid) = @_;
    unless ($ppid) {
        open my $fh, '<', Apache::Test::vars('t_pid_file') or return ();
        chomp($ppid = <$fh> // '');
        return () unless $ppid;
    }
    my @kids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $sf, '<', $stat or next;
        my $l = <$sf>;
        next unless $l && $l =~ /^(\d+) \(.*?\) \S (\d+)/;
        push @kids, $1 if $2 == $ppid;
    }
    return sort { $a <=> $b } @kids;
}

sub fd_count {
    my $n = 0;
    for my $pid (@_ ? @_ : server_pids()) {
        opendir my $d, "/proc/$pid/fd" or next;
        $n += grep { /^\d+$/ } readdir $d;
    }
    return $n;
}

# Descriptors per child of the test server: { pid => count }.
push @EXPORT_OK, qw(children_fds children_fds_back);
sub children_fds {
    return { map { $_ => fd_count($_) } server_pids() };
}

# Waits up to $timeout s until the children that lived through it all
# (those of children_fds() in $before that still exist: prefork starts
# more meanwhile) hold no more descriptors than they did then; returns
# (now, then) for those children.
sub children_fds_back {
    my ($before, $timeout) = @_;
    my ($now, $then) = (0, 0);
    wait_until($timeout, sub {
        my @same = grep { exists $before->{$_} } server_pids();
        $then = 0;
        $then += $before->{$_} for @same;
        $now = @same ? fd_count(@same) : 0;
        $now <= $then;
    });
    return ($now, $then);
}

# The kernel's TCP sockets (/proc/net/tcp and tcp6, no ss needed): one
# hash per socket with its local and remote port, state (hex, '01'
# established, '08' CLOSE-WAIT) and send queue (bytes).
sub tcp_sockets {
    my @socks;
    for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
        open my $fh, '<', $f or next;
        while (<$fh>) {
            my @c = split ' ';
            next unless @c > 4 && $c[1] =~ /:([0-9A-F]{4})$/;
            my $lport = hex $1;
            my ($rport) = $c[2] =~ /:([0-9A-F]{4})$/;
            my ($txq) = $c[4] =~ /^([0-9A-F]+):/;
            push @socks, { lport => $lport, rport => hex($rport // 0),
                           state => $c[3], sendq => hex($txq // 0) };
        }
    }
    return @socks;
}

push @EXPORT_OK, qw(socket_send_queue);
# What the socket from local port $lport to $rport still has to send.
sub socket_send_queue {
    my ($lport, $rport) = @_;
    my ($s) = grep { $_->{lport} == $lport && $_->{rport} == $rport } tcp_sockets();
    return $s ? $s->{sendq} : 0;
}

sub close_wait_count {
    my ($port) = @_;
    $port ||= (hostport_of())[1];
    return scalar grep { $_->{lport} == $port && $_->{state} eq '08' } tcp_sockets();
}

sub log_mark {
    my $log = Apache::Test::vars('t_logs') . '/error_log';
    return -s $log || 0;
}

sub error_log_since {
    my ($mark) = @_;
    my $log = Apache::Test::vars('t_logs') . '/error_log';
    open my $fh, '<', $log or return '';
    seek $fh, $mark, 0;
    local $/;
    return <$fh> // '';
}

sub access_log_lines {
    my $log = Apache::Test::vars('t_logs') . '/access_log';
    open my $fh, '<', $log or return ();
    return <$fh>;
}

# Run $o{n} clients at once, each reading GET $o{path} no faster than
# $o{rate} bytes/s through a $o{rcvbuf}-byte receive buffer; every
# $o{every} seconds call $o{sample}->() (e.g. to read /server-status).
# Returns the list of response hashes (body replaced by its md5 unless
# keep_body).  Clients run as forked processes so that they really read
# concurrently.
sub slow_clients {
    my (%o) = @_;
    my @kids;
    my $dir = Apache::Test::vars('t_logs');
    for my $i (1 .. $o{n}) {
        my $pid = fork;
        die "fork: $!" unless defined $pid;
        if (!$pid) {
            $Bgd::Test::raw = '' if $ENV{BGD_TEST_RAW};
            my $res = eval {
                request($o{method} || 'GET', $o{path}, rcvbuf => $o{rcvbuf},
                        rate => $o{rate}, chunk => $o{chunk} || 4096,
                        ssl => $o{ssl}, vhost => $o{vhost},
                        timeout => $o{timeout} || 60,
                        headers => $o{headers});
            } || { status => 0, error => $@ };
            if ($res->{error} || !$res->{complete}) {
                # Leave evidence for the person debugging a failure.
                open my $dbg, '>', "$dir/slow-client-failure.$$";
                print $dbg "path=$o{path}\nstatus=$res->{status}\n",
                           "error=", ($res->{error} // ''), "\n",
                           "body_length=", length($res->{body} // ''), "\n";
                close $dbg;
                if (defined $Bgd::Test::raw) {
                    open $dbg, '>', "$dir/slow-client-failure.$$.raw";
                    binmode $dbg;
                    print $dbg $Bgd::Test::raw;
                    close $dbg;
                }
            }
            open my $fh, '>', "$dir/slow.$$" or POSIX::_exit(1);
            printf $fh "%s\t%s\t%d\t%.6f\t%.6f\t%.6f\t%s\n",
                $res->{status}, md5_hex($res->{body} // ''),
                length($res->{body} // ''), $res->{t_start} || 0,
                $res->{t_first} || 0, $res->{t_end} || 0,
                $res->{complete} ? 1 : 0;
            close $fh;
            require POSIX;
            POSIX::_exit(0);
        }
        push @kids, $pid;
    }
    my @samples;
    my %done;
    while (keys %done < @kids) {
        push @samples, $o{sample}->() if $o{sample};
        my $t = time;
        while (time - $t < ($o{every} || 0.25)) {
            for my $k (@kids) {
                next if $done{$k};
                my $r = waitpid($k, POSIX::WNOHANG());
                $done{$k} = 1 if $r == $k || $r == -1;
            }
            last if keys %done == @kids;
            sleep 0.02;
        }
    }
    my @res;
    for my $k (@kids) {
        open my $fh, '<', "$dir/slow.$k" or do { push @res, { status => 0 }; next };
        my $l = <$fh>;
        close $fh;
        unlink "$dir/slow.$k";
        chomp $l;
        my @f = split /\t/, $l;
        push @res, { status => $f[0], md5 => $f[1], length => $f[2],
                     t_start => $f[3], t_first => $f[4], t_end => $f[5],
                     complete => $f[6] };
    }
    return (\@res, \@samples);
}

# Run `httpd -t` on a throwaway configuration made of the lines in
# $body, with the event MPM and the named modules of ours from build/
# loaded; returns (exit status, everything httpd printed).
sub configtest {
    my ($body, @mods) = @_;
    my $vars = Apache::Test::vars();
    my $top = $vars->{top_dir};
    my $dir = "$vars->{t_logs}/configtest.$$";
    mkdir $dir;
    chomp(my $libexec = `apxs -q LIBEXECDIR 2>/dev/null` || '/usr/lib/apache2/modules');
    open my $fh, '>', "$dir/httpd.conf" or die $!;
    print $fh "ServerRoot $dir\nDefaultRuntimeDir $dir\nPidFile $dir/pid\n",
              "ErrorLog $dir/error_log\nServerName 127.0.0.1\n",
              "LoadModule mpm_event_module $libexec/mod_mpm_event.so\n",
              "LoadModule authz_core_module $libexec/mod_authz_core.so\n";
    print $fh "LoadModule ${_}_module $top/build/mod_$_.so\n" for @mods;
    print $fh "Listen 127.0.0.1:1\n$body\n";
    close $fh;
    my $out = `$vars->{httpd} -t -f $dir/httpd.conf 2>&1`;
    my $rc = $? >> 8;
    unlink glob("$dir/*");
    rmdir $dir;
    return ($rc, $out);
}

sub free_port {
    socket(my $s, PF_INET, SOCK_STREAM, IPPROTO_TCP) or die $!;
    bind($s, pack_sockaddr_in(0, inet_aton('127.0.0.1'))) or die $!;
    my ($port) = unpack_sockaddr_in(getsockname($s));
    close $s;
    return $port;
}

# Start a throwaway apache2 on a free loopback port, for tests that need
# server-wide settings, another MPM sizing, or to kill the server.  The
# configuration is a small base plus the lines in $body (@DIR@ stands for
# the server's directory, @PORT@ for its port, @DOCROOT@ for the test
# suite's document root).  Options:
#   mpm => event|worker|prefork (default event), mpm_conf => sizing lines
#   (default: one child of 10 threads, or 4 prefork processes);
#   modules => [ours, from build/] (default [bgdeliver]);
#   std_modules => [from LIBEXECDIR], test_modules => [from build/t/];
#   mkdir => [subdirectories].
# Returns { port, pid, dir, stop => sub }: stop sends TERM, waits, KILLs
# after 10 s; every server still running is stopped when the test exits.
my @private_servers;

sub private_server {
    my ($body, %o) = @_;
    my $vars = Apache::Test::vars();
    my $top = $vars->{top_dir};
    my $dir = "$vars->{t_logs}/private.$$." . int(rand(1e6));
    mkdir $dir or die "$dir: $!";
    chmod 01777, $dir;
    my $port = free_port();
    my $mpm = $o{mpm} || 'event';
    chomp(my $libexec = `apxs -q LIBEXECDIR 2>/dev/null` || '/usr/lib/apache2/modules');
    my $user = $> == 0 ? "User nobody\nGroup nogroup\n" : '';
    my $mpm_conf = $o{mpm_conf} // ($mpm eq 'prefork'
        ? "StartServers 4\nMinSpareServers 1\nMaxSpareServers 4\n"
          . "MaxRequestWorkers 4\n"
        : "StartServers 1\nServerLimit 1\nThreadsPerChild 10\n"
          . "MaxRequestWorkers 10\nMinSpareThreads 1\nMaxSpareThreads 10\n"
          . ($mpm eq 'event' ? "AsyncRequestWorkerFactor 20\n" : ''));
    $body =~ s/\@DIR\@/$dir/g;
    $body =~ s/\@PORT\@/$port/g;
    $body =~ s/\@DOCROOT\@/$vars->{documentroot}/g;
    for my $sub (@{ $o{mkdir} || [] }) {
        mkdir "$dir/$sub" or die "$dir/$sub: $!";
        chmod 0777, "$dir/$sub";
    }
    open my $fh, '>', "$dir/httpd.conf" or die $!;
    my $with_bgd = grep { $_ eq 'bgdeliver' } @{ $o{modules} || ['bgdeliver'] };
    print $fh "ServerRoot $dir\nDefaultRuntimeDir $dir\nPidFile $dir/httpd.pid\n",
              "ErrorLog $dir/error_log\nCoreDumpDirectory $dir\n",
              "LogLevel info", ($with_bgd ? " bgdeliver:debug" : ''), "\n",
              "ServerName 127.0.0.1\n$user",
              "Listen 127.0.0.1:$port\n",
              "LoadModule mpm_${mpm}_module $libexec/mod_mpm_$mpm.so\n",
              (map { "LoadModule ${_}_module $libexec/mod_$_.so\n" }
                   qw(authz_core mime status reqtimeout),
                   @{ $o{std_modules} || [] }),
              (map { "LoadModule ${_}_module $top/build/mod_$_.so\n" }
                   @{ $o{modules} || ['bgdeliver'] }),
              (map { "LoadModule ${_}_module $top/build/t/mod_$_.so\n" }
                   @{ $o{test_modules} || [] }),
              "TypesConfig $vars->{t_conf}/mime.types\n",
              $mpm_conf, "SendBufferSize 32768\n",
              "DocumentRoot $vars->{documentroot}\n",
              "<Location />\nRequire all granted\n</Location>\n",
              "<Location /server-status>\nSetHandler server-status\n</Location>\n",
              ($with_bgd
                  ? "<Location /bgdeliver-status>\nSetHandler bgdeliver-status\n</Location>\n"
                  : ''),
              "$body\n";
    close $fh;
    {
        # env => { NAME => value }: for the server only, not for the tools
        # run above.
        local @ENV{ keys %{ $o{env} || {} } } = values %{ $o{env} || {} };
        system($vars->{httpd}, '-f', "$dir/httpd.conf", '-k', 'start') == 0
            or die "private server failed to start: " . `cat $dir/error_log 2>/dev/null`;
    }
    my $pid;
    wait_until(10, sub {
        return 0 unless open my $pf, '<', "$dir/httpd.pid";
        chomp($pid = <$pf> // '');
        return 0 unless $pid;
        socket(my $c, PF_INET, SOCK_STREAM, IPPROTO_TCP) or return 0;
        return connect($c, pack_sockaddr_in($port, inet_aton('127.0.0.1')));
    }) or die "private server did not answer: " . `cat $dir/error_log 2>/dev/null`;
    my %srv = (port => $port, pid => $pid, dir => $dir, mpm => $mpm,
               owner => $$);
    $srv{stop} = sub {
        return unless kill 0, $pid;
        kill 'TERM', $pid;
        return if wait_until(10, sub { !kill 0, $pid });
        # The parent did not stop (a TERM that raced a graceful restart
        # was seen to leave prefork children behind): the whole process
        # group then, which `-k start` made the parent's own.
        kill 'KILL', $pid;
        kill 'KILL', -$pid;
    };
    push @private_servers, \%srv;
    return \%srv;
}

END {
    # Only the process that started them (not forked clients) stops them.
    for my $srv (@private_servers) {
        $srv->{stop}->() if $srv->{owner} == $$;
    }
}

# Poll $cond every 50 ms until it returns true or $timeout seconds pass.
sub wait_until {
    my ($timeout, $cond) = @_;
    my $end = time + $timeout;
    while (time < $end) {
        my $v = $cond->();
        return $v if $v;
        sleep 0.05;
    }
    return $cond->();
}

# A throw-away self-signed certificate for a private TLS server: the
# directory holding cert.pem and key.pem (removed when the test ends).
# The MPM directives of a private server with two workers, whatever the
# MPM (for private_server's mpm_conf).
push @EXPORT_OK, qw(two_workers_conf);
sub two_workers_conf {
    my ($mpm) = @_;
    return $mpm eq 'prefork' ? <<'P' : <<'T';
StartServers 2
MinSpareServers 2
MaxSpareServers 2
ServerLimit 2
MaxRequestWorkers 2
P
StartServers 1
ServerLimit 1
ThreadLimit 2
ThreadsPerChild 2
MinSpareThreads 1
MaxSpareThreads 2
MaxRequestWorkers 2
T
}

push @EXPORT_OK, qw(self_signed_cert);
my @cert_dirs;
sub self_signed_cert {
    my ($name) = @_;
    my $dir = Apache::Test::vars('t_logs') . "/$name.$$";
    mkdir $dir;
    chmod 0755, $dir;
    system("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
           . "-keyout $dir/key.pem -out $dir/cert.pem >/dev/null 2>&1") == 0
        or die "openssl failed";
    chmod 0644, "$dir/cert.pem", "$dir/key.pem";
    push @cert_dirs, $dir;
    return $dir;
}
END {
    for my $dir (@cert_dirs) {
        unlink glob("$dir/*");
        rmdir $dir;
    }
}

# Read one response (options as for read_response()) and truncate the file
# at $path to $to bytes once more than $after body bytes have arrived: a
# file that shrinks under its delivery.
push @EXPORT_OK, qw(read_truncating);
sub read_truncating {
    my ($s, $path, $after, $to, %o) = @_;
    my $truncated = 0;
    return read_response($s, %o, on_progress => sub {
        if (!$truncated && $_[0] > $after) {
            truncate $path, $to;
            $truncated = 1;
        }
    });
}

# A delivery held in flight: GET $path through a 4 KB receive buffer,
# reading only its first 8 KB; %o are http_connect()'s options.  Closing
# the returned socket ends it.
push @EXPORT_OK, qw(hold_delivery);
sub hold_delivery {
    my ($path, %o) = @_;
    my $s = http_connect(rcvbuf => 4096, %o);
    http_send($s, 'GET', $path, %{ $o{headers} || {} });
    read_response($s, max_body => 8192, chunk => 1024);
    return $s;
}

# The status, %O and worker visits (note bgdeliver-visits) that visits_log
# (t/conf/httpd.conf.in) has for the last request whose query was $query;
# -1 for what is not there within 5 s.
push @EXPORT_OK, qw(visits_logged);
sub visits_logged {
    my ($query) = @_;
    my $log = Apache::Test::vars('t_logs') . '/visits_log';
    my $line = wait_until(5, sub {
        open my $fh, '<', $log or return;
        my ($l) = reverse grep { index($_, "?$query HTTP/") >= 0 } <$fh>;
        return $l;
    }) || '';
    my ($status, $out, $visits) = $line =~ /" (\d+) (\d+) (\d+)$/;
    return ($status // 0, $out // -1, $visits // -1);
}

# ---------------------------------------------------------------------------
# Added for mod_dialup (t/modules/dialup*.t).

push @EXPORT_OK, qw(parallel_requests);

# Run several requests at once, each on its own connection in a forked
# process, so that timing-heavy transfers overlap.  Each spec is a hash
# ref: { method => 'GET', path => ..., %options of request() }, plus
# second => [method, path, headers] to send a second request on the same
# connection after the first response (keep-alive check), and abort_after
# => N to close the socket after N body bytes, gaps => 1 to record the
# longest pause between two arrivals of body data (max_gap, seconds; read
# in 64-byte pieces).  A code ref as first argument runs in the parent
# while the clients run (e.g. to read the status pages).  Returns one hash
# per spec, in order: status, headers, header_bytes, length, md5, body
# (when keep_body), t_start, t_first, t_end, complete, eof, max_gap, and
# second (the second response, same fields) when asked.
sub parallel_requests {
    my (@specs) = @_;
    my $during = ref $specs[0] eq 'CODE' ? shift @specs : undef;
    require Storable;
    my $dir = Apache::Test::vars('t_logs');
    my @kids;
    for my $spec (@specs) {
        # Each client starts once the one before has sent its request, and
        # a little after: dozens of forked clients starting in the same
        # instant on two CPUs (copying the pages they touch) delay each
        # other's reads by tens of ms, which timing checks would take for
        # the server's.
        pipe(my $sent_r, my $sent_w) or die "pipe: $!";
        my $pid = fork;
        die "fork: $!" unless defined $pid;
        if (!$pid) {
            close $sent_r;
            my %o = %$spec;
            my $out = eval {
                my $method = $o{method} || 'GET';
                my $s = http_connect(%o);
                my $t_sent = time;
                http_send($s, $method, $o{path}, %{ $o{headers} || {} });
                syswrite $sent_w, '1';
                close $sent_w;
                my @arrivals;
                my $r = read_response($s, %o, head => $method eq 'HEAD',
                                      t_sent => $t_sent,
                                      max_body => $o{abort_after},
                                      ($o{gaps} ? (chunk => 64, on_progress =>
                                          sub { push @arrivals, time })
                                                : ()));
                my %res = _summary($r, $o{keep_body});
                my $max_gap = 0;
                for my $i (1 .. $#arrivals) {
                    my $g = $arrivals[$i] - $arrivals[$i - 1];
                    $max_gap = $g if $g > $max_gap;
                }
                $res{max_gap} = $max_gap;
                if ($o{second} && !$o{abort_after}) {
                    my ($m2, $p2, $h2) = @{ $o{second} };
                    $t_sent = time;
                    http_send($s, $m2, $p2, %{ $h2 || {} });
                    my $r2 = read_response($s, %o, head => $m2 eq 'HEAD',
                                           t_sent => $t_sent);
                    $res{second} = { _summary($r2, $o{keep_body}) };
                }
                close $s;
                \%res;
            } || { status => 0, error => "$@" };
            Storable::nstore($out, "$dir/parallel.$$");
            POSIX::_exit(0);
        }
        push @kids, $pid;
        close $sent_w;
        IO::Select->new($sent_r)->can_read(2);
        close $sent_r;
        sleep 0.01;
    }
    $during->() if $during;
    my @res;
    for my $k (@kids) {
        waitpid($k, 0);
        my $r = eval { Storable::retrieve("$dir/parallel.$k") }
                || { status => 0, error => 'no result' };
        unlink "$dir/parallel.$k";
        push @res, $r;
    }
    return @res;
}

sub _summary {
    my ($r, $keep) = @_;
    my $body = $r->{body} // '';
    return (
        status => $r->{status}, headers => $r->{headers},
        header_bytes => $r->{header_bytes} || 0, length => length($body),
        md5 => md5_hex($body), ($keep ? (body => $body) : ()),
        t_start => $r->{t_start}, t_first => $r->{t_first},
        t_end => $r->{t_end}, complete => $r->{complete}, eof => $r->{eof},
        error => $r->{error},
    );
}

1;
