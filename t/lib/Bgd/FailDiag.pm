# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Says what a failed test measured.  Without -verbose the harness shows only
# Test.pm's "Failed test N in FILE at line L": what t_cmp() compared (its
# "testing", "expected" and "received" lines) goes to STDOUT as comments,
# which the harness hides.  For a timing window that fails once on another
# machine (.ci/fresh-machine, a CI log), the measured figure in the test's
# name is what tells noise from a regression, and a rerun cannot bring it
# back.  Loading this module repeats those lines on STDERR next to Test.pm's
# complaint, for failed tests only; STDOUT is what it was.

package Bgd::FailDiag;

use strict;
use warnings FATAL => 'all';

use Apache::TestUtil ();
use Test ();

# The t_debug() lines printed since Test.pm's counter last moved, and the
# number of the test they belong to (the next ok() takes that number).
my ($lines_for, @lines) = (0);

{
    package Bgd::FailDiag::Handle;

    sub TIEHANDLE { my ($class, $out) = @_; return bless { out => $out }, $class }

    sub PRINT {
        my $self = shift;
        my $text = join '', @_;
        if ($lines_for != $Test::ntest) {
            ($lines_for, @lines) = ($Test::ntest);
        }
        push @lines, $text;
        return print { $self->{out} } $text;
    }

    sub PRINTF { my $self = shift; return $self->PRINT(sprintf shift, @_) }
}

tie *Bgd::FailDiag::DEBUG, 'Bgd::FailDiag::Handle', \*STDOUT;
$Apache::TestUtil::DEBUG_OUTPUT = \*Bgd::FailDiag::DEBUG;

# Test::ok() calls _complain() by name for a failed test, before it counts
# the test, so $Test::ntest is the failed one's number here.  Test.pm is a
# frozen core module; without the function (another Test.pm) nothing is
# repeated and nothing else changes.
if (defined &Test::_complain) {
    no warnings 'redefine';
    my $complain = \&Test::_complain;
    *Test::_complain = sub {
        print STDERR @lines if $lines_for == $Test::ntest;
        goto &$complain;
    };
}

1;
