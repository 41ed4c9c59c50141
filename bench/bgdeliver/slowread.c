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
 * slowread: the load client of the mod_bgdeliver benchmark.
 *
 * One thread, epoll, non-blocking sockets, optional TLS (OpenSSL).  It runs
 * --conns "slots"; each slot makes --repeat requests one after the other,
 * each on a fresh connection ("Connection: close").  Slot i starts at
 * i * ramp / conns seconds.  Three uses:
 *
 *   slow readers   --conns 1000 --rate 20480 --rcvbuf 4096 --ramp 2
 *                  every connection reads at most RATE bytes/s, through a
 *                  receive buffer set before connect();
 *   fast clients   --conns 4 --repeat 3 --discard
 *                  read as fast as possible (body bytes of a plain-HTTP
 *                  response with a Content-Length are dropped in the kernel
 *                  with MSG_TRUNC, so the client costs little CPU);
 *   probe          --conns 80 --ramp 8 --timeout-ms 3000 --log FILE
 *                  an open-loop probe: one fresh connection every
 *                  ramp / conns seconds, whatever happened to the others.
 *
 * Everything is bounded by --duration: at the deadline (or on SIGINT/
 * SIGTERM) every connection is closed and the program reports and exits.
 * It only connects to the numeric IPv4 address it is given.
 *
 * Output: a summary of key=value pairs on stdout; --status FILE is
 * rewritten every 0.5 s with the current counts; --log FILE gets one line
 * per request (see log_request()).
 *
 * Build: gcc -O2 -Wall -o slowread slowread.c -lssl -lcrypto
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define HDR_MAX     8192
#define FAST_BUF    (256 * 1024)
#define BURST_S     0.25        /* how far a starved reader may catch up */
#define TICK_MS     5

enum {
    ST_WAIT,            /* slot not started yet */
    ST_CONNECTING,
    ST_TLS,
    ST_SENDING,
    ST_HEADERS,
    ST_BODY,
    ST_IDLE             /* slot finished all its requests */
};

typedef struct conn {
    int idx;
    int fd;
    int state;
    SSL *ssl;
    unsigned int armed;         /* current epoll interest */
    int registered;
    int sleeping;               /* rate limit: waiting until next_read */
    double t_start;             /* start of this request */
    double t_conn;              /* TCP connected */
    double t_first;             /* first response byte (0: none yet) */
    double next_read;
    size_t req_off;
    char *hdr;
    size_t hdr_len;
    long long body;
    long long clen;             /* -1 unknown */
    int chunked;
    int status;
    char tail[5];
    int tail_len;
    int runs_done;
} conn_t;

/* options */
static const char *opt_host = "127.0.0.1";
static int opt_port = 80;
static const char *opt_path = "/";
static int opt_tls;
static int opt_conns = 1;
static int opt_repeat = 1;
static double opt_rate;         /* bytes/s per connection, 0 = unlimited */
static int opt_rcvbuf;
static double opt_ramp;
static double opt_duration = 60;
static int opt_timeout_ms;
static int opt_chunk = 4096;
static int opt_discard;
static const char *opt_status;
static const char *opt_log;
static const char *opt_label = "-";

/* state */
static conn_t *conns;
static int epfd;
static SSL_CTX *ssl_ctx;
static struct sockaddr_in addr;
static char request[1024];
static size_t request_len;
static double t0;
static volatile sig_atomic_t stop_flag;
static FILE *logf;
static char *rbuf;

/* counters */
static long long n_started, n_ok, n_err, n_timeout, n_unfinished;
static long long n_first;       /* requests that got a first byte */
static long long bytes_body, bytes_ok;
static int open_now, receiving_now;
static int work_pending;        /* a reader yielded: poll without waiting */
static double t_last_done;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "slowread: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void cpu_times(double *user, double *sys)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *user = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
    *sys = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* Watch c for ev; ev == 0 takes it out of the epoll set altogether (a
 * registered descriptor would still report EPOLLHUP/EPOLLERR, and a
 * sleeping reader must not spin on them: the error shows at its next
 * read). */
static void arm(conn_t *c, unsigned int ev)
{
    struct epoll_event e;
    if (ev == 0) {
        if (c->registered) {
            epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
            c->registered = 0;
        }
        c->armed = 0;
        return;
    }
    if (c->registered && c->armed == ev) {
        return;
    }
    memset(&e, 0, sizeof(e));
    e.events = ev;
    e.data.ptr = c;
    if (epoll_ctl(epfd, c->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD,
                  c->fd, &e) < 0) {
        die("epoll_ctl: %s", strerror(errno));
    }
    c->registered = 1;
    c->armed = ev;
}

/* One line per request:
 *   label slot start_s connect_ms first_byte_ms total_ms status body result
 * times relative to the program's start; -1 where it never happened. */
static void log_request(conn_t *c, const char *result, double t)
{
    if (!logf) {
        return;
    }
    fprintf(logf, "%s %d %.4f %.3f %.3f %.3f %d %lld %s\n", opt_label,
            c->idx, c->t_start - t0,
            c->t_conn ? (c->t_conn - c->t_start) * 1e3 : -1.0,
            c->t_first ? (c->t_first - c->t_start) * 1e3 : -1.0,
            (t - c->t_start) * 1e3, c->status, c->body, result);
}

static void start_request(conn_t *c, double t);

/* End the current request of c; start the slot's next one if any. */
static void end_request(conn_t *c, const char *result, double t)
{
    char why[32];

    if (c->state == ST_WAIT || c->state == ST_IDLE) {
        return;
    }
    if (!strcmp(result, "ok") && (c->status < 200 || c->status > 299)) {
        snprintf(why, sizeof(why), "error:http-%d", c->status);
        result = why;
    }
    if (!strcmp(result, "ok")) {
        n_ok++;
        bytes_ok += c->body;
        t_last_done = t;
    }
    else if (!strcmp(result, "timeout")) {
        n_timeout++;
    }
    else if (!strcmp(result, "unfinished")) {
        n_unfinished++;
    }
    else {
        n_err++;
    }
    if (c->t_first) {
        receiving_now--;
    }
    log_request(c, result, t);
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);           /* also leaves the epoll set */
        c->fd = -1;
        open_now--;
    }
    c->registered = 0;
    c->sleeping = 0;
    c->state = ST_IDLE;
    c->runs_done++;
    if (!stop_flag && (opt_repeat <= 0 || c->runs_done < opt_repeat)) {
        start_request(c, t);
    }
}

static void start_request(conn_t *c, double t)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;

    c->ssl = NULL;
    c->armed = 0;
    c->registered = 0;
    c->sleeping = 0;
    c->t_start = t;
    c->t_conn = 0;
    c->t_first = 0;
    c->next_read = t;
    c->req_off = 0;
    c->hdr_len = 0;
    c->body = 0;
    c->clen = -1;
    c->chunked = 0;
    c->status = 0;
    c->tail_len = 0;
    n_started++;
    if (fd < 0) {
        c->fd = -1;
        c->state = ST_CONNECTING;
        fprintf(stderr, "slowread: socket: %s\n", strerror(errno));
        end_request(c, "error:socket", t);
        return;
    }
    c->fd = fd;
    open_now++;
    if (opt_rcvbuf > 0
        && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &opt_rcvbuf,
                      sizeof(opt_rcvbuf)) < 0) {
        die("SO_RCVBUF: %s", strerror(errno));
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->registered = 0;
    c->state = ST_CONNECTING;
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0
        && errno != EINPROGRESS) {
        end_request(c, errno == ECONNREFUSED ? "error:refused"
                       : "error:connect", t);
        return;
    }
    arm(c, EPOLLOUT);
}

/* Count n body bytes; for chunked bodies remember the last 5 bytes. */
static void got_body(conn_t *c, const char *p, size_t n)
{
    c->body += (long long)n;
    bytes_body += (long long)n;
    if (c->chunked && p) {
        if (n >= 5) {
            memcpy(c->tail, p + n - 5, 5);
            c->tail_len = 5;
        }
        else {
            size_t keep = (size_t)c->tail_len + n > 5 ? 5 - n : (size_t)c->tail_len;
            memmove(c->tail, c->tail + c->tail_len - keep, keep);
            memcpy(c->tail + keep, p, n);
            c->tail_len = (int)(keep + n);
        }
    }
}

static int parse_headers(conn_t *c)
{
    char *end, *line;
    c->hdr[c->hdr_len] = '\0';
    end = strstr(c->hdr, "\r\n\r\n");
    if (!end) {
        return 0;
    }
    *end = '\0';
    if (sscanf(c->hdr, "HTTP/%*d.%*d %d", &c->status) != 1) {
        c->status = -1;
    }
    for (line = strstr(c->hdr, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        if (!strncasecmp(line, "Content-Length:", 15)) {
            c->clen = atoll(line + 15);
        }
        else if (!strncasecmp(line, "Transfer-Encoding:", 18)
                 && strcasestr(line, "chunked")) {
            c->chunked = 1;
        }
    }
    {
        size_t hlen = (size_t)(end - c->hdr) + 4;
        size_t rest = c->hdr_len - hlen;
        c->state = ST_BODY;
        if (rest) {
            got_body(c, c->hdr + hlen, rest);
        }
    }
    return 1;
}

static int body_complete(const conn_t *c)
{
    if (c->clen >= 0) {
        return c->body >= c->clen;
    }
    return 0;
}

static const char *eof_result(const conn_t *c)
{
    if (c->state != ST_BODY) {
        return "error:eof-in-headers";
    }
    if (c->clen >= 0) {
        return c->body == c->clen ? "ok" : "error:short-body";
    }
    if (c->chunked) {
        return c->tail_len == 5 && !memcmp(c->tail, "0\r\n\r\n", 5)
               ? "ok" : "error:short-chunked";
    }
    return "ok";
}

/* Read what the rate allows; ends the request at EOF, on an error or when
 * the body is complete. */
static void do_read(conn_t *c, double t)
{
    int loops = 0;

    for (;;) {
        size_t want = opt_rate > 0 ? (size_t)opt_chunk : FAST_BUF;
        ssize_t n;
        int truncated = 0;

        if (opt_rate > 0) {
            if (t < c->next_read) {
                /* Not yet: stop watching the socket until then. */
                c->sleeping = 1;
                arm(c, 0);
                return;
            }
        }
        if (++loops > 16) {
            /* Fairness: let other connections run, come back at once
             * (TLS may hold decrypted bytes that epoll cannot see). */
            c->sleeping = 1;
            c->next_read = t;
            arm(c, 0);
            work_pending = 1;
            return;
        }
        if (c->state == ST_HEADERS) {
            want = HDR_MAX - 1 - c->hdr_len;
            if (want == 0) {
                end_request(c, "error:headers-too-long", t);
                return;
            }
        }
        if (c->ssl) {
            int r;
            ERR_clear_error();
            r = SSL_read(c->ssl, c->state == ST_HEADERS ? c->hdr + c->hdr_len
                                                       : rbuf, (int)want);
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_READ) {
                    arm(c, EPOLLIN);
                    return;
                }
                if (e == SSL_ERROR_WANT_WRITE) {
                    arm(c, EPOLLOUT);
                    return;
                }
                if (e == SSL_ERROR_ZERO_RETURN
                    || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)) {
                    end_request(c, eof_result(c), t);
                    return;
                }
                end_request(c, c->state == ST_BODY && body_complete(c)
                               ? "ok" : "error:tls-read", t);
                return;
            }
            n = r;
        }
        else {
            if (c->state == ST_BODY && opt_discard && c->clen >= 0) {
                n = recv(c->fd, rbuf, want, MSG_TRUNC | MSG_DONTWAIT);
                truncated = 1;
            }
            else {
                n = recv(c->fd, c->state == ST_HEADERS
                                ? c->hdr + c->hdr_len : rbuf, want,
                         MSG_DONTWAIT);
            }
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    arm(c, EPOLLIN);
                    return;
                }
                if (errno == EINTR) {
                    continue;
                }
                end_request(c, errno == ECONNRESET ? "error:reset"
                               : "error:read", t);
                return;
            }
            if (n == 0) {
                end_request(c, eof_result(c), t);
                return;
            }
        }
        if (!c->t_first) {
            c->t_first = t;
            n_first++;
            receiving_now++;
        }
        if (opt_rate > 0) {
            if (c->next_read < t - BURST_S) {
                c->next_read = t - BURST_S;
            }
            c->next_read += (double)n / opt_rate;
        }
        if (c->state == ST_HEADERS) {
            c->hdr_len += (size_t)n;
            if (!parse_headers(c)) {
                continue;
            }
        }
        else {
            got_body(c, truncated ? NULL : rbuf, (size_t)n);
        }
        if (body_complete(c)) {
            end_request(c, "ok", t);
            return;
        }
    }
}

static void do_send(conn_t *c, double t)
{
    while (c->req_off < request_len) {
        ssize_t n;
        if (c->ssl) {
            int r;
            ERR_clear_error();
            r = SSL_write(c->ssl, request + c->req_off,
                          (int)(request_len - c->req_off));
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_WRITE) {
                    arm(c, EPOLLOUT);
                    return;
                }
                if (e == SSL_ERROR_WANT_READ) {
                    arm(c, EPOLLIN);
                    return;
                }
                end_request(c, "error:tls-write", t);
                return;
            }
            n = r;
        }
        else {
            n = send(c->fd, request + c->req_off, request_len - c->req_off,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n < 0) {
                if (errno == EAGAIN) {
                    arm(c, EPOLLOUT);
                    return;
                }
                end_request(c, errno == ECONNRESET ? "error:reset"
                               : "error:write", t);
                return;
            }
        }
        c->req_off += (size_t)n;
    }
    c->state = ST_HEADERS;
    if (!c->hdr) {
        c->hdr = malloc(HDR_MAX);
        if (!c->hdr) {
            die("out of memory");
        }
    }
    c->hdr_len = 0;
    do_read(c, t);
}

static void do_tls(conn_t *c, double t)
{
    int r;
    ERR_clear_error();
    r = SSL_connect(c->ssl);
    if (r == 1) {
        c->state = ST_SENDING;
        do_send(c, t);
        return;
    }
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        arm(c, EPOLLIN);
        return;
    case SSL_ERROR_WANT_WRITE:
        arm(c, EPOLLOUT);
        return;
    default:
        end_request(c, "error:tls-handshake", t);
    }
}

static void handle(conn_t *c, unsigned int ev, double t)
{
    switch (c->state) {
    case ST_CONNECTING: {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            end_request(c, err == ECONNREFUSED ? "error:refused"
                           : err == ETIMEDOUT ? "error:connect-timeout"
                           : "error:connect", t);
            return;
        }
        c->t_conn = t;
        if (opt_tls) {
            c->ssl = SSL_new(ssl_ctx);
            if (!c->ssl) {
                die("SSL_new failed");
            }
            SSL_set_fd(c->ssl, c->fd);
            c->state = ST_TLS;
            do_tls(c, t);
        }
        else {
            c->state = ST_SENDING;
            do_send(c, t);
        }
        return;
    }
    case ST_TLS:
        do_tls(c, t);
        return;
    case ST_SENDING:
        do_send(c, t);
        return;
    case ST_HEADERS:
    case ST_BODY:
        if (ev & (EPOLLIN | EPOLLOUT | EPOLLHUP | EPOLLERR)) {
            do_read(c, t);
        }
        return;
    default:
        return;
    }
}

static void write_status(double t)
{
    char tmp[4096];
    FILE *f;
    double u, s;
    int waiting = open_now - receiving_now;

    if (!opt_status) {
        return;
    }
    cpu_times(&u, &s);
    snprintf(tmp, sizeof(tmp), "%s.tmp", opt_status);
    f = fopen(tmp, "w");
    if (!f) {
        return;
    }
    fprintf(f, "t=%.3f open=%d waiting=%d receiving=%d started=%lld "
            "first=%lld ok=%lld err=%lld timeout=%lld bytes=%lld "
            "cpu_user=%.3f cpu_sys=%.3f\n", t - t0, open_now, waiting,
            receiving_now, n_started, n_first, n_ok, n_err, n_timeout,
            bytes_body, u, s);
    fclose(f);
    rename(tmp, opt_status);
}

static void usage(void)
{
    fprintf(stderr,
        "usage: slowread --port P --path /x [--host 127.0.0.1] [--tls]\n"
        "  [--conns N] [--repeat K (0 = until the deadline)]\n"
        "  [--rate BYTES_PER_S] [--rcvbuf BYTES] [--chunk BYTES]\n"
        "  [--ramp S] [--duration S] [--timeout-ms MS] [--discard]\n"
        "  [--status FILE] [--log FILE] [--label WORD]\n");
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    int i;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (!strcmp(a, name) && v && ++i)
        if (ARG("--host")) opt_host = v;
        else if (ARG("--port")) opt_port = atoi(v);
        else if (ARG("--path")) opt_path = v;
        else if (!strcmp(a, "--tls")) opt_tls = 1;
        else if (ARG("--conns")) opt_conns = atoi(v);
        else if (ARG("--repeat")) opt_repeat = atoi(v);
        else if (ARG("--rate")) opt_rate = atof(v);
        else if (ARG("--rcvbuf")) opt_rcvbuf = atoi(v);
        else if (ARG("--chunk")) opt_chunk = atoi(v);
        else if (ARG("--ramp")) opt_ramp = atof(v);
        else if (ARG("--duration")) opt_duration = atof(v);
        else if (ARG("--timeout-ms")) opt_timeout_ms = atoi(v);
        else if (!strcmp(a, "--discard")) opt_discard = 1;
        else if (ARG("--status")) opt_status = v;
        else if (ARG("--log")) opt_log = v;
        else if (ARG("--label")) opt_label = v;
        else usage();
#undef ARG
    }
    if (opt_conns < 0 || opt_port <= 0 || opt_port > 65535 || opt_chunk <= 0
        || opt_chunk > FAST_BUF || opt_duration <= 0) {
        usage();
    }
}

int main(int argc, char **argv)
{
    struct epoll_event evs[512];
    struct rlimit rl;
    struct sigaction sa;
    double deadline, next_status = 0, u, s;
    int i, next_slot = 0;

    parse_args(argc, argv);

    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)opt_port);
    if (inet_pton(AF_INET, opt_host, &addr.sin_addr) != 1) {
        die("--host must be a numeric IPv4 address (got %s)", opt_host);
    }
    request_len = (size_t)snprintf(request, sizeof(request),
        "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: slowread\r\n"
        "Connection: close\r\n\r\n", opt_path, opt_host, opt_port);
    if (request_len >= sizeof(request)) {
        die("path too long");
    }

    /* Descriptors: as many as the hard limit allows, no more. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if ((rlim_t)opt_conns + 32 > rl.rlim_cur) {
            die("%d connections need more descriptors than the limit %ld",
                opt_conns, (long)rl.rlim_cur);
        }
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (opt_tls) {
        ssl_ctx = SSL_CTX_new(TLS_client_method());
        if (!ssl_ctx) {
            die("SSL_CTX_new failed");
        }
        SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_NONE, NULL);
    }
    if (opt_log) {
        logf = fopen(opt_log, "w");
        if (!logf) {
            die("cannot write %s: %s", opt_log, strerror(errno));
        }
    }
    rbuf = malloc(FAST_BUF);
    conns = calloc((size_t)(opt_conns ? opt_conns : 1), sizeof(conn_t));
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!rbuf || !conns || epfd < 0) {
        die("set-up failed");
    }
    for (i = 0; i < opt_conns; i++) {
        conns[i].idx = i;
        conns[i].fd = -1;
        conns[i].state = ST_WAIT;
    }

    t0 = now_s();
    deadline = t0 + opt_duration;
    for (;;) {
        double t = now_s();
        int n, active = 0;

        if (stop_flag || t >= deadline) {
            break;
        }
        /* Start the slots that are due. */
        while (next_slot < opt_conns
               && (opt_ramp <= 0
                   || t >= t0 + opt_ramp * next_slot / opt_conns)) {
            start_request(&conns[next_slot++], t);
        }
        /* Timeouts, and rate-limited readers whose time has come. */
        for (i = 0; i < next_slot; i++) {
            conn_t *c = &conns[i];
            if (c->state == ST_WAIT || c->state == ST_IDLE) {
                continue;
            }
            active++;
            if (opt_timeout_ms > 0
                && (t - c->t_start) * 1e3 > opt_timeout_ms) {
                end_request(c, "timeout", t);
                continue;
            }
            if (c->sleeping && t >= c->next_read) {
                c->sleeping = 0;
                do_read(c, t);
            }
        }
        if (next_slot >= opt_conns && active == 0) {
            break;              /* every slot has finished */
        }
        if (t >= next_status) {
            write_status(t);
            next_status = t + 0.5;
        }
        n = epoll_wait(epfd, evs, 512, work_pending ? 0 : TICK_MS);
        work_pending = 0;
        if (n < 0 && errno != EINTR) {
            die("epoll_wait: %s", strerror(errno));
        }
        t = now_s();
        for (i = 0; i < n; i++) {
            handle(evs[i].data.ptr, evs[i].events, t);
        }
    }

    {
        double t = now_s();
        stop_flag = 1;          /* no new requests from end_request() */
        for (i = 0; i < opt_conns; i++) {
            end_request(&conns[i], "unfinished", t);
        }
        write_status(t);
        cpu_times(&u, &s);
        printf("label=%s conns=%d started=%lld first=%lld ok=%lld err=%lld "
               "timeout=%lld unfinished=%lld bytes=%lld bytes_ok=%lld "
               "elapsed=%.3f last_done=%.3f cpu_user=%.3f cpu_sys=%.3f\n",
               opt_label, opt_conns, n_started, n_first, n_ok, n_err,
               n_timeout, n_unfinished, bytes_body, bytes_ok, t - t0,
               t_last_done ? t_last_done - t0 : 0.0, u, s);
    }
    if (logf) {
        fclose(logf);
    }
    return 0;
}
