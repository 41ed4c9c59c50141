#!/usr/bin/perl
# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Writes ?size=N bytes (default 20000) of the suite's test pattern, with an
# explicit Content-Length so that the client can count the wire bytes.
use strict;
use warnings;
my ($size) = ($ENV{QUERY_STRING} || '') =~ /size=(\d+)/;
$size //= 20000;
binmode STDOUT;
my ($out, $n) = ('', 0);
while (length $out < $size) {
    $out .= sprintf("%08d %-54s\n", $n, 'bgdeliver-test-pattern-' . ($n % 997));
    $n++;
}
$out = substr($out, 0, $size);
print "Content-Type: text/plain\r\nContent-Length: $size\r\n\r\n", $out;
