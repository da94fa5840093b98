/* roomlog native forwarding core: clocks, events for Python, the batched send queue, recvmmsg, SRTP sessions (see native/README.md). */
#include "rn_internal.h"

/* ---- clocks ---- */

double now_mono(rn_core *c) {
    if (c->fake_mono >= 0) return c->fake_mono;
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

uint64_t now_ntp(rn_core *c) {
    if (c->fake_mono >= 0) return c->fake_ntp;
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    /* aiortc_glue._ntp_now: seconds since 1900 << 32 | fraction */
    uint64_t sec = (uint64_t)t.tv_sec + 2208988800ULL;
    uint64_t frac = (uint64_t)(((double)t.tv_nsec / 1e9) * 4294967296.0);
    return (sec << 32) | (frac & 0xFFFFFFFFULL);
}

/* ---- events ---- */

static void sockaddr_host(const struct sockaddr_storage *a, socklen_t len, char *host, int *port) {
    host[0] = 0;
    *port = 0;
    if (len >= sizeof(struct sockaddr_in) && a->ss_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)a;
        inet_ntop(AF_INET, &s->sin_addr, host, 64);
        *port = ntohs(s->sin_port);
    } else if (len >= sizeof(struct sockaddr_in6) && a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)a;
        inet_ntop(AF_INET6, &s->sin6_addr, host, 64);
        *port = ntohs(s->sin6_port);
    }
}

void push_event(rn_core *c, int kind, int sock, int leg, int id, const struct sockaddr_storage *a,
                       socklen_t alen, const uint8_t *data, int len) {
    if (c->nev >= MAX_EVENTS || len < 0) {
        c->st[10]++;
        return;
    }
    rn_event *e = malloc(sizeof(rn_event) + (size_t)len);
    if (!e) {
        c->st[10]++;
        return;
    }
    e->next = NULL;
    e->kind = kind;
    e->sock = sock;
    e->leg = leg;
    e->id = id;
    e->len = len;
    if (a)
        sockaddr_host(a, alen, e->host, &e->port);
    else {
        e->host[0] = 0;
        e->port = 0;
    }
    if (len) memcpy(e->data, data, (size_t)len);
    if (c->ev_tail)
        c->ev_tail->next = e;
    else
        c->ev_head = e;
    c->ev_tail = e;
    if (c->nev++ == 0) {
        uint64_t one = 1;
        ssize_t w = write(c->evfd, &one, sizeof one); /* EAGAIN: already signalled */
        (void)w;
    }
}

/* ---- send queue ---- */

rn_qitem *queue_slot(rn_core *c) {
    if (c->qlen == SQUEUE) flush_locked(c);
    return &c->queue[c->qlen];
}

/* Protect the plain packet in it->buf (it->len) with the leg's tx session and keep it queued. */
int queue_commit(rn_core *c, rn_qitem *it, int leg_id, int rtcp) {
    rn_leg *l = c->legs[leg_id];
    int len = it->len;
    srtp_err_status_t s = rtcp ? srtp_protect_rtcp(l->tx, it->buf, &len) : srtp_protect(l->tx, it->buf, &len);
    if (s != srtp_err_status_ok) {
        l->st[4]++;
        c->st[4]++;
        return RN_ESRTP;
    }
    it->len = len;
    it->sock = l->sock;
    it->leg = leg_id;
    it->addrlen = l->addrlen;
    if (l->addrlen) memcpy(&it->addr, &l->addr, l->addrlen);
    c->qlen++;
    return 0;
}

static int cmp_order(const void *a, const void *b, void *arg) {
    const rn_qitem *q = arg;
    int x = *(const int *)a, y = *(const int *)b;
    if (q[x].sock != q[y].sock) return q[x].sock < q[y].sock ? -1 : 1;
    return x < y ? -1 : (x > y);
}

int flush_locked(rn_core *c) {
    int n = c->qlen, sent = 0;
    if (!n) return 0;
    for (int i = 0; i < n; i++) c->order[i] = i;
    qsort_r(c->order, (size_t)n, sizeof(int), cmp_order, c->queue);
    int i = 0;
    while (i < n) {
        int s = c->queue[c->order[i]].sock, j = i;
        while (j < n && c->queue[c->order[j]].sock == s) {
            rn_qitem *it = &c->queue[c->order[j]];
            int k = j - i;
            c->siov[k].iov_base = it->buf;
            c->siov[k].iov_len = (size_t)it->len;
            memset(&c->smsg[k].msg_hdr, 0, sizeof(struct msghdr));
            c->smsg[k].msg_hdr.msg_iov = &c->siov[k];
            c->smsg[k].msg_hdr.msg_iovlen = 1;
            if (it->addrlen) {
                c->smsg[k].msg_hdr.msg_name = &it->addr;
                c->smsg[k].msg_hdr.msg_namelen = it->addrlen;
            }
            j++;
        }
        rn_sock *sk = (s >= 0 && s < MAX_SOCKS) ? c->socks[s] : NULL;
        int count = j - i, done = 0;
        while (sk && done < count) {
            int r = sendmmsg(sk->fd, c->smsg + done, (unsigned)(count - done), MSG_DONTWAIT);
            c->st[11]++;
            if (r < 0) {
                if (errno == EINTR) continue;
                /* EAGAIN (socket buffer full) or an ICMP error: drop the rest, as a full
                   queue would; count it */
                c->st[9] += (uint64_t)(count - done);
                break;
            }
            for (int k = done; k < done + r; k++) {
                rn_qitem *it = &c->queue[c->order[i + k]];
                rn_leg *l = (it->leg >= 0 && it->leg < MAX_LEGS) ? c->legs[it->leg] : NULL;
                if (l) {
                    l->st[5]++;
                    l->st[6] += (uint64_t)it->len;
                }
            }
            done += r;
            sent += r;
        }
        if (!sk) c->st[9] += (uint64_t)count;
        i = j;
    }
    c->st[8] += (uint64_t)sent;
    c->qlen = 0;
    return sent;
}

/* aiortc's policy (RTCDtlsTransport._setup_srtp): any inbound/outbound SSRC, or one SSRC
 * (ssrc != 0) for a stream added to an existing session. */
int make_policy(srtp_policy_t *p, uint8_t *k, int profile, const uint8_t *key, int key_len, int inbound,
                       uint32_t ssrc) {
    memset(p, 0, sizeof(*p));
    if (key_len < 0 || key_len > 64 ||
        srtp_crypto_policy_set_from_profile_for_rtp(&p->rtp, (srtp_profile_t)profile) != srtp_err_status_ok ||
        srtp_crypto_policy_set_from_profile_for_rtcp(&p->rtcp, (srtp_profile_t)profile) != srtp_err_status_ok)
        return RN_EINVAL;
    unsigned want = srtp_profile_get_master_key_length((srtp_profile_t)profile) +
                    srtp_profile_get_master_salt_length((srtp_profile_t)profile);
    if (key_len != (int)want) return RN_EINVAL;
    memcpy(k, key, (size_t)key_len);
    if (ssrc) {
        p->ssrc.type = ssrc_specific;
        p->ssrc.value = ssrc;
    } else {
        p->ssrc.type = inbound ? ssrc_any_inbound : ssrc_any_outbound;
    }
    p->key = k;
    p->window_size = 1024;
    p->allow_repeat_tx = 1;
    return 0;
}

int make_session(srtp_t *out, int profile, const uint8_t *key, int key_len, int inbound) {
    srtp_policy_t p;
    uint8_t k[64];
    int r = make_policy(&p, k, profile, key, key_len, inbound, 0);
    if (r < 0) return r;
    return srtp_create(out, &p) == srtp_err_status_ok ? 0 : RN_ESRTP;
}

int drain_socket(rn_core *c, int sock) {
    rn_sock *s = c->socks[sock];
    int total = 0;
    for (int round = 0; round < 8; round++) {
        for (int i = 0; i < RBATCH; i++) {
            c->riov[i].iov_base = c->rbuf[i];
            c->riov[i].iov_len = RBUF - SRTP_MAX_TRAILER_LEN;
            memset(&c->rmsg[i].msg_hdr, 0, sizeof(struct msghdr));
            c->rmsg[i].msg_hdr.msg_iov = &c->riov[i];
            c->rmsg[i].msg_hdr.msg_iovlen = 1;
            c->rmsg[i].msg_hdr.msg_name = &c->raddr[i];
            c->rmsg[i].msg_hdr.msg_namelen = sizeof(c->raddr[i]);
        }
        int r = recvmmsg(s->fd, c->rmsg, RBATCH, MSG_DONTWAIT, NULL);
        c->st[12]++;
        if (r < 0) {
            if (errno == EINTR) continue;
            break; /* EAGAIN, or an ICMP error reported on the socket */
        }
        for (int i = 0; i < r && c->socks[sock]; i++) {
            if (c->rmsg[i].msg_hdr.msg_flags & MSG_TRUNC) continue;
            handle_datagram(c, sock, c->rbuf[i], (int)c->rmsg[i].msg_len, &c->raddr[i],
                            c->rmsg[i].msg_hdr.msg_namelen);
        }
        total += r;
        if (r < RBATCH || !c->socks[sock]) break;
    }
    return total;
}
