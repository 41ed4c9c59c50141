#!/usr/bin/perl
# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# A local Location: to a handler that gives its body to a producer.
print "Location: /api/producer?size=100000\r\n\r\n";
