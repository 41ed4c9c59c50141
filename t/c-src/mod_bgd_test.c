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

/*
 * mod_bgd_test: test-only handlers for the Apache::Test suite.  Never load
 * it in production.
 *
 *   bgd-test-gen       generated content: ?size=N bytes of the suite's
 *                      pattern in ?chunk=N pieces, with ?flush=1 a FLUSH
 *                      after each piece and ?delay=MS between pieces;
 *                      ?drip=1 spends the delay in 1 ms steps, passing a
 *                      lone FLUSH after each (a stream that keeps flushing
 *                      while it waits); ?cut=N promises ?size bytes
 *                      (Content-Length) and closes the connection after N
 *                      (a backend that breaks off its body)
 *   bgd-test-producer  the same bytes through bgdeliver_send_producer();
 *                      ?idle=MS: nothing (an empty brigade) for the first
 *                      MS ms, ?endless=1: no end, ?fail=N: an error at the
 *                      N-th call (from 1), ?null=1: no producer at all (a
 *                      caller's mistake); how often it was called
 *                      is logged ("bgd-test: producer ?ARGS called N
 *                      times")
 *   (both)             ?ratelimit=KB sets mod_ratelimit's rate-limit
 *                      variable first, as a handler may
 *   bgd-test-twice     bgdeliver_send_brigade() twice for one response
 *   bgd-test-file      r->filename through bgdeliver_send_file(), with
 *                      ?offset=N&length=N
 *   bgd-test-brigade   the pattern through bgdeliver_send_brigade()
 *   bgd-test-pid       the child's pid and open descriptor count
 *
 * and a fixups hook: the environment variable bgd-test-pace="RATE,LATENCY"
 * (bytes/s, as strtod() reads them, nan and inf included; ms; e.g. set
 * with SetEnvIf) asks the engine, through bgdeliver_request_background(),
 * to pace whatever the request returns; a refused policy answers 500.
 * With bgd-test-unpace set too, a second call without a policy follows.
 *
 * The pattern is 64-byte numbered lines, the same as Bgd::Test::pattern().
 */

#include "httpd.h"
#include "http_config.h"
#include "http_protocol.h"
#include "http_request.h"
#include "http_log.h"
#include "apr_strings.h"

#include <stdlib.h>

#include <dirent.h>
#include <unistd.h>

#include "mod_bgdeliver.h"

module AP_MODULE_DECLARE_DATA bgd_test_module;

#define BGD_TEST_LINE 64

typedef struct bgd_test_gen_t {
    apr_off_t size;
    apr_off_t pos;
    const char *args;                   /* names it in the log */
    apr_time_t ready;                   /* nothing before this */
    int endless;
    long fail_at;
    long calls;
} bgd_test_gen_t;

static APR_OPTIONAL_FN_TYPE(bgdeliver_send_producer) *bgd_test_send_producer;
static APR_OPTIONAL_FN_TYPE(bgdeliver_send_file) *bgd_test_send_file;
static APR_OPTIONAL_FN_TYPE(bgdeliver_send_brigade) *bgd_test_send_brigade;
static APR_OPTIONAL_FN_TYPE(bgdeliver_request_background) *bgd_test_request_bg;

static apr_off_t bgd_test_arg(request_rec *r, const char *name,
                              apr_off_t dflt)
{
    const char *a = r->args;
    apr_size_t n = strlen(name);
    while (a && *a) {
        if (!strncmp(a, name, n) && a[n] == '=') {
            return apr_atoi64(a + n + 1);
        }
        a = ap_strchr_c(a, '&');
        a = a ? a + 1 : NULL;
    }
    return dflt;
}

/* Bytes [pos, pos+len) of the pattern into buf. */
static void bgd_test_pattern(char *buf, apr_off_t pos, apr_size_t len)
{
    char line[BGD_TEST_LINE + 1];
    apr_size_t done = 0;
    while (done < len) {
        apr_off_t n = (pos + (apr_off_t)done) / BGD_TEST_LINE;
        apr_size_t off = (apr_size_t)((pos + (apr_off_t)done) % BGD_TEST_LINE);
        apr_size_t take = BGD_TEST_LINE - off;
        char tag[64];
        apr_snprintf(tag, sizeof(tag), "bgdeliver-test-pattern-%d",
                     (int)(n % 997));
        apr_snprintf(line, sizeof(line), "%08" APR_OFF_T_FMT " %-54s\n",
                     n, tag);
        if (take > len - done) {
            take = len - done;
        }
        memcpy(buf + done, line + off, take);
        done += take;
    }
}

static apr_bucket *bgd_test_piece(request_rec *r, apr_off_t pos,
                                  apr_size_t len)
{
    char *buf = apr_bucket_alloc(len, r->connection->bucket_alloc);
    bgd_test_pattern(buf, pos, len);
    return apr_bucket_heap_create(buf, len, apr_bucket_free,
                                  r->connection->bucket_alloc);
}

static void bgd_test_set_ratelimit(request_rec *r)
{
    apr_off_t ratelimit = bgd_test_arg(r, "ratelimit", 0);

    if (ratelimit > 0) {
        apr_table_setn(r->subprocess_env, "rate-limit",
                       apr_off_t_toa(r->pool, ratelimit));
    }
}

static int bgd_test_gen(request_rec *r)
{
    apr_off_t size = bgd_test_arg(r, "size", 100000);
    apr_off_t chunk = bgd_test_arg(r, "chunk", 8192);
    apr_off_t delay = bgd_test_arg(r, "delay", 0);
    int flush = (int)bgd_test_arg(r, "flush", 0);
    int drip = (int)bgd_test_arg(r, "drip", 0);
    apr_off_t cut = bgd_test_arg(r, "cut", 0);
    int broken = cut > 0 && cut < size;
    apr_bucket_brigade *bb = apr_brigade_create(r->pool,
                                                r->connection->bucket_alloc);
    apr_off_t pos = 0;

    ap_set_content_type(r, "text/plain");
    bgd_test_set_ratelimit(r);
    if (r->header_only) {
        return OK;
    }
    if (broken) {
        /* A backend that breaks off its body: it promises size bytes and
         * closes the connection after cut.  The EOS is left to the core,
         * after a flush, so that the content-length filter keeps the
         * promise. */
        ap_set_content_length(r, size);
        r->connection->keepalive = AP_CONN_CLOSE;
        size = cut;
        flush = 1;
    }
    while (pos < size) {
        apr_size_t n = (apr_size_t)(size - pos < chunk ? size - pos : chunk);
        APR_BRIGADE_INSERT_TAIL(bb, bgd_test_piece(r, pos, n));
        if (flush) {
            APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_flush_create(
                                        r->connection->bucket_alloc));
        }
        pos += (apr_off_t)n;
        if (pos >= size && !broken) {
            APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(
                                        r->connection->bucket_alloc));
        }
        if (ap_pass_brigade(r->output_filters, bb) != APR_SUCCESS) {
            return AP_FILTER_ERROR;
        }
        apr_brigade_cleanup(bb);
        if (delay > 0 && pos < size && drip) {
            apr_off_t ms;
            for (ms = 0; ms < delay; ms++) {
                apr_sleep(apr_time_from_msec(1));
                APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_flush_create(
                                            r->connection->bucket_alloc));
                if (ap_pass_brigade(r->output_filters, bb) != APR_SUCCESS) {
                    return AP_FILTER_ERROR;
                }
                apr_brigade_cleanup(bb);
            }
        }
        else if (delay > 0 && pos < size) {
            apr_sleep(apr_time_from_msec(delay));
        }
    }
    return OK;
}

static apr_status_t bgd_test_produce(request_rec *r, void *baton,
                                     apr_bucket_brigade *bb, apr_size_t max)
{
    bgd_test_gen_t *g = baton;
    apr_size_t n = (apr_size_t)(g->size - g->pos);

    if (++g->calls == g->fail_at) {
        return APR_EGENERAL;
    }
    if (apr_time_now() < g->ready) {
        return APR_SUCCESS;
    }
    if (g->endless) {
        n = max;
        g->pos = 0;
    }
    if (n > max) {
        n = max;
    }
    if (n > 0) {
        APR_BRIGADE_INSERT_TAIL(bb, bgd_test_piece(r, g->pos, n));
        g->pos += (apr_off_t)n;
    }
    if (g->pos >= g->size && !g->endless) {
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(bb->bucket_alloc));
    }
    return APR_SUCCESS;
}

static apr_status_t bgd_test_log_calls(void *data)
{
    bgd_test_gen_t *g = data;
    ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, NULL,
                 "bgd-test: producer ?%s called %ld times", g->args,
                 g->calls);
    return APR_SUCCESS;
}

static int bgd_test_handler(request_rec *r)
{
    if (!r->handler || strncmp(r->handler, "bgd-test-", 9)) {
        return DECLINED;
    }
    if (!strcmp(r->handler, "bgd-test-gen")) {
        return bgd_test_gen(r);
    }
    if (!strcmp(r->handler, "bgd-test-pid")) {
        DIR *d = opendir("/proc/self/fd");
        int n = 0;
        if (d) {
            while (readdir(d)) {
                n++;
            }
            closedir(d);
        }
        ap_set_content_type(r, "text/plain");
        ap_rprintf(r, "pid=%ld fds=%d\n", (long)getpid(), n - 3);
        return OK;
    }
    if (!bgd_test_send_producer) {
        return HTTP_NOT_IMPLEMENTED;
    }
    ap_set_content_type(r, "text/plain");
    if (!strcmp(r->handler, "bgd-test-producer")) {
        bgd_test_gen_t *g = apr_pcalloc(r->pool, sizeof(*g));
        g->size = bgd_test_arg(r, "size", 100000);
        g->ready = apr_time_now()
                   + apr_time_from_msec(bgd_test_arg(r, "idle", 0));
        g->endless = bgd_test_arg(r, "endless", 0) != 0;
        g->fail_at = (long)bgd_test_arg(r, "fail", 0);
        g->args = r->args ? r->args : "";
        apr_pool_cleanup_register(r->pool, g, bgd_test_log_calls,
                                  apr_pool_cleanup_null);
        bgd_test_set_ratelimit(r);
        return bgd_test_send_producer(r, bgd_test_arg(r, "null", 0)
                                         ? NULL : bgd_test_produce, g, NULL);
    }
    if (!strcmp(r->handler, "bgd-test-twice")) {
        apr_bucket_brigade *bb = apr_brigade_create(
                                     r->pool, r->connection->bucket_alloc);
        apr_off_t size = bgd_test_arg(r, "size", 100000);
        int first, second;
        APR_BRIGADE_INSERT_TAIL(bb, bgd_test_piece(r, 0, (apr_size_t)size));
        first = bgd_test_send_brigade(r, bb, NULL);
        bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
        APR_BRIGADE_INSERT_TAIL(bb, bgd_test_piece(r, 0, 64));
        second = bgd_test_send_brigade(r, bb, NULL);
        ap_log_rerror(APLOG_MARK, APLOG_NOTICE, 0, r,
                      "bgd-test: second call returned %d", second);
        return first;
    }
    if (!strcmp(r->handler, "bgd-test-brigade")) {
        apr_bucket_brigade *bb = apr_brigade_create(
                                     r->pool, r->connection->bucket_alloc);
        apr_off_t size = bgd_test_arg(r, "size", 100000);
        APR_BRIGADE_INSERT_TAIL(bb, bgd_test_piece(r, 0, (apr_size_t)size));
        return bgd_test_send_brigade(r, bb, NULL);
    }
    if (!strcmp(r->handler, "bgd-test-file")) {
        apr_file_t *fd;
        apr_off_t off, len;
        if (r->finfo.filetype != APR_REG) {
            return HTTP_NOT_FOUND;
        }
        if (apr_file_open(&fd, r->filename, APR_FOPEN_READ, 0, r->pool)
            != APR_SUCCESS) {
            return HTTP_FORBIDDEN;
        }
        off = bgd_test_arg(r, "offset", 0);
        len = bgd_test_arg(r, "length", r->finfo.size - off);
        ap_set_content_type(r, "application/octet-stream");
        return bgd_test_send_file(r, fd, off, len, NULL);
    }
    return DECLINED;
}

static int bgd_test_fixups(request_rec *r)
{
    const char *pace = apr_table_get(r->subprocess_env, "bgd-test-pace");
    bgdeliver_pacing_t p;
    const char *comma;

    if (!pace || !bgd_test_request_bg || r->main) {
        return DECLINED;
    }
    memset(&p, 0, sizeof(p));
    p.rate = strtod(pace, NULL);
    comma = ap_strchr_c(pace, ',');
    p.latency = comma ? apr_time_from_msec(apr_atoi64(comma + 1)) : 0;
    p.label = "test";
    if (bgd_test_request_bg(r, &p) != APR_SUCCESS) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (apr_table_get(r->subprocess_env, "bgd-test-unpace")
        && bgd_test_request_bg(r, NULL) != APR_SUCCESS) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    return DECLINED;
}

static void bgd_test_retrieve(void)
{
    bgd_test_request_bg = APR_RETRIEVE_OPTIONAL_FN(
                              bgdeliver_request_background);
    bgd_test_send_producer = APR_RETRIEVE_OPTIONAL_FN(bgdeliver_send_producer);
    bgd_test_send_file = APR_RETRIEVE_OPTIONAL_FN(bgdeliver_send_file);
    bgd_test_send_brigade = APR_RETRIEVE_OPTIONAL_FN(bgdeliver_send_brigade);
}

static void bgd_test_register_hooks(apr_pool_t *p)
{
    (void)p;
    ap_hook_handler(bgd_test_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_fixups(bgd_test_fixups, NULL, NULL, APR_HOOK_LAST);
    ap_hook_optional_fn_retrieve(bgd_test_retrieve, NULL, NULL,
                                 APR_HOOK_MIDDLE);
}

AP_DECLARE_MODULE(bgd_test) = {
    STANDARD20_MODULE_STUFF,
    NULL,                       /* create per-directory config */
    NULL,                       /* merge per-directory config */
    NULL,                       /* create per-server config */
    NULL,                       /* merge per-server config */
    NULL,                       /* command table */
    bgd_test_register_hooks,    /* register hooks */
    AP_MODULE_FLAG_NONE         /* flags */
};
