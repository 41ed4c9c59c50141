/* Licensed under the Apache License, Version 2.0 (the "License"); you may not
 * use this file except in compliance with the License.  You may obtain a copy
 * of the License at http://www.apache.org/licenses/LICENSE-2.0
 *
 * Unless required by applicable law or agreed to in writing, software
 * distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
 * WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.  See the
 * License for the specific language governing permissions and limitations
 * under the License.
 */

/**
 * @file  mod_conntimes.h
 * @brief Public interface of mod_conntimes, the request phase timer.
 *
 * @defgroup MOD_CONNTIMES mod_conntimes
 * @ingroup  APACHE_MODS
 * @{
 *
 * mod_conntimes splits the life of every request into consecutive phases
 * (queue, accept, read, filter, run, deliver) that add up to its total
 * time, and tells how much of it a worker thread was occupied.  Other
 * modules can read a request's phases through the optional function below:
 * retrieve it with APR_RETRIEVE_OPTIONAL_FN() in an optional_fn_retrieve
 * hook and check it for NULL (mod_conntimes not loaded).
 */

#ifndef MOD_CONNTIMES_H
#define MOD_CONNTIMES_H

#include "httpd.h"
#include "apr_optional.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Version of this interface; bumped on incompatible changes. */
#define CONNTIMES_API_VERSION 1

/** Where the arrival time of a request came from. */
typedef enum {
    /** The kernel stamped the request's first bytes (SO_TIMESTAMPNS). */
    CONNTIMES_ARRIVAL_KERNEL = 0,
    /** A worker saw the first bytes come in (no kernel stamp). */
    CONNTIMES_ARRIVAL_WORKER = 1,
    /** HTTP/2 stream: mod_http2 noted when its HEADERS were complete. */
    CONNTIMES_ARRIVAL_STREAM = 2
} conntimes_arrival_e;

/**
 * The phases of one request, in microseconds.  In time order they are
 * queue, accept, read, filter, run, deliver; their sum is @c total.
 * @c worker + @c offworker + @c queue is @c total as well.
 */
typedef struct conntimes_phases_t {
    /** Arrival of the request's first bytes (start of @c queue). */
    apr_time_t start;
    /** Waiting for a worker: arrival to the worker picking it up. */
    apr_interval_time_t queue;
    /** Connection set-up on the worker (hooks, TLS handshake) until the
     *  request's first bytes were available to the HTTP parser. */
    apr_interval_time_t accept;
    /** Reading and parsing the request line and headers. */
    apr_interval_time_t read;
    /** Headers parsed to the content handler starting. */
    apr_interval_time_t filter;
    /** The content handler, until it returned or handed the response to a
     *  background engine. */
    apr_interval_time_t run;
    /** After the handler until the last byte went to the kernel and the
     *  request was logged. */
    apr_interval_time_t deliver;
    /** Sum of the six phases above. */
    apr_interval_time_t total;
    /** Time a worker thread was occupied by the request. */
    apr_interval_time_t worker;
    /** Time after the pick-up during which no worker was held. */
    apr_interval_time_t offworker;
    /** Non-zero when mod_bgdeliver delivered the response. */
    int background;
    /** One of conntimes_arrival_e. */
    int arrival;
} conntimes_phases_t;

/**
 * Fill @a phases for @a r (any request of an internal-redirect chain).
 * Before the request is logged the phases are provisional: the ones not
 * reached yet are 0 and the current one runs until now.
 * @return 0 when mod_conntimes has no timing for @a r, 1 when the values
 *         are final (the request was logged), 2 when they are provisional.
 */
APR_DECLARE_OPTIONAL_FN(int, conntimes_request_phases,
                        (request_rec *r, conntimes_phases_t *phases));

#ifdef __cplusplus
}
#endif

#endif /* MOD_CONNTIMES_H */
/** @} */
