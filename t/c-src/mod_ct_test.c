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
 * mod_ct_test: test-only helpers for the mod_conntimes suite.  Never load it
 * on a real server.  It injects known delays into known phases:
 *
 *   CtTestAccessDelay ms   an access_checker that sleeps (filter phase)
 *   CtTestSendBuffer bytes a fixup that shrinks SO_SNDBUF on the connection,
 *                          so that a slow reader really holds the response
 *   CtTestBackground On    a fixup that asks mod_bgdeliver to deliver the
 *                          response in the background
 *   SetHandler ct-sleep    a handler sleeping ?ms=N (default 300) (run phase)
 *   SetHandler ct-phases   prints what mod_conntimes' optional function says
 *                          about the request so far
 *   SetHandler ct-suspend  returns SUSPENDED and never resumes: the event
 *                          MPM counts the connection and forgets it (there
 *                          is no response), until the child goes
 *
 * Every response of these handlers carries X-CT-Pid, the serving child.
 */

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"

#include "apr_optional.h"
#include "apr_strings.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mod_bgdeliver.h"
#include "mod_conntimes.h"

module AP_MODULE_DECLARE_DATA ct_test_module;

typedef struct {
    int access_delay_ms;                /* -1: unset */
    int sndbuf;                         /* -1: unset */
    int background;                     /* -1: unset */
} ct_test_dir_conf_t;

static APR_OPTIONAL_FN_TYPE(conntimes_request_phases) *ct_test_phases;
static APR_OPTIONAL_FN_TYPE(bgdeliver_request_background) *ct_test_bg;

static int ct_test_arg(request_rec *r, const char *name, int def, int max)
{
    const char *a = r->args;
    apr_size_t n = strlen(name);

    while (a && *a) {
        if (!strncmp(a, name, n) && a[n] == '=') {
            int v = atoi(a + n + 1);
            return v < 0 ? 0 : v > max ? max : v;
        }
        a = strchr(a, '&');
        a = a ? a + 1 : NULL;
    }
    return def;
}

static int ct_test_handler(request_rec *r)
{
    conntimes_phases_t ph;
    int rc;

    if (r->handler && !strcmp(r->handler, "ct-suspend")) {
        return SUSPENDED;
    }
    if (!r->handler || (strcmp(r->handler, "ct-sleep")
                        && strcmp(r->handler, "ct-phases"))) {
        return DECLINED;
    }
    apr_table_setn(r->headers_out, "X-CT-Pid",
                   apr_psprintf(r->pool, "%ld", (long)getpid()));
    ap_set_content_type(r, "text/plain");
    if (!strcmp(r->handler, "ct-sleep")) {
        int ms = ct_test_arg(r, "ms", 300, 10000);
        apr_sleep(apr_time_from_msec(ms));
        ap_rprintf(r, "slept %d ms\n", ms);
        return OK;
    }
    if (!ct_test_phases) {
        ap_rputs("no conntimes_request_phases\n", r);
        return OK;
    }
    memset(&ph, 0, sizeof(ph));
    rc = ct_test_phases(r, &ph);
    ap_rprintf(r, "rc=%d queue=%" APR_TIME_T_FMT " accept=%" APR_TIME_T_FMT
               " read=%" APR_TIME_T_FMT " filter=%" APR_TIME_T_FMT
               " run=%" APR_TIME_T_FMT " deliver=%" APR_TIME_T_FMT
               " total=%" APR_TIME_T_FMT " arrival=%d\n", rc, ph.queue,
               ph.accept, ph.read, ph.filter, ph.run, ph.deliver, ph.total,
               ph.arrival);
    return OK;
}

static int ct_test_access(request_rec *r)
{
    ct_test_dir_conf_t *dc = ap_get_module_config(r->per_dir_config,
                                                  &ct_test_module);

    if (!r->main && dc->access_delay_ms > 0) {
        apr_sleep(apr_time_from_msec(dc->access_delay_ms));
    }
    return DECLINED;
}

static int ct_test_fixups(request_rec *r)
{
    ct_test_dir_conf_t *dc = ap_get_module_config(r->per_dir_config,
                                                  &ct_test_module);
    apr_socket_t *sock = ap_get_conn_socket(r->connection);
    apr_os_sock_t fd;

    if (!r->main && dc->sndbuf > 0 && sock
        && apr_os_sock_get(&fd, sock) == APR_SUCCESS) {
        if (setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &dc->sndbuf,
                       sizeof(dc->sndbuf)) < 0) {
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, errno, r,
                          "CTT001: setsockopt(SO_SNDBUF)");
        }
    }
    if (!r->main && dc->background > 0 && ct_test_bg) {
        ct_test_bg(r, NULL);
    }
    return DECLINED;
}

static void ct_test_retrieve(void)
{
    ct_test_phases = APR_RETRIEVE_OPTIONAL_FN(conntimes_request_phases);
    ct_test_bg = APR_RETRIEVE_OPTIONAL_FN(bgdeliver_request_background);
}

static void *ct_test_create_dir(apr_pool_t *p, char *d)
{
    ct_test_dir_conf_t *dc = apr_pcalloc(p, sizeof(*dc));

    (void)d;
    dc->access_delay_ms = -1;
    dc->sndbuf = -1;
    dc->background = -1;
    return dc;
}

static void *ct_test_merge_dir(apr_pool_t *p, void *basev, void *addv)
{
    ct_test_dir_conf_t *base = basev, *add = addv;
    ct_test_dir_conf_t *dc = apr_pcalloc(p, sizeof(*dc));

    dc->access_delay_ms = add->access_delay_ms >= 0 ? add->access_delay_ms
                                                    : base->access_delay_ms;
    dc->sndbuf = add->sndbuf >= 0 ? add->sndbuf : base->sndbuf;
    dc->background = add->background >= 0 ? add->background
                                          : base->background;
    return dc;
}

static const char *ct_test_set_delay(cmd_parms *cmd, void *d, const char *a)
{
    (void)cmd;
    ((ct_test_dir_conf_t *)d)->access_delay_ms = atoi(a);
    return NULL;
}

static const char *ct_test_set_sndbuf(cmd_parms *cmd, void *d, const char *a)
{
    (void)cmd;
    ((ct_test_dir_conf_t *)d)->sndbuf = atoi(a);
    return NULL;
}

static const char *ct_test_set_bg(cmd_parms *cmd, void *d, int on)
{
    (void)cmd;
    ((ct_test_dir_conf_t *)d)->background = on;
    return NULL;
}

static void ct_test_register_hooks(apr_pool_t *p)
{
    (void)p;
    ap_hook_handler(ct_test_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_access_checker(ct_test_access, NULL, NULL, APR_HOOK_MIDDLE);
    /* Last, as mod_bgdeliver asks of bgdeliver_request_background(). */
    ap_hook_fixups(ct_test_fixups, NULL, NULL, APR_HOOK_LAST);
    ap_hook_optional_fn_retrieve(ct_test_retrieve, NULL, NULL,
                                 APR_HOOK_MIDDLE);
}

static const command_rec ct_test_cmds[] = {
    AP_INIT_TAKE1("CtTestAccessDelay", ct_test_set_delay, NULL, OR_ALL,
                  "milliseconds the access checker sleeps"),
    AP_INIT_TAKE1("CtTestSendBuffer", ct_test_set_sndbuf, NULL, OR_ALL,
                  "SO_SNDBUF set on the connection in fixups"),
    AP_INIT_FLAG("CtTestBackground", ct_test_set_bg, NULL, OR_ALL,
                 "hand the response to mod_bgdeliver (fixups, last)"),
    { NULL }
};

AP_DECLARE_MODULE(ct_test) = {
    STANDARD20_MODULE_STUFF,
    ct_test_create_dir,                 /* per-directory config creator */
    ct_test_merge_dir,                  /* per-directory config merger */
    NULL,                               /* per-server config creator */
    NULL,                               /* per-server config merger */
    ct_test_cmds,                       /* command table */
    ct_test_register_hooks,             /* hook registration */
    AP_MODULE_FLAG_NONE                 /* flags */
};
