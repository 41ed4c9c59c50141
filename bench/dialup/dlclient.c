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
 * dlclient: load client for the mod_dialup benchmark.  Opens N concurrent
 * HTTP/1.1 connections to 127.0.0.1:PORT (ramped at R connections per
 * second), sends one GET each (Connection: close) and records, per
 * connection, when the request was sent, when the first and the last byte
 * arrived, how many bytes came, whether the body was complete, and the
 * start of every "pulse" (a group of reads with less than 5 ms between
 * them).  One thread, epoll, non-blocking sockets; stops by itself at the
 * deadline.  Loopback only: the address is fixed.
 *
 *   dlclient PORT PATH N DEADLINE_S [RAMP_PER_S] > out.txt
 *
 * Output, one line per connection:
 *   id code complete bytes header_bytes t_sent t_first t_last npulses p1 p2 ...
 * times in seconds (CLOCK_MONOTONIC); each pulse as START:BYTES, its start in
 * seconds after t_first and the bytes received by its end.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PULSE_GAP 0.005

typedef struct {
    int fd, state;              /* 0 unused, 1 connecting, 2 reading, 3 done */
    int code, hdr_done, complete;
    long bytes, hdr_bytes, clen;
    double t_sent, t_first, t_last, last_read;
    char head[4096];
    int headlen;
    double *pulse;              /* start of each pulse */
    long *pbytes;               /* bytes received by the end of it */
    int npulse, cap;
} conn_t;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void finish(int ep, conn_t *c)
{
    if (c->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    c->state = 3;
}

static void on_data(conn_t *c, const char *buf, long n, double t)
{
    if (!c->bytes) {
        c->t_first = t;
    }
    if (!c->npulse || t - c->last_read > PULSE_GAP) {
        if (c->npulse == c->cap) {
            c->cap = c->cap ? c->cap * 2 : 64;
            c->pulse = realloc(c->pulse, sizeof(double) * (size_t)c->cap);
            c->pbytes = realloc(c->pbytes, sizeof(long) * (size_t)c->cap);
            if (!c->pulse || !c->pbytes) {
                perror("realloc");
                exit(1);
            }
        }
        c->pulse[c->npulse++] = t;
    }
    c->last_read = t;
    c->t_last = t;
    c->bytes += n;
    c->pbytes[c->npulse - 1] = c->bytes;
    if (!c->hdr_done) {
        long take = n;
        char *end;
        if (take > (long)sizeof(c->head) - 1 - c->headlen) {
            take = (long)sizeof(c->head) - 1 - c->headlen;
        }
        memcpy(c->head + c->headlen, buf, (size_t)take);
        c->headlen += (int)take;
        c->head[c->headlen] = '\0';
        end = strstr(c->head, "\r\n\r\n");
        if (end) {
            char *cl = strcasestr(c->head, "\r\ncontent-length:");
            c->hdr_done = 1;
            c->hdr_bytes = (long)(end - c->head) + 4;
            c->code = atoi(c->head + 9);
            c->clen = cl ? atol(cl + 17) : -1;
        }
    }
    if (c->hdr_done && c->clen >= 0 && c->bytes - c->hdr_bytes >= c->clen) {
        c->complete = 1;
    }
}

int main(int argc, char **argv)
{
    int port, n, ep, opened = 0, active = 0, i;
    double deadline, ramp = 2000, t0;
    const char *path;
    char req[512], buf[65536];
    conn_t *conns;
    struct sockaddr_in sa;
    struct rlimit rl;

    if (argc < 5) {
        fprintf(stderr, "usage: %s PORT PATH N DEADLINE_S [RAMP_PER_S]\n",
                argv[0]);
        return 2;
    }
    port = atoi(argv[1]);
    path = argv[2];
    n = atoi(argv[3]);
    deadline = atof(argv[4]);
    if (argc > 5) {
        ramp = atof(argv[5]);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)n + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             "User-Agent: dlclient\r\nConnection: close\r\n\r\n", path);
    conns = calloc((size_t)n, sizeof(*conns));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ep = epoll_create1(0);
    t0 = now();

    while (now() - t0 < deadline && (opened < n || active > 0)) {
        struct epoll_event evs[256];
        int k;
        double t = now();
        /* Open new connections at the ramp rate. */
        while (opened < n && opened < (t - t0) * ramp + 1) {
            conn_t *c = &conns[opened];
            struct epoll_event ev;
            c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (c->fd < 0) {
                perror("socket");
                c->state = 3;
                opened++;
                continue;
            }
            if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0
                && errno != EINPROGRESS) {
                close(c->fd);
                c->fd = -1;
                c->state = 3;
                opened++;
                continue;
            }
            c->state = 1;
            ev.events = EPOLLOUT;
            ev.data.u32 = (uint32_t)opened;
            epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
            opened++;
            active++;
        }
        k = epoll_wait(ep, evs, 256, 1);
        t = now();
        for (i = 0; i < k; i++) {
            conn_t *c = &conns[evs[i].data.u32];
            if (c->state == 1) {
                int err = 0;
                socklen_t len = sizeof(err);
                struct epoll_event ev;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err || write(c->fd, req, strlen(req))
                           != (ssize_t)strlen(req)) {
                    finish(ep, c);
                    active--;
                    continue;
                }
                c->t_sent = now();
                c->state = 2;
                ev.events = EPOLLIN;
                ev.data.u32 = evs[i].data.u32;
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            }
            else if (c->state == 2) {
                for (;;) {
                    ssize_t r = read(c->fd, buf, sizeof(buf));
                    if (r > 0) {
                        on_data(c, buf, (long)r, t);
                        continue;
                    }
                    if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
                        break;
                    }
                    finish(ep, c);         /* EOF or error */
                    active--;
                    break;
                }
            }
        }
    }
    for (i = 0; i < n; i++) {
        conn_t *c = &conns[i];
        int j;
        if (c->fd >= 0 && c->state) {
            close(c->fd);
        }
        printf("%d %d %d %ld %ld %.6f %.6f %.6f %d", i, c->code, c->complete,
               c->bytes, c->hdr_bytes, c->t_sent, c->t_first, c->t_last,
               c->npulse);
        for (j = 0; j < c->npulse; j++) {
            printf(" %.5f:%ld", c->pulse[j] - c->t_first, c->pbytes[j]);
        }
        putchar('\n');
    }
    fprintf(stderr, "dlclient: %d connections, %.1f s\n", n, now() - t0);
    return 0;
}
