# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Writes the demo's /dialup/ picture: a non-interlaced 480x320 RGB PNG of
# about 55 KB (some 8 s at V.92), so that a browser paints it top to bottom
# as it arrives at modem speed.  Deterministic; core Perl only.
#
#   perl t/demo/modem-image.pl OUTPUT.png

use strict;
use warnings;
use Compress::Zlib qw(compress crc32);

my $out = shift or die "usage: $0 OUTPUT.png\n";
my ($w, $h) = (480, 320);

# A sunset: sky gradient, a sun, and hills of grass with a deterministic
# grain (it keeps the file large enough to take several seconds at V.92).
my $seed = 12345;
my $raw = '';
for my $y (0 .. $h - 1) {
    $raw .= "\0";                            # filter type: none
    for my $x (0 .. $w - 1) {
        my $t = $y / $h;
        my ($r, $g, $b) = (40 + 200 * $t, 60 + 90 * $t, 160 - 100 * $t);
        my $d = sqrt(($x - 320) ** 2 + ($y - 190) ** 2);
        ($r, $g, $b) = (255, 210 - $d, 90) if $d < 60;
        my $hill = 230 + 30 * sin($x / 45) + 15 * sin($x / 13 + 1);
        my $n = 0;
        if ($y > $hill) {                    # grass, with grain
            ($r, $g, $b) = (30, 90 + 40 * sin($x / 20 + $y / 9), 40);
            $seed = ($seed * 1103515245 + 12345) % 2147483648;
            $n = ($seed >> 16) % 5 - 2;
        }
        $raw .= pack 'C3', map { my $v = int($_ + $n); $v < 0 ? 0 : $v > 255 ? 255 : $v }
                           $r, $g, $b;
    }
}

sub chunk {
    my ($type, $data) = @_;
    return pack('N', length $data) . $type . $data
         . pack('N', crc32($type . $data));
}

open my $fh, '>:raw', "$out.tmp" or die "cannot write $out.tmp: $!\n";
print {$fh} "\x89PNG\r\n\x1a\n",
    chunk('IHDR', pack('NNC5', $w, $h, 8, 2, 0, 0, 0)),
    chunk('IDAT', compress($raw, 9)),
    chunk('IEND', '');
close $fh or die "cannot write $out.tmp: $!\n";
rename "$out.tmp", $out or die "cannot rename $out.tmp: $!\n";
