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
 * @file  mod_bgdeliver.h
 * @brief Public interface of mod_bgdeliver, the background delivery engine.
 *
 * @defgroup MOD_BGDELIVER mod_bgdeliver
 * @ingroup  APACHE_MODS
 * @{
 *
 * mod_bgdeliver writes responses to slow clients without holding a worker
 * thread: the content handler's output (or a file, brigade or producer
 * handed over with the functions below) is captured after the HTTP protocol
 * filters, the handler returns SUSPENDED, and the event MPM drives the rest
 * of the delivery through CONN_STATE_ASYNC_WAITIO, in short slices on
 * whatever worker is free.
 *
 * Every function here is an APR optional function: retrieve it with
 * APR_RETRIEVE_OPTIONAL_FN() in an optional_fn_retrieve hook and check it
 * for NULL (mod_bgdeliver not loaded).  All of them may only be called on
 * the thread that currently processes the request.
 */

#ifndef MOD_BGDELIVER_H
#define MOD_BGDELIVER_H

#include "httpd.h"
#include "apr_optional.h"
#include "apr_buckets.h"
#include "apr_strings.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Version of this interface; bumped on incompatible changes. */
#define BGDELIVER_API_VERSION 1

/** The pulse of a pacing policy that gives none: 100 ms. */
#define BGDELIVER_DEFAULT_PULSE apr_time_from_msec(100)

/**
 * A pacing policy: the engine sends at most @c rate bytes per second of
 * wire data (status line and headers included, TLS overhead excluded),
 * starting @c latency after the request arrived.  A policy out of the
 * ranges below is refused (logged as BGD035): see the return values of
 * the functions that take one.
 */
typedef struct bgdeliver_pacing_t {
    /** Bytes per second on the wire (fractions allowed: V.21 carries
     *  37.5); 0 means unpaced, otherwise from 1 to 1e12. */
    double rate;
    /** Delay of the first byte, counted from r->request_time; 0 to 3600
     *  seconds. */
    apr_interval_time_t latency;
    /** Longest gap between two writes, up to 60 seconds; 0 selects
     *  BGDELIVER_DEFAULT_PULSE. */
    apr_interval_time_t pulse;
    /** Bytes that may leave at once when the latency has elapsed; 0 to
     *  1 TB. */
    apr_off_t burst;
    /** Short label shown on the status pages (e.g. "V.92"); copied, and
     *  cut to 23 bytes there. */
    const char *label;
} bgdeliver_pacing_t;

/** What the engine knows about one request (see bgdeliver_request_info). */
typedef struct bgdeliver_info_t {
    /** Non-zero when the response was handed to the engine (also when
     *  the engine paces it in the worker: HTTP/2, prefork, past a cap). */
    int background;
    /** When the handler's worker was released (0 if not background). */
    apr_time_t handoff;
    /** When the last byte was handed to the kernel (0 while in flight). */
    apr_time_t finished;
    /** Worker time spent in delivery slices after the hand-off; for a
     *  response paced in the worker (no WAITIO), all of it since, until
     *  the call (the worker still holds the request while it is logged). */
    apr_interval_time_t worker_time;
    /** Number of delivery slices run on workers after the hand-off. */
    apr_uint32_t slices;
    /** Wire bytes handed to the connection filters so far. */
    apr_off_t bytes_sent;
    /** Wire bytes of the whole response; -1 while still produced (for a
     *  producer, until its EOS). */
    apr_off_t bytes_total;
    /** "complete", "aborted", "backend-error" (the handler's backend
     *  broke off the body, as mod_proxy marks it, or a producer failed:
     *  before its first byte the client got a 500), "file-changed", one of
     *  the slow-read rules ("min-rate", "idle-timeout", "timeout" for
     *  Timeout, "max-time"), or NULL while in flight. */
    const char *outcome;
} bgdeliver_info_t;

/** Server-wide counters, summed over every child process. */
typedef struct bgdeliver_totals_t {
    apr_uint64_t started;      /**< deliveries handed to the engine */
    apr_uint64_t completed;    /**< ended with the last byte written */
    apr_uint64_t aborted;      /**< ended by the client or an error */
    apr_uint64_t dropped;      /**< ended by the slow-read rules */
    apr_uint64_t fallbacks;    /**< delivered in the foreground instead
                                    (past a cap, HTTP/2, no WAITIO) */
    apr_uint64_t rejected;     /**< refused with 503 by a cap */
    apr_uint64_t bytes;        /**< wire bytes written by the engine */
    apr_uint32_t in_flight;    /**< places taken under the caps now:
                                    deliveries in progress, and responses
                                    whose handler still runs (not yet
                                    started) */
} bgdeliver_totals_t;

/**
 * Signature of a producer: called on a worker whenever the engine wants
 * more of the response body.  Append at most @a max bytes to @a bb (more
 * is accepted but defeats pacing), and an EOS bucket when done.  With
 * nothing ready yet, append nothing and return APR_SUCCESS: the engine
 * asks again 10 ms later, then twice as late each time up to 250 ms,
 * without holding a worker meanwhile (where the engine cannot drive the
 * response, the handler's thread sleeps instead).  That wait never counts
 * against the client's read rate; a producer with nothing for the
 * server's Timeout ends the response (a 500 if nothing was sent yet: the
 * headers wait for the first data).  Return
 * APR_SUCCESS, or an error to abort the delivery.  Never block on the
 * network: the producer runs on a shared worker thread.  A HEAD request's
 * producer is never called, nor is any after its EOS, an error, or the
 * client's leaving.  Calls never overlap, but may run on different
 * threads: keep state in @a baton, not in thread-local storage.  As for
 * any handler that streams its body, a Range request gets the whole
 * body (the byte-range filter needs it in one piece).
 * Where the engine cannot take the response (sub-requests, HTTP/2,
 * MPMs without WAITIO, a cap with BgDeliverOverflow fallback), the
 * producer runs to its end inside bgdeliver_send_producer(), on the
 * handler's thread; otherwise its first call comes after the handler
 * returned, and later calls on any worker.  Allocate what lives only for
 * one call from a pool of your own: r->pool grows with the body.
 * @param r      the request being delivered
 * @param baton  the pointer given to bgdeliver_send_producer()
 * @param bb     the brigade to fill (empty on entry)
 * @param max    how many bytes the engine wants now (8000 in this
 *               version, paced or not)
 */
typedef apr_status_t bgdeliver_producer_fn(request_rec *r, void *baton,
                                           apr_bucket_brigade *bb,
                                           apr_size_t max);

/**
 * Deliver the response of @a r in the background, whatever handler
 * produces it, optionally paced.  Call before the handler runs (a fixups
 * hook at APR_HOOK_LAST is the right place).  Requests the engine cannot
 * take (HTTP/2 streams, MPMs without WAITIO) are delivered normally,
 * paced in the worker if @a pacing asks for it.  Called again, the last
 * policy counts; a policy given to one of the bgdeliver_send_*()
 * functions replaces it (NULL there keeps it).  Called by the handler
 * itself, it still applies where the response is captured anyway
 * (BgDeliver On) and to a bgdeliver_send_*() call that follows; otherwise
 * it has no effect on that response.  A sub-request's output is part of
 * its main request's body, delivered (and paced) with it.
 * @param r       the main request
 * @param pacing  NULL for full speed; copied
 * @return APR_SUCCESS, or APR_EINVAL when @a r is a sub-request, one of
 *         the status pages (server-status, bgdeliver-status,
 *         conntimes-status: never delivered by the engine), or when
 *         @a pacing is out of range (BGD035)
 */
APR_DECLARE_OPTIONAL_FN(apr_status_t, bgdeliver_request_background,
                        (request_rec *r, const bgdeliver_pacing_t *pacing));

/**
 * From a content handler: send @a length bytes of @a fd from @a offset as
 * the response body (headers must be set already) and let the engine write
 * them.  BgDeliver Off does not keep the engine out: the caps and
 * BgDeliverMinSize apply as under BgDeliver On.  In a sub-request the body
 * goes out as part of the main request's and @a pacing is ignored.  The
 * protocol filters (Range, HEAD) apply as for any response;
 * conditional GET is the handler's, as for any handler: call
 * ap_meets_conditions() first.  Output the handler passed before the call
 * goes first.  The file must stay open until r->pool is destroyed, and is
 * the engine's after the call: do not read it or use its handle again
 * (where the response goes the ordinary way, the core may move the handle
 * into a pool of its own).
 * @return the value the handler must return, whatever it is: a handler
 *         that returns anything else after SUSPENDED leaves its client
 *         waiting until the server's Timeout.  SUSPENDED when the engine
 *         took the response; OK when it was delivered in the foreground,
 *         or taken by the engine inside a handler that BgDeliver On wraps
 *         (the wrapper finishes the job); AP_FILTER_ERROR when passing the
 *         body failed, as from ap_pass_brigade(); or an HTTP status when
 *         nothing was sent: 503 from a cap, 500 when @a fd is NULL or
 *         @a offset and @a length are not within the file (BGD028), when
 *         @a pacing is out of range (BGD035), or when the response already
 *         has its body from an earlier call (BGD030; the handler returns
 *         what that call returned).
 */
APR_DECLARE_OPTIONAL_FN(int, bgdeliver_send_file,
                        (request_rec *r, apr_file_t *fd, apr_off_t offset,
                         apr_off_t length, const bgdeliver_pacing_t *pacing));

/**
 * From a content handler: send the content of @a bb (an EOS is appended
 * when missing) as the response body.  On return @a bb is empty and may
 * be reused (its buckets were set aside), except after a refusal (an HTTP
 * status), which leaves them to the caller.  Return value as for
 * bgdeliver_send_file(); 500 for a NULL @a bb (BGD029).
 */
APR_DECLARE_OPTIONAL_FN(int, bgdeliver_send_brigade,
                        (request_rec *r, apr_bucket_brigade *bb,
                         const bgdeliver_pacing_t *pacing));

/**
 * From a content handler: let @a producer generate the body on demand,
 * slice by slice, on whatever worker drives the delivery.  @a baton must
 * live in r->pool (or longer) and be ready before the call, which may run
 * the producer to its end (see bgdeliver_producer_fn).  Return value as
 * for bgdeliver_send_file(); 500 for a NULL @a producer (BGD029).  A
 * producer that fails after the first byte ends the response short, with
 * the connection closed (in a sub-request, the main request's body); one
 * that fails before it, where it runs inside the call, makes the call
 * return AP_FILTER_ERROR, which ap_die() answers with a 500.
 */
APR_DECLARE_OPTIONAL_FN(int, bgdeliver_send_producer,
                        (request_rec *r, bgdeliver_producer_fn *producer,
                         void *baton, const bgdeliver_pacing_t *pacing));

/**
 * Fill @a info (not NULL) for @a r (or its main request).  Meant for
 * logging and timing modules: at log_transaction time of a background
 * delivery @c finished is set and @c outcome tells how it ended.  The
 * byte counts are those the engine captured: output the handler flushed
 * before it (headers included) is not in them.
 * @return non-zero when @a r was handed to the engine.
 */
APR_DECLARE_OPTIONAL_FN(int, bgdeliver_request_info,
                        (const request_rec *r, bgdeliver_info_t *info));

/** Fill @a totals with the server-wide counters (all children). */
APR_DECLARE_OPTIONAL_FN(void, bgdeliver_get_totals,
                        (bgdeliver_totals_t *totals));

/**
 * Whether the engine can wait for a client without a worker in this
 * server: an asynchronous MPM that can wait for a connection on its behalf
 * (AP_MPMQ_CAN_WAITIO: the event MPM of httpd 2.4.63 and later).  Where it
 * cannot, responses are delivered normally and paced ones are paced in the
 * worker (the engine logs BGD001 at start-up).  Asks the MPM at each call,
 * so it may be called from any hook from post_config on, before or after
 * mod_bgdeliver's own.
 * @return non-zero when deliveries and pacing leave the worker
 */
APR_DECLARE_OPTIONAL_FN(int, bgdeliver_waits_off_worker, (void));

/**
 * Read the plain decimal number at the start of @a s ("56", "33.6"): digits
 * with an optional fraction, nothing else.  For the directives of modules
 * built on the engine, so that all of them take numbers alike: strtod()
 * alone would also take "nan", "inf", "0x10" or "1e3", and NaN passes any
 * range check.
 * @param s     the text
 * @param value set to the number when there is one
 * @return the length of the number; 0 when @a s does not start with one
 */
static APR_INLINE apr_size_t bgdeliver_parse_decimal(const char *s,
                                                     double *value)
{
    apr_size_t n = strspn(s, "0123456789");

    if (n && s[n] == '.') {
        apr_size_t frac = strspn(s + n + 1, "0123456789");
        n = frac ? n + 1 + frac : 0;
    }
    if (n) {
        *value = strtod(s, NULL);
    }
    return n;
}

/**
 * Read a size as the engine's directives take it: a whole number of bytes,
 * optionally followed by k, M or G (powers of 1024), e.g. "64k".
 * @param s    the text
 * @param size set to the number of bytes when @a s is one
 * @return 0, or -1 when @a s is not a size (or does not fit in apr_off_t)
 */
static APR_INLINE int bgdeliver_parse_size(const char *s, apr_off_t *size)
{
    char *end;
    apr_int64_t n;
    apr_off_t mult = 1;

    /* Digits first: apr_strtoi64() would also take a sign or spaces. */
    if (*s < '0' || *s > '9') {
        return -1;
    }
    errno = 0;
    n = apr_strtoi64(s, &end, 10);
    if (end == s || errno || n < 0) {
        return -1;
    }
    switch (*end) {
    case 'k': case 'K': mult = 1024; end++; break;
    case 'm': case 'M': mult = 1024 * 1024; end++; break;
    case 'g': case 'G': mult = 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (*end || n > APR_INT64_MAX / mult) {
        return -1;
    }
    *size = (apr_off_t)n * mult;
    return 0;
}

#ifdef __cplusplus
}
#endif

#endif /* MOD_BGDELIVER_H */
/** @} */
