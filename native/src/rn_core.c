/* roomlog native forwarding core: SRTP legs, RTP rewrite, NACK cache, batched sockets.
 * This file: the public API (core, sockets, legs, run, events, counters); the rest is in
 * rn_io.c, rn_forward.c, rn_media.c and rn_streams.c, sharing rn_internal.h.
 *
 * The per-packet rules are media_node/forwarder.py's (Encoding.push, Downstream.start/
 * hold/forward/switch/rewrite) and media_node/aiortc_glue.py's (OutboundLeg.prepare,
 * serialize); SRTP is libsrtp2, the library aiortc uses through pylibsrtp, with the same
 * policies (ssrc_any_inbound/outbound, window 1024, allow_repeat_tx). See native/README.md.
 *
 * Concurrency: one mutex per core; every public function takes it, rn_run_once releases
 * it while it waits in epoll_wait, so Python may drive the core from its own thread.
 */
#include "rn_internal.h"

static pthread_once_t srtp_once = PTHREAD_ONCE_INIT;
static int srtp_ok;
static void srtp_start(void) { srtp_ok = srtp_init() == srtp_err_status_ok; }

rn_core *rn_core_new(void) {
    pthread_once(&srtp_once, srtp_start);
    if (!srtp_ok) return NULL;
    rn_core *c = calloc(1, sizeof(rn_core));
    if (!c) return NULL;
    c->queue = aligned_alloc(16, sizeof(rn_qitem) * SQUEUE);
    c->order = calloc(SQUEUE, sizeof(int));
    c->smsg = calloc(SQUEUE, sizeof(struct mmsghdr));
    c->siov = calloc(SQUEUE, sizeof(struct iovec));
    c->rbuf = aligned_alloc(16, (size_t)RBATCH * RBUF);
    c->snapshot = calloc(MAX_OUTS, sizeof(int));
    c->epfd = epoll_create1(EPOLL_CLOEXEC);
    c->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!c->queue || !c->order || !c->smsg || !c->siov || !c->rbuf || !c->snapshot || c->epfd < 0 || c->evfd < 0) {
        rn_core_free(c);
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    c->fake_mono = -1;
    return c;
}

void rn_core_free(rn_core *c) {
    if (!c) return;
    for (int i = 0; i < MAX_OUTS; i++)
        if (c->outs[i]) free(c->outs[i]);
    for (int i = 0; i < MAX_INS; i++)
        if (c->ins[i]) {
            free(c->ins[i]->cache);
            free(c->ins[i]->readers.v);
            free(c->ins[i]);
        }
    for (int i = 0; i < MAX_LEGS; i++)
        if (c->legs[i]) {
            srtp_dealloc(c->legs[i]->rx);
            srtp_dealloc(c->legs[i]->tx);
            free(c->legs[i]->ins.v);
            free(c->legs[i]->outs.v);
            free(c->legs[i]);
        }
    for (int i = 0; i < MAX_SOCKS; i++)
        if (c->socks[i]) {
            free(c->socks[i]->legs.v);
            free(c->socks[i]);
        }
    while (c->ev_head) {
        rn_event *e = c->ev_head;
        c->ev_head = e->next;
        free(e);
    }
    if (c->epfd >= 0) close(c->epfd);
    if (c->evfd >= 0) close(c->evfd);
    free(c->queue);
    free(c->order);
    free(c->smsg);
    free(c->siov);
    free(c->rbuf);
    free(c->snapshot);
    free(c);
}

int rn_epoll_fd(rn_core *c) { return c->epfd; }

int rn_event_fd(rn_core *c) { return c->evfd; }

void rn_set_clock(rn_core *c, double mono, uint64_t ntp) {
    LOCK(c);
    c->fake_mono = mono;
    c->fake_ntp = ntp;
    UNLOCK(c);
}

int rn_add_socket(rn_core *c, int fd) {
    LOCK(c);
    int id = -1;
    for (int i = 0; i < MAX_SOCKS; i++)
        if (!c->socks[i]) {
            id = i;
            break;
        }
    if (id < 0) RET(c, RN_EFULL);
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) RET(c, RN_ESYS);
    rn_sock *s = calloc(1, sizeof(rn_sock));
    if (!s) RET(c, RN_EFULL);
    s->fd = fd;
    s->gen = ++c->gen;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ((uint64_t)s->gen << 32) | (uint32_t)id};
    if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        free(s);
        RET(c, RN_ESYS);
    }
    c->socks[id] = s;
    RET(c, id);
}

void remove_leg_locked(rn_core *c, int leg);

int rn_remove_socket(rn_core *c, int sock) {
    LOCK(c);
    if (sock < 0 || sock >= MAX_SOCKS || !c->socks[sock]) RET(c, RN_EINVAL);
    flush_locked(c);
    rn_sock *s = c->socks[sock];
    while (s->legs.n) remove_leg_locked(c, s->legs.v[0]);
    epoll_ctl(c->epfd, EPOLL_CTL_DEL, s->fd, NULL);
    free(s->legs.v);
    free(s);
    c->socks[sock] = NULL;
    RET(c, 0);
}

int rn_add_leg(rn_core *c, int sock, const char *host, int port, int profile, const uint8_t *rx_key, int rx_key_len,
               const uint8_t *tx_key, int tx_key_len) {
    LOCK(c);
    if (sock < 0 || sock >= MAX_SOCKS || !c->socks[sock] || port < 0 || port > 65535) RET(c, RN_EINVAL);
    int id = -1;
    for (int i = 0; i < MAX_LEGS; i++)
        if (!c->legs[i]) {
            id = i;
            break;
        }
    if (id < 0) RET(c, RN_EFULL);
    rn_leg *l = calloc(1, sizeof(rn_leg));
    if (!l) RET(c, RN_EFULL);
    l->sock = sock;
    if (host && host[0]) {
        struct sockaddr_in *a4 = (void *)&l->addr;
        struct sockaddr_in6 *a6 = (void *)&l->addr;
        if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
            a4->sin_family = AF_INET;
            a4->sin_port = htons((uint16_t)port);
            l->addrlen = sizeof(*a4);
        } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
            a6->sin6_family = AF_INET6;
            a6->sin6_port = htons((uint16_t)port);
            l->addrlen = sizeof(*a6);
        } else {
            free(l);
            RET(c, RN_EINVAL);
        }
    }
    int r = make_session(&l->rx, profile, rx_key, rx_key_len, 1);
    if (r == 0) {
        r = make_session(&l->tx, profile, tx_key, tx_key_len, 0);
        if (r < 0) srtp_dealloc(l->rx);
    }
    if (r < 0) {
        free(l);
        RET(c, r);
    }
    l->profile = profile;
    l->key_len = rx_key_len;
    memcpy(l->rx_key, rx_key, (size_t)rx_key_len);
    memcpy(l->tx_key, tx_key, (size_t)tx_key_len);
    if (ivec_add(&c->socks[sock]->legs, id) < 0) {
        srtp_dealloc(l->rx);
        srtp_dealloc(l->tx);
        free(l);
        RET(c, RN_EFULL);
    }
    c->legs[id] = l;
    RET(c, id);
}

void remove_leg_locked(rn_core *c, int leg) {
    rn_leg *l = c->legs[leg];
    while (l->outs.n) remove_out_locked(c, l->outs.v[0]);
    while (l->ins.n) remove_in_locked(c, l->ins.v[0]);
    for (int i = 0; i < c->qlen; i++)
        if (c->queue[i].leg == leg) c->queue[i].leg = -1;
    ivec_del(&c->socks[l->sock]->legs, leg);
    srtp_dealloc(l->rx);
    srtp_dealloc(l->tx);
    free(l->ins.v);
    free(l->outs.v);
    free(l);
    c->legs[leg] = NULL;
}

int rn_remove_leg(rn_core *c, int leg) {
    LOCK(c);
    if (leg < 0 || leg >= MAX_LEGS || !c->legs[leg]) RET(c, RN_EINVAL);
    flush_locked(c);
    remove_leg_locked(c, leg);
    RET(c, 0);
}

int rn_set_roc(rn_core *c, int leg, int tx, uint32_t ssrc, uint32_t roc) {
    LOCK(c);
    if (leg < 0 || leg >= MAX_LEGS || !c->legs[leg]) RET(c, RN_EINVAL);
    rn_leg *l = c->legs[leg];
    srtp_t s = tx ? l->tx : l->rx;
    uint32_t current;
    if (srtp_get_stream_roc(s, ssrc, &current) != srtp_err_status_ok) {
        /* no stream for this SSRC yet (libsrtp creates them on the first packet): add one */
        srtp_policy_t p;
        uint8_t k[64];
        int r = make_policy(&p, k, l->profile, tx ? l->tx_key : l->rx_key, l->key_len, !tx, ssrc);
        if (r < 0) RET(c, r);
        if (srtp_add_stream(s, &p) != srtp_err_status_ok) RET(c, RN_ESRTP);
    }
    RET(c, srtp_set_stream_roc(s, ssrc, roc) == srtp_err_status_ok ? 0 : RN_ESRTP);
}

int rn_run_once(rn_core *c, int timeout_ms) {
    struct epoll_event evs[64];
    int n = epoll_wait(c->epfd, evs, 64, timeout_ms);
    if (n < 0) return errno == EINTR ? 0 : RN_ESYS;
    LOCK(c);
    int total = 0;
    for (int i = 0; i < n; i++) {
        uint32_t id = (uint32_t)evs[i].data.u64, gen = (uint32_t)(evs[i].data.u64 >> 32);
        if (id >= MAX_SOCKS || !c->socks[id] || c->socks[id]->gen != gen) continue;
        total += drain_socket(c, (int)id);
    }
    flush_locked(c);
    RET(c, total);
}

int rn_feed(rn_core *c, int sock, const char *host, int port, const uint8_t *data, int len) {
    LOCK(c);
    if (sock < 0 || sock >= MAX_SOCKS || !c->socks[sock] || len < 0 || len > RBUF - SRTP_MAX_TRAILER_LEN)
        RET(c, RN_EINVAL);
    struct sockaddr_storage a;
    memset(&a, 0, sizeof(a));
    socklen_t alen = 0;
    if (host && host[0]) {
        struct sockaddr_in *a4 = (void *)&a;
        struct sockaddr_in6 *a6 = (void *)&a;
        if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
            a4->sin_family = AF_INET;
            a4->sin_port = htons((uint16_t)port);
            alen = sizeof(*a4);
        } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
            a6->sin6_family = AF_INET6;
            a6->sin6_port = htons((uint16_t)port);
            alen = sizeof(*a6);
        } else {
            RET(c, RN_EINVAL);
        }
    }
    memcpy(c->rbuf[0], data, (size_t)len);
    handle_datagram(c, sock, c->rbuf[0], len, &a, alen);
    RET(c, 0);
}

int rn_flush(rn_core *c) {
    LOCK(c);
    RET(c, flush_locked(c));
}

int rn_send_rtcp(rn_core *c, int leg, const uint8_t *data, int len) {
    LOCK(c);
    if (leg < 0 || leg >= MAX_LEGS || !c->legs[leg] || len < 8 || len > MAX_RTP) RET(c, RN_EINVAL);
    rn_qitem *it = queue_slot(c);
    memcpy(it->buf, data, (size_t)len);
    it->len = len;
    int r = queue_commit(c, it, leg, 1);
    if (r < 0) RET(c, r);
    c->legs[leg]->st[7]++;
    flush_locked(c);
    RET(c, 0);
}

int rn_protect(rn_core *c, int leg, int rtcp, uint8_t *buf, int len, int cap) {
    LOCK(c);
    if (leg < 0 || leg >= MAX_LEGS || !c->legs[leg] || len < 8 || cap < len + SRTP_MAX_TRAILER_LEN + 4)
        RET(c, RN_EINVAL);
    srtp_t s = c->legs[leg]->tx;
    srtp_err_status_t st = rtcp ? srtp_protect_rtcp(s, buf, &len) : srtp_protect(s, buf, &len);
    RET(c, st == srtp_err_status_ok ? len : RN_ESRTP);
}

int rn_unprotect(rn_core *c, int leg, int rtcp, uint8_t *buf, int len) {
    LOCK(c);
    if (leg < 0 || leg >= MAX_LEGS || !c->legs[leg] || len < 8) RET(c, RN_EINVAL);
    srtp_t s = c->legs[leg]->rx;
    srtp_err_status_t st = rtcp ? srtp_unprotect_rtcp(s, buf, &len) : srtp_unprotect(s, buf, &len);
    RET(c, st == srtp_err_status_ok ? len : RN_ESRTP);
}

int rn_next_event(rn_core *c, int *kind, int *sock, int *leg, int *id, char *host, int *port, uint8_t *buf,
                  int cap) {
    LOCK(c);
    rn_event *e = c->ev_head;
    if (!e) RET(c, -1);
    c->ev_head = e->next;
    if (!c->ev_head) {
        c->ev_tail = NULL;
        uint64_t v;
        ssize_t r = read(c->evfd, &v, sizeof v); /* the queue is empty: not readable any more */
        (void)r;
    }
    c->nev--;
    *kind = e->kind;
    *sock = e->sock;
    *leg = e->leg;
    *id = e->id;
    *port = e->port;
    memcpy(host, e->host, 64);
    int n = e->len < cap ? e->len : cap;
    memcpy(buf, e->data, (size_t)n);
    free(e);
    RET(c, n);
}

static int copy_stats(const uint64_t *src, int count, uint64_t *out, int n) {
    int k = count < n ? count : n;
    memcpy(out, src, sizeof(uint64_t) * (size_t)k);
    return k;
}

int rn_core_stats(rn_core *c, uint64_t *out, int n) {
    LOCK(c);
    RET(c, copy_stats(c->st, 13, out, n));
}

int rn_leg_stats(rn_core *c, int leg, uint64_t *out, int n) {
    LOCK(c);
    if (leg < 0 || leg >= MAX_LEGS || !c->legs[leg]) RET(c, RN_EINVAL);
    RET(c, copy_stats(c->legs[leg]->st, 8, out, n));
}

int rn_in_stats(rn_core *c, int in, uint64_t *out, int n) {
    LOCK(c);
    if (in < 0 || in >= MAX_INS || !c->ins[in]) RET(c, RN_EINVAL);
    rn_in *x = c->ins[in];
    /* packets bytes lost expected highest_ext_seq keyframes gaps rtx_packets bad_rtx keyframe_events jitter */
    uint64_t expected = x->started ? (uint64_t)(x->cycles + x->max_seq) - x->base_seq + 1 : 0;
    uint64_t lost = expected > x->st[2] ? expected - x->st[2] : 0;
    uint64_t v[11] = {x->st[0], x->st[1], lost,      expected,  (uint64_t)x->cycles + x->max_seq,
                      x->st[3], x->st[4], x->st[5], x->st[6], x->st[7],
                      (uint64_t)(x->jitter_q4 >> 4)};
    RET(c, copy_stats(v, 11, out, n));
}

int rn_out_stats(rn_core *c, int out, uint64_t *o, int n) {
    LOCK(c);
    if (out < 0 || out >= MAX_OUTS || !c->outs[out]) RET(c, RN_EINVAL);
    RET(c, copy_stats(c->outs[out]->st, 11, o, n));
}
