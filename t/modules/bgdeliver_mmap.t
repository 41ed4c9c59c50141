# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a
# copy of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# A page that mod_include reads through a mapping (EnableMMAP On, the
# default) and that is truncated while a slow client over TLS still reads
# it.  With BgDeliverMemoryLimit above the page, the page's mapped bytes
# used to wait for the client as they were, and mod_ssl reading them past
# the file's new end raised SIGBUS on an engine thread: the child died with
# every connection it held.  The capture now copies a mapping's bytes, so
# the client gets the page as it was when served, and the child lives.
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use Bgd::Test qw(private_server self_signed_cert http_connect http_send
                 read_truncating slurp);

plan tests => 3, need need_module('mod_bgdeliver.c'),
                  { 'openssl' => system('openssl version >/dev/null 2>&1') == 0 };

my $certs = self_signed_cert('bgd_mmap');
my %with = (std_modules => [qw(socache_shmcb ssl include alias)], mkdir => ['ssi']);
my $srv = private_server(<<"CONF", %with);
SSLEngine on
SSLCertificateFile "$certs/cert.pem"
SSLCertificateKeyFile "$certs/key.pem"
SSLSessionCache "shmcb:\@DIR\@/ssl_scache(512000)"
EnableMMAP On
Alias /ssi/ "\@DIR\@/ssi/"
<Location /ssi/>
    BgDeliver On
    BgDeliverMemoryLimit 4M
    Options +Includes
    AddOutputFilter INCLUDES .shtml
    AddType text/html .shtml
</Location>
CONF

my $page = "$srv->{dir}/ssi/page.shtml";
my $text = ('y' x 99 . "\n") x 10_000;          # 1 MB: mapped whole
open my $fh, '>', $page or die "$page: $!";
print $fh $text;
close $fh;

my $s = http_connect(port => $srv->{port}, ssl => 1, rcvbuf => 4096);
http_send($s, 'GET', '/ssi/page.shtml');
my $res = read_truncating($s, $page, 100_000, 0, rate => 1_000_000, timeout => 10);
close $s;

ok t_cmp(length($res->{body} // ''), length $text,
         'page truncated under a slow TLS client: all of it arrives');
ok t_cmp(($res->{body} // '') eq $text ? 1 : 0, 1, 'as it was when served');
sleep 1;
my $log = slurp("$srv->{dir}/error_log");
ok t_cmp(scalar(() = $log =~ /exit signal/g), 0, 'no child died');
$srv->{stop}->();
