#!/bin/sh
# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Demo CGI: streams MB mebibytes of numbered text lines (64 bytes each),
# no Content-Length, so the response is generated content sent chunked.
#   /cgi-bin/stream.cgi?mb=N    1 <= N <= 64, default 4

set -eu

mb=4
case ${QUERY_STRING:-} in
    mb=[1-9] | mb=[1-5][0-9] | mb=6[0-4]) mb=${QUERY_STRING#mb=} ;;
esac

printf 'Content-Type: text/plain\r\n\r\n'
exec awk -v mb="$mb" 'BEGIN {
    pad = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01"
    n = mb * 1024 * 1024 / 64
    for (i = 1; i <= n; i++)
        printf "%08d %s\n", i, pad
}'
