#!/usr/bin/perl
# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Writes ?size=N bytes (default 1000000) of the suite's test pattern;
# with ?pause=MS, pauses MS ms after each 64 KB.
use strict;
use warnings;
my ($size) = ($ENV{QUERY_STRING} || '') =~ /size=(\d+)/;
my ($pause) = ($ENV{QUERY_STRING} || '') =~ /pause=(\d+)/;
$size //= 1000000;
binmode STDOUT;
$| = 0;
print "Content-Type: text/plain\r\n\r\n";
my ($line, $n, $out) = (64, 0, 0);
while ($out < $size) {
    my $l = sprintf("%08d %-54s\n", $n, 'bgdeliver-test-pattern-' . ($n % 997));
    $l = substr($l, 0, $size - $out) if $out + $line > $size;
    print $l;
    $out += length $l;
    $n++;
    if ($pause && $out % 65536 < length $l) {
        $| = 1;
        $| = 0;
        select(undef, undef, undef, $pause / 1000);
    }
}
