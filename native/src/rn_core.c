/* roomlog native forwarding core: SRTP legs, RTP rewrite, NACK cache, batched sockets.
 *
 * The per-packet rules are media_node/forwarder.py's (Encoding.push, Downstream.start/
 * hold/forward/switch/rewrite) and media_node/aiortc_glue.py's (OutboundLeg.prepare,
 * serialize); SRTP is libsrtp2, the library aiortc uses through pylibsrtp, with the same
 * policies (ssrc_any_inbound/outbound, window 1024, allow_repeat_tx). See native/README.md.
 *
 * Concurrency: one mutex per core; every public function takes it, rn_run_once releases
 * it while it waits in epoll_wait, so Python may drive the core from its own thread.
 */
#define _GNU_SOURCE
#include "rn_core.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <srtp2/srtp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SOCKS 4096
#define MAX_LEGS 8192
#define MAX_INS 4096
#define MAX_OUTS 32768
#define RBATCH 64          /* datagrams per recvmmsg */
#define RBUF 2048          /* receive buffer per datagram */
#define SQUEUE 2048        /* datagrams queued before a flush */
#define SBUF 1664          /* send buffer per datagram: 1500 + SRTP trailer room */
#define MAX_RTP 1500       /* largest plain RTP/RTCP the core forwards or sends */
#define CACHE 512          /* packets kept per in stream (answers NACKs, held packets) */
#define MAX_HELD 64        /* forwarder.MAX_HELD_PACKETS */
#define MAX_HOLD_S 0.1     /* forwarder.MAX_HOLD_S */
#define KEYFRAME_EVENT_S 0.1
#define MAX_EVENTS 8192
#define MAX_GAP 512        /* larger jumps are a restart, not losses to report */

typedef struct {
    int *v;
    int n, cap;
} ivec;

static int ivec_add(ivec *a, int x) {
    for (int i = 0; i < a->n; i++)
        if (a->v[i] == x) return 0;
    if (a->n == a->cap) {
        int cap = a->cap ? a->cap * 2 : 4;
        int *v = realloc(a->v, (size_t)cap * sizeof(int));
        if (!v) return RN_EFULL;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = x;
    return 0;
}

static void ivec_del(ivec *a, int x) {
    for (int i = 0; i < a->n; i++)
        if (a->v[i] == x) {
            memmove(a->v + i, a->v + i + 1, (size_t)(a->n - i - 1) * sizeof(int));
            a->n--;
            return;
        }
}

typedef struct {
    int fd;
    uint32_t gen;
    ivec legs;
} rn_sock;

typedef struct {
    int sock;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    srtp_t rx, tx;
    int profile, key_len;
    uint8_t rx_key[64], tx_key[64]; /* kept to add SSRC-specific streams (rn_set_roc) */
    ivec ins, outs;
    uint64_t st[8]; /* rx_datagrams rx_bytes rtp_in rtcp_in srtp_errors tx_packets tx_bytes rtcp_sent */
} rn_leg;

typedef struct {
    uint16_t seq;
    uint8_t valid, marker;
    uint32_t ts;
    int16_t audio_level; /* -1: none */
    uint8_t padding;
    uint16_t len;
    uint8_t payload[MAX_RTP];
} rn_slot;

typedef struct {
    int leg;
    uint32_t ssrc, rtx_ssrc;
    int rtx_pt, codec, clock_rate, audio_level_id;
    ivec readers;
    rn_slot *cache;
    int started;
    uint16_t base_seq, max_seq;
    uint32_t cycles;
    double last_keyframe_event;
    uint64_t st[8]; /* packets bytes received_for_loss keyframes gaps rtx_packets bad_rtx keyframe_events */
} rn_in;

typedef struct {
    int leg, cur, tgt;
    uint32_t ssrc, rtx_ssrc;
    int pt, rtx_pt;
    uint16_t rtx_seq;
    int mid_id, abs_id, audio_level_id;
    char mid[17];
    int mid_len;
    /* rewrite state: forwarder.Downstream */
    uint16_t next_seq, seq_offset, switch_seq, switch_out_seq, max_seq, pic_offset, last_pic;
    uint32_t next_ts, ts_offset, last_ts;
    int max_valid, pic_valid, frame_open, paused;
    double last_sent_at;
    uint16_t held[MAX_HELD];
    int nheld;
    double held_since;
    uint64_t st[10]; /* packets payload_bytes wire_bytes nacked retransmitted nack_misses switches last_rtp_ts last_ntp before_switch */
} rn_out;

typedef struct rn_event {
    struct rn_event *next;
    int kind, sock, leg, id, port, len;
    char host[64];
    uint8_t data[];
} rn_event;

typedef struct {
    int sock, leg;
    socklen_t addrlen;
    int len;
    struct sockaddr_storage addr;
    uint8_t buf[SBUF] __attribute__((aligned(16)));
} rn_qitem;

struct rn_core {
    pthread_mutex_t mu;
    int epfd;
    int evfd; /* readable while events wait for Python (rn_event_fd) */
    double fake_mono;
    uint64_t fake_ntp;
    rn_sock *socks[MAX_SOCKS];
    rn_leg *legs[MAX_LEGS];
    rn_in *ins[MAX_INS];
    rn_out *outs[MAX_OUTS];
    uint32_t gen;
    rn_qitem *queue;
    int qlen;
    int *order;
    struct mmsghdr *smsg;
    struct iovec *siov;
    struct mmsghdr rmsg[RBATCH];
    struct iovec riov[RBATCH];
    struct sockaddr_storage raddr[RBATCH];
    uint8_t (*rbuf)[RBUF];
    uint8_t scratch[RBUF] __attribute__((aligned(16)));
    int *snapshot;
    rn_event *ev_head, *ev_tail;
    int nev;
    /* datagrams_in rtp_in rtcp_in raw_in srtp_errors parse_errors unknown_ssrc forwarded
       sent send_errors events_dropped sendmmsg_calls recvmmsg_calls */
    uint64_t st[13];
};

static pthread_once_t srtp_once = PTHREAD_ONCE_INIT;
static int srtp_ok;
static void srtp_start(void) { srtp_ok = srtp_init() == srtp_err_status_ok; }

/* ---- clocks ---- */

static double now_mono(rn_core *c) {
    if (c->fake_mono >= 0) return c->fake_mono;
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint64_t now_ntp(rn_core *c) {
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

static void push_event(rn_core *c, int kind, int sock, int leg, int id, const struct sockaddr_storage *a,
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

/* ---- payload rules: media_node/keyframes.py ---- */

static int vp8_descriptor_size(const uint8_t *p, int n) {
    if (n < 1) return 0;
    if (!(p[0] & 0x80)) return 1;
    if (n < 2) return 0;
    int ext = p[1], size = 2;
    if (ext & 0x80) {
        if (n < 3) return 0;
        size += (p[2] & 0x80) ? 2 : 1;
    }
    if (ext & 0x40) size += 1;
    if (ext & 0x30) size += 1;
    return n >= size ? size : 0;
}

static int vp8_keyframe_start(const uint8_t *p, int n) {
    if (n < 2 || !(p[0] & 0x10) || (p[0] & 0x0F)) return 0;
    int size = vp8_descriptor_size(p, n);
    return size > 0 && size < n && !(p[size] & 0x01);
}

static int h264_keyframe_start(const uint8_t *p, int n) {
    if (n < 1) return 0;
    int t = p[0] & 0x1F;
    if (t == 5 || t == 7) return 1;
    if (t == 24) {
        int pos = 1;
        while (pos + 2 < n) {
            int size = (p[pos] << 8) | p[pos + 1];
            if (size == 0 || pos + 2 + size > n) return 0;
            int nt = p[pos + 2] & 0x1F;
            if (nt == 5 || nt == 7) return 1;
            pos += 2 + size;
        }
        return 0;
    }
    if (t == 28 && n >= 2) {
        int fu = p[1];
        return (fu & 0x80) && ((fu & 0x1F) == 5 || (fu & 0x1F) == 7);
    }
    return 0;
}

static int is_keyframe(int codec, const uint8_t *p, int n) {
    if (codec == RN_CODEC_VP8) return vp8_keyframe_start(p, n);
    if (codec == RN_CODEC_H264) return h264_keyframe_start(p, n);
    return 1; /* audio and unparsed codecs start anywhere (keyframes.always) */
}

/* VP8 PictureID: returns 0 (absent), 7 or 15 (width), value in *pic */
static int vp8_picture_id(const uint8_t *p, int n, uint16_t *pic) {
    if (n < 3 || !(p[0] & 0x80) || !(p[1] & 0x80)) return 0;
    if (p[2] & 0x80) {
        if (n < 4) return 0;
        *pic = (uint16_t)(((p[2] & 0x7F) << 8) | p[3]);
        return 15;
    }
    *pic = p[2] & 0x7F;
    return 7;
}

static inline int seq_newer_or_equal(uint16_t a, uint16_t b) { return (uint16_t)(a - b) < 0x8000; }

/* ---- RTP parse / build ---- */

typedef struct {
    uint8_t marker, pt;
    uint16_t seq;
    uint32_t ts, ssrc;
    const uint8_t *ext; /* extension block body */
    int ext_len, ext_profile;
    const uint8_t *payload;
    int plen, padding;
} rn_rtp;

static int parse_rtp(const uint8_t *b, int n, rn_rtp *p) {
    if (n < 12 || (b[0] >> 6) != 2) return RN_EPARSE;
    int cc = b[0] & 0x0F, pos = 12 + 4 * cc;
    p->marker = b[1] >> 7;
    p->pt = b[1] & 0x7F;
    p->seq = (uint16_t)((b[2] << 8) | b[3]);
    p->ts = ((uint32_t)b[4] << 24) | ((uint32_t)b[5] << 16) | ((uint32_t)b[6] << 8) | b[7];
    p->ssrc = ((uint32_t)b[8] << 24) | ((uint32_t)b[9] << 16) | ((uint32_t)b[10] << 8) | b[11];
    if (pos > n) return RN_EPARSE;
    p->ext = NULL;
    p->ext_len = 0;
    p->ext_profile = 0;
    if (b[0] & 0x10) {
        if (pos + 4 > n) return RN_EPARSE;
        p->ext_profile = (b[pos] << 8) | b[pos + 1];
        int words = (b[pos + 2] << 8) | b[pos + 3];
        pos += 4;
        if (pos + 4 * words > n) return RN_EPARSE;
        p->ext = b + pos;
        p->ext_len = 4 * words;
        pos += 4 * words;
    }
    int end = n;
    p->padding = 0;
    if (b[0] & 0x20) {
        int pad = b[n - 1];
        if (pad == 0 || pad > n - pos) return RN_EPARSE;
        p->padding = pad;
        end = n - pad;
    }
    p->payload = b + pos;
    p->plen = end - pos;
    return 0;
}

/* The ssrc-audio-level byte of extension `id` (one- or two-byte headers), or -1. */
static int find_audio_level(const rn_rtp *p, int id) {
    if (!id || !p->ext) return -1;
    const uint8_t *e = p->ext;
    int n = p->ext_len, pos = 0;
    if (p->ext_profile == 0xBEDE) {
        while (pos < n) {
            int x = e[pos] >> 4, len = (e[pos] & 0x0F) + 1;
            if (x == 0) {
                pos++;
                continue;
            }
            if (x == 15) break;
            if (pos + 1 + len > n) break;
            if (x == id && len >= 1) return e[pos + 1];
            pos += 1 + len;
        }
    } else if ((p->ext_profile & 0xFFF0) == 0x1000) {
        while (pos < n) {
            int x = e[pos];
            if (x == 0) {
                pos++;
                continue;
            }
            if (pos + 2 > n) break;
            int len = e[pos + 1];
            if (pos + 2 + len > n) break;
            if (x == id && len >= 1) return e[pos + 2];
            pos += 2 + len;
        }
    }
    return -1;
}

static inline void put16(uint8_t *b, uint32_t v) {
    b[0] = (uint8_t)(v >> 8);
    b[1] = (uint8_t)v;
}
static inline void put32(uint8_t *b, uint32_t v) {
    b[0] = (uint8_t)(v >> 24);
    b[1] = (uint8_t)(v >> 16);
    b[2] = (uint8_t)(v >> 8);
    b[3] = (uint8_t)v;
}

/* An out stream's packet, as OutboundLeg.prepare + aiortc_glue.serialize write it
 * (mid, abs-send-time, audio-level in one-byte headers; padding as zeros then its size).
 * osn >= 0: an RTX packet carrying original sequence number osn. Returns the length. */
static int build_rtp(const rn_out *o, uint8_t *b, int pt, uint16_t seq, uint32_t ts, uint32_t ssrc, int marker,
                     int audio_level, uint32_t abs_send_time, int osn, const uint8_t *payload, int plen,
                     int padding, int pic_width, uint16_t pic) {
    int pos = 12;
    uint8_t ext[32];
    int elen = 0;
    if (o->mid_id && o->mid_len) {
        ext[elen++] = (uint8_t)((o->mid_id << 4) | (o->mid_len - 1));
        memcpy(ext + elen, o->mid, (size_t)o->mid_len);
        elen += o->mid_len;
    }
    if (o->abs_id) {
        ext[elen++] = (uint8_t)((o->abs_id << 4) | 2);
        ext[elen++] = (uint8_t)(abs_send_time >> 16);
        ext[elen++] = (uint8_t)(abs_send_time >> 8);
        ext[elen++] = (uint8_t)abs_send_time;
    }
    if (o->audio_level_id && audio_level >= 0) {
        ext[elen++] = (uint8_t)(o->audio_level_id << 4);
        ext[elen++] = (uint8_t)audio_level;
    }
    while (elen % 4) ext[elen++] = 0;
    int total = 12 + (elen ? 4 + elen : 0) + (osn >= 0 ? 2 : 0) + plen + padding;
    if (total > MAX_RTP) return RN_EINVAL;
    b[0] = (uint8_t)(0x80 | (padding ? 0x20 : 0) | (elen ? 0x10 : 0));
    b[1] = (uint8_t)((marker << 7) | (pt & 0x7F));
    put16(b + 2, seq);
    put32(b + 4, ts);
    put32(b + 8, ssrc);
    if (elen) {
        put16(b + 12, 0xBEDE);
        put16(b + 14, (uint32_t)(elen >> 2));
        memcpy(b + 16, ext, (size_t)elen);
        pos = 16 + elen;
    }
    if (osn >= 0) {
        put16(b + pos, (uint32_t)osn);
        pos += 2;
    }
    int start = pos;
    memcpy(b + pos, payload, (size_t)plen);
    pos += plen;
    if (pic_width == 15) {
        b[start + 2] = (uint8_t)((pic >> 8) | 0x80);
        b[start + 3] = (uint8_t)pic;
    } else if (pic_width == 7) {
        b[start + 2] = (uint8_t)(pic & 0x7F);
    }
    if (padding) {
        memset(b + pos, 0, (size_t)padding - 1);
        b[pos + padding - 1] = (uint8_t)padding;
        pos += padding;
    }
    return pos;
}

/* ---- send queue ---- */

static int flush_locked(rn_core *c);

static rn_qitem *queue_slot(rn_core *c) {
    if (c->qlen == SQUEUE) flush_locked(c);
    return &c->queue[c->qlen];
}

/* Protect the plain packet in it->buf (it->len) with the leg's tx session and keep it queued. */
static int queue_commit(rn_core *c, rn_qitem *it, int leg_id, int rtcp) {
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

static int flush_locked(rn_core *c) {
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

/* ---- forwarding: media_node/forwarder.py Downstream ---- */

static rn_slot *cache_get(rn_in *in, uint16_t seq) {
    rn_slot *s = &in->cache[seq % CACHE];
    return (s->valid && s->seq == seq) ? s : NULL;
}

static void keyframe_wanted(rn_core *c, int in_id, double now) {
    rn_in *in = c->ins[in_id];
    if (in->codec == RN_CODEC_AUDIO || in->codec == RN_CODEC_OTHER) return;
    if (now - in->last_keyframe_event < KEYFRAME_EVENT_S) return;
    in->last_keyframe_event = now;
    in->st[7]++;
    push_event(c, RN_EV_KEYFRAME, -1, in->leg, in_id, NULL, 0, NULL, 0);
}

/* Queue out stream o's copy of slot (seq/ts already rewritten by the caller). */
static int emit(rn_core *c, rn_out *o, const rn_in *in, const rn_slot *s, uint16_t seq, uint32_t ts, int rtx) {
    uint16_t pic = 0, newpic = 0;
    int width = in->codec == RN_CODEC_VP8 ? vp8_picture_id(s->payload, s->len, &pic) : 0;
    int patch = 0;
    if (width) {
        newpic = (uint16_t)((pic + o->pic_offset) & 0x7FFF);
        patch = o->pic_offset ? width : 0;
    }
    uint64_t ntp = now_ntp(c);
    uint32_t abs = (uint32_t)((ntp >> 14) & 0x00FFFFFF);
    rn_qitem *it = queue_slot(c);
    int audio = o->audio_level_id ? s->audio_level : -1;
    int len;
    if (rtx && o->rtx_pt >= 0)
        len = build_rtp(o, it->buf, o->rtx_pt, o->rtx_seq++, ts, o->rtx_ssrc, s->marker, audio, abs, seq, s->payload,
                        s->len, s->padding, patch, newpic);
    else
        len = build_rtp(o, it->buf, o->pt, seq, ts, o->ssrc, s->marker, audio, abs, -1, s->payload, s->len, s->padding,
                        patch, newpic);
    if (len < 0) return len;
    it->len = len;
    int r = queue_commit(c, it, o->leg, 0);
    if (r < 0) return r;
    if (!rtx) {
        o->st[0]++;
        o->st[1] += (uint64_t)s->len;
        o->st[2] += (uint64_t)len;
        o->st[7] = ts;
        o->st[8] = ntp;
        c->st[7]++;
    }
    return 0;
}

static void forward(rn_core *c, int out_id, rn_in *in, const rn_slot *s, double now);

static void do_switch(rn_core *c, int out_id, int in_id, const rn_slot *s, double now) {
    rn_out *o = c->outs[out_id];
    rn_in *in = c->ins[in_id];
    if (o->max_valid) {
        o->next_seq = (uint16_t)(o->max_seq + 1);
        double elapsed = now - o->last_sent_at;
        if (elapsed < 0) elapsed = 0;
        double ticks = nearbyint(elapsed * in->clock_rate);
        if (ticks < 1) ticks = 1;
        o->next_ts = (uint32_t)(o->last_ts + (uint64_t)ticks);
    }
    o->seq_offset = (uint16_t)(o->next_seq - s->seq);
    o->ts_offset = o->next_ts - s->ts;
    o->switch_seq = s->seq;
    o->switch_out_seq = o->next_seq;
    uint16_t pic;
    if (in->codec == RN_CODEC_VP8 && vp8_picture_id(s->payload, s->len, &pic) && o->pic_valid)
        o->pic_offset = (uint16_t)((o->last_pic + 1 - pic) & 0x7FFF);
    else
        o->pic_offset = 0;
    int old = o->cur;
    o->cur = in_id;
    if (old >= 0 && old != in_id && old != o->tgt && c->ins[old]) ivec_del(&c->ins[old]->readers, out_id);
    o->st[6]++;
}

static void release(rn_core *c, int out_id, double now) {
    rn_out *o = c->outs[out_id];
    uint16_t held[MAX_HELD];
    int n = o->nheld;
    memcpy(held, o->held, sizeof(uint16_t) * (size_t)n);
    o->nheld = 0;
    rn_in *in = c->ins[o->tgt];
    rn_slot *first = n ? cache_get(in, held[0]) : NULL;
    if (!first) return;
    do_switch(c, out_id, o->tgt, first, now);
    for (int i = 0; i < n; i++) {
        rn_slot *s = cache_get(in, held[i]);
        if (s) forward(c, out_id, in, s, now);
    }
}

static void forward(rn_core *c, int out_id, rn_in *in, const rn_slot *s, double now) {
    rn_out *o = c->outs[out_id];
    if (o->paused) return;
    if (!seq_newer_or_equal(s->seq, o->switch_seq)) {
        o->st[9]++;
    } else {
        uint16_t seq = (uint16_t)(s->seq + o->seq_offset);
        uint32_t ts = s->ts + o->ts_offset;
        if (!o->max_valid || seq_newer_or_equal(seq, o->max_seq)) {
            o->max_valid = 1;
            o->max_seq = seq;
            o->last_ts = ts;
            o->last_sent_at = now;
            o->frame_open = !s->marker;
            uint16_t pic;
            if (in->codec == RN_CODEC_VP8 && vp8_picture_id(s->payload, s->len, &pic)) {
                o->last_pic = (uint16_t)((pic + o->pic_offset) & 0x7FFF);
                o->pic_valid = 1;
            }
        }
        emit(c, o, in, s, seq, ts, 0);
    }
    if (o->nheld && !o->frame_open) release(c, out_id, now);
}

static void hold(rn_core *c, int out_id, const rn_slot *s, double now) {
    rn_out *o = c->outs[out_id];
    o->held[o->nheld++] = s->seq;
    if (o->nheld >= MAX_HELD || now - o->held_since > MAX_HOLD_S) release(c, out_id, now);
}

/* Encoding.push for one packet already in the in stream's cache. */
static void push(rn_core *c, int in_id, rn_slot *s) {
    rn_in *in = c->ins[in_id];
    if (!in->readers.n) return;
    double now = now_mono(c);
    int keyframe = -1;
    int n = in->readers.n;
    /* a snapshot, as Encoding.push iterates tuple(self.readers): forwarding never removes a
       reader from this in stream's list (a switch removes it from the one it leaves) */
    memcpy(c->snapshot, in->readers.v, sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) {
        int oid = c->snapshot[i];
        rn_out *o = c->outs[oid];
        if (!o) continue;
        if (o->cur == in_id) {
            forward(c, oid, in, s, now);
        } else if (o->tgt != in_id) {
            continue;
        } else if (o->nheld) {
            hold(c, oid, s, now);
        } else {
            if (keyframe < 0) keyframe = is_keyframe(in->codec, s->payload, s->len);
            if (keyframe) {
                if (o->cur >= 0 && o->frame_open) {
                    o->held[0] = s->seq;
                    o->nheld = 1;
                    o->held_since = now;
                } else {
                    do_switch(c, oid, in_id, s, now);
                    forward(c, oid, in, s, now);
                }
            } else if (!o->paused) {
                keyframe_wanted(c, in_id, now);
            }
        }
    }
}

/* ---- inbound ---- */

static void track_seq(rn_core *c, int in_id, uint16_t seq) {
    rn_in *in = c->ins[in_id];
    in->st[2]++;
    if (!in->started) {
        in->started = 1;
        in->base_seq = in->max_seq = seq;
        return;
    }
    uint16_t delta = (uint16_t)(seq - in->max_seq);
    if (delta == 0 || delta >= 0x8000) return; /* duplicate or late (a retransmission) */
    if (delta > 1 && delta <= MAX_GAP) {
        uint8_t miss[2 * MAX_GAP];
        int k = 0;
        for (uint16_t s = (uint16_t)(in->max_seq + 1); s != seq; s++) {
            put16(miss + 2 * k, s);
            k++;
        }
        in->st[4]++;
        push_event(c, RN_EV_GAP, -1, in->leg, in_id, NULL, 0, miss, 2 * k);
    }
    if (seq < in->max_seq) in->cycles += 0x10000;
    in->max_seq = seq;
}

static void handle_rtp(rn_core *c, int sock, int leg_id, uint8_t *b, int n, const struct sockaddr_storage *a,
                       socklen_t alen) {
    rn_leg *l = c->legs[leg_id];
    if (srtp_unprotect(l->rx, b, &n) != srtp_err_status_ok) {
        l->st[4]++;
        c->st[4]++;
        return;
    }
    rn_rtp p;
    if (parse_rtp(b, n, &p) < 0) {
        c->st[5]++;
        return;
    }
    int in_id = -1, rtx = 0;
    for (int i = 0; i < l->ins.n; i++) {
        rn_in *in = c->ins[l->ins.v[i]];
        if (in->ssrc == p.ssrc) {
            in_id = l->ins.v[i];
            break;
        }
        if (in->rtx_ssrc && in->rtx_ssrc == p.ssrc) {
            in_id = l->ins.v[i];
            rtx = 1;
            break;
        }
    }
    if (in_id < 0) {
        c->st[6]++;
        push_event(c, RN_EV_RTP, sock, leg_id, -1, a, alen, b, n);
        return;
    }
    rn_in *in = c->ins[in_id];
    if (rtx) {
        if (p.plen < 2 || (in->rtx_pt >= 0 && p.pt != in->rtx_pt)) {
            in->st[6]++;
            return;
        }
        in->st[5]++;
        p.seq = (uint16_t)((p.payload[0] << 8) | p.payload[1]);
        p.payload += 2;
        p.plen -= 2;
    }
    if (p.plen > MAX_RTP) {
        c->st[5]++;
        return;
    }
    in->st[0]++;
    in->st[1] += (uint64_t)p.plen;
    track_seq(c, in_id, p.seq);
    rn_slot *s = &in->cache[p.seq % CACHE];
    s->valid = 1;
    s->seq = p.seq;
    s->ts = p.ts;
    s->marker = p.marker;
    s->padding = (uint8_t)p.padding;
    s->audio_level = (int16_t)find_audio_level(&p, in->audio_level_id);
    s->len = (uint16_t)p.plen;
    memcpy(s->payload, p.payload, (size_t)p.plen);
    if (in->codec == RN_CODEC_VP8 || in->codec == RN_CODEC_H264)
        if (is_keyframe(in->codec, s->payload, s->len)) in->st[3]++;
    push(c, in_id, s);
}

/* A generic NACK (RFC 4585 §6.2.1) for an out stream of this leg: answer from the cache. */
static int answer_nack(rn_core *c, int leg_id, const uint8_t *b, int len) {
    uint32_t media = ((uint32_t)b[8] << 24) | ((uint32_t)b[9] << 16) | ((uint32_t)b[10] << 8) | b[11];
    rn_leg *l = c->legs[leg_id];
    int out_id = -1;
    for (int i = 0; i < l->outs.n; i++)
        if (c->outs[l->outs.v[i]]->ssrc == media) {
            out_id = l->outs.v[i];
            break;
        }
    if (out_id < 0) return 0;
    rn_out *o = c->outs[out_id];
    uint8_t miss[2 * 17 * 64];
    int k = 0;
    for (int pos = 12; pos + 4 <= len; pos += 4) {
        uint16_t pid = (uint16_t)((b[pos] << 8) | b[pos + 1]);
        uint16_t blp = (uint16_t)((b[pos + 2] << 8) | b[pos + 3]);
        for (int bit = -1; bit < 16; bit++) {
            if (bit >= 0 && !(blp & (1 << bit))) continue;
            uint16_t seq = (uint16_t)(pid + bit + 1);
            o->st[3]++;
            if (o->cur < 0 || !seq_newer_or_equal(seq, o->switch_out_seq)) continue; /* before the keyframe */
            rn_in *in = c->ins[o->cur];
            uint16_t in_seq = (uint16_t)(seq - o->seq_offset);
            rn_slot *s = cache_get(in, in_seq);
            if (s && emit(c, o, in, s, seq, s->ts + o->ts_offset, 1) == 0) {
                o->st[4]++;
            } else {
                o->st[5]++;
                if (k < (int)(sizeof(miss) / 2)) {
                    put16(miss + 2 * k, in_seq);
                    k++;
                }
            }
        }
    }
    if (k) push_event(c, RN_EV_NACK_MISS, -1, leg_id, out_id, NULL, 0, miss, 2 * k);
    return 1;
}

static void handle_rtcp(rn_core *c, int sock, int leg_id, uint8_t *b, int n, const struct sockaddr_storage *a,
                        socklen_t alen) {
    rn_leg *l = c->legs[leg_id];
    if (srtp_unprotect_rtcp(l->rx, b, &n) != srtp_err_status_ok) {
        l->st[4]++;
        c->st[4]++;
        return;
    }
    uint8_t *rest = c->scratch;
    int rlen = 0, pos = 0;
    while (pos + 4 <= n) {
        int plen = (((b[pos + 2] << 8) | b[pos + 3]) + 1) * 4;
        if ((b[pos] >> 6) != 2 || pos + plen > n) break;
        int handled = 0;
        if (b[pos + 1] == 205 && (b[pos] & 0x1F) == 1 && plen >= 16) handled = answer_nack(c, leg_id, b + pos, plen);
        if (!handled) {
            memcpy(rest + rlen, b + pos, (size_t)plen);
            rlen += plen;
        }
        pos += plen;
    }
    if (pos < n) { /* malformed tail: Python (aiortc) decides what to do with it */
        memcpy(rest + rlen, b + pos, (size_t)(n - pos));
        rlen += n - pos;
    }
    if (rlen) push_event(c, RN_EV_RTCP, sock, leg_id, -1, a, alen, rest, rlen);
}

static int same_addr(const struct sockaddr_storage *a, socklen_t alen, const rn_leg *l) {
    if (!l->addrlen) return 1;
    if (a->ss_family != l->addr.ss_family) return 0;
    if (a->ss_family == AF_INET && alen >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)&l->addr;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6 && alen >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)&l->addr;
        return x->sin6_port == y->sin6_port && !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr));
    }
    return 0;
}

static void handle_datagram(rn_core *c, int sock, uint8_t *b, int n, const struct sockaddr_storage *a,
                            socklen_t alen) {
    c->st[0]++;
    rn_sock *sk = c->socks[sock];
    int leg_id = -1;
    for (int i = 0; i < sk->legs.n; i++)
        if (same_addr(a, alen, c->legs[sk->legs.v[i]])) {
            leg_id = sk->legs.v[i];
            break;
        }
    /* RFC 7983: 128..191 is RTP/RTCP; everything else (STUN 0..3, DTLS 20..63) is Python's */
    if (leg_id < 0 || n < 12 || b[0] < 128 || b[0] > 191) {
        c->st[3]++;
        push_event(c, RN_EV_RAW, sock, leg_id, -1, a, alen, b, n);
        return;
    }
    rn_leg *l = c->legs[leg_id];
    l->st[0]++;
    l->st[1] += (uint64_t)n;
    if (b[1] >= 192 && b[1] <= 208) { /* aiortc's is_rtcp */
        l->st[3]++;
        c->st[2]++;
        handle_rtcp(c, sock, leg_id, b, n, a, alen);
    } else {
        l->st[2]++;
        c->st[1]++;
        handle_rtp(c, sock, leg_id, b, n, a, alen);
    }
}

/* ---- public API ---- */

#define LOCK(c) pthread_mutex_lock(&(c)->mu)
#define UNLOCK(c) pthread_mutex_unlock(&(c)->mu)
#define RET(c, v)           \
    do {                    \
        int _r = (v);       \
        UNLOCK(c);          \
        return _r;          \
    } while (0)

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

static void remove_leg_locked(rn_core *c, int leg);

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

/* aiortc's policy (RTCDtlsTransport._setup_srtp): any inbound/outbound SSRC, or one SSRC
 * (ssrc != 0) for a stream added to an existing session. */
static int make_policy(srtp_policy_t *p, uint8_t *k, int profile, const uint8_t *key, int key_len, int inbound,
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

static int make_session(srtp_t *out, int profile, const uint8_t *key, int key_len, int inbound) {
    srtp_policy_t p;
    uint8_t k[64];
    int r = make_policy(&p, k, profile, key, key_len, inbound, 0);
    if (r < 0) return r;
    return srtp_create(out, &p) == srtp_err_status_ok ? 0 : RN_ESRTP;
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

static void remove_out_locked(rn_core *c, int out);
static void remove_in_locked(rn_core *c, int in);

static void remove_leg_locked(rn_core *c, int leg) {
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

int rn_add_in(rn_core *c, int leg, uint32_t ssrc, uint32_t rtx_ssrc, int rtx_pt, int codec, int clock_rate,
              int audio_level_id) {
    LOCK(c);
    if (leg < 0 || leg >= MAX_LEGS || !c->legs[leg] || codec < 0 || codec > 3 || clock_rate <= 0 ||
        audio_level_id < 0 || audio_level_id > 255 || rtx_pt > 127)
        RET(c, RN_EINVAL);
    rn_leg *l = c->legs[leg];
    for (int i = 0; i < l->ins.n; i++) {
        rn_in *o = c->ins[l->ins.v[i]];
        if (o->ssrc == ssrc || (rtx_ssrc && o->rtx_ssrc == rtx_ssrc)) RET(c, RN_EINVAL);
    }
    int id = -1;
    for (int i = 0; i < MAX_INS; i++)
        if (!c->ins[i]) {
            id = i;
            break;
        }
    if (id < 0) RET(c, RN_EFULL);
    rn_in *in = calloc(1, sizeof(rn_in));
    if (!in) RET(c, RN_EFULL);
    in->cache = calloc(CACHE, sizeof(rn_slot));
    if (!in->cache || ivec_add(&l->ins, id) < 0) {
        free(in->cache);
        free(in);
        RET(c, RN_EFULL);
    }
    in->leg = leg;
    in->ssrc = ssrc;
    in->rtx_ssrc = rtx_ssrc;
    in->rtx_pt = rtx_pt;
    in->codec = codec;
    in->clock_rate = clock_rate;
    in->audio_level_id = audio_level_id;
    in->last_keyframe_event = -1e18;
    c->ins[id] = in;
    RET(c, id);
}

static void remove_in_locked(rn_core *c, int in_id) {
    for (int i = 0; i < MAX_OUTS; i++) {
        rn_out *o = c->outs[i];
        if (o && (o->cur == in_id || o->tgt == in_id)) remove_out_locked(c, i);
    }
    rn_in *in = c->ins[in_id];
    ivec_del(&c->legs[in->leg]->ins, in_id);
    free(in->cache);
    free(in->readers.v);
    free(in);
    c->ins[in_id] = NULL;
}

int rn_remove_in(rn_core *c, int in) {
    LOCK(c);
    if (in < 0 || in >= MAX_INS || !c->ins[in]) RET(c, RN_EINVAL);
    remove_in_locked(c, in);
    RET(c, 0);
}

int rn_add_out(rn_core *c, int leg, int in, uint32_t ssrc, int pt, uint32_t rtx_ssrc, int rtx_pt, int rtx_seq,
               int mid_id, const char *mid, int abs_send_time_id, int audio_level_id, int initial_seq,
               uint32_t initial_ts) {
    LOCK(c);
    size_t mlen = mid ? strlen(mid) : 0;
    if (leg < 0 || leg >= MAX_LEGS || !c->legs[leg] || in < 0 || in >= MAX_INS || !c->ins[in] || pt < 0 || pt > 127 ||
        rtx_pt > 127 || mid_id < 0 || mid_id > 14 || abs_send_time_id < 0 || abs_send_time_id > 14 ||
        audio_level_id < 0 || audio_level_id > 14 || mlen > 16 || (mid_id && !mlen))
        RET(c, RN_EINVAL);
    rn_leg *l = c->legs[leg];
    for (int i = 0; i < l->outs.n; i++)
        if (c->outs[l->outs.v[i]]->ssrc == ssrc) RET(c, RN_EINVAL);
    int id = -1;
    for (int i = 0; i < MAX_OUTS; i++)
        if (!c->outs[i]) {
            id = i;
            break;
        }
    if (id < 0) RET(c, RN_EFULL);
    rn_out *o = calloc(1, sizeof(rn_out));
    if (!o) RET(c, RN_EFULL);
    if (ivec_add(&l->outs, id) < 0 || ivec_add(&c->ins[in]->readers, id) < 0) {
        ivec_del(&l->outs, id);
        free(o);
        RET(c, RN_EFULL);
    }
    o->leg = leg;
    o->cur = -1;
    o->tgt = in;
    o->ssrc = ssrc;
    o->pt = pt;
    o->rtx_ssrc = rtx_ssrc;
    o->rtx_pt = rtx_pt;
    o->rtx_seq = (uint16_t)rtx_seq;
    o->mid_id = mid_id;
    o->mid_len = (int)mlen;
    if (mlen) memcpy(o->mid, mid, mlen);
    o->abs_id = abs_send_time_id;
    o->audio_level_id = audio_level_id;
    o->next_seq = (uint16_t)initial_seq;
    o->next_ts = initial_ts;
    c->outs[id] = o;
    RET(c, id);
}

static void remove_out_locked(rn_core *c, int out) {
    rn_out *o = c->outs[out];
    if (o->cur >= 0 && c->ins[o->cur]) ivec_del(&c->ins[o->cur]->readers, out);
    if (c->ins[o->tgt]) ivec_del(&c->ins[o->tgt]->readers, out);
    ivec_del(&c->legs[o->leg]->outs, out);
    free(o);
    c->outs[out] = NULL;
}

int rn_remove_out(rn_core *c, int out) {
    LOCK(c);
    if (out < 0 || out >= MAX_OUTS || !c->outs[out]) RET(c, RN_EINVAL);
    remove_out_locked(c, out);
    RET(c, 0);
}

int rn_out_retarget(rn_core *c, int out, int in) {
    LOCK(c);
    if (out < 0 || out >= MAX_OUTS || !c->outs[out] || in < 0 || in >= MAX_INS || !c->ins[in]) RET(c, RN_EINVAL);
    rn_out *o = c->outs[out];
    int old = o->tgt;
    o->tgt = in;
    o->nheld = 0;
    if (old != in && old != o->cur && c->ins[old]) ivec_del(&c->ins[old]->readers, out);
    RET(c, ivec_add(&c->ins[in]->readers, out));
}

int rn_out_pause(rn_core *c, int out, int paused) {
    LOCK(c);
    if (out < 0 || out >= MAX_OUTS || !c->outs[out]) RET(c, RN_EINVAL);
    rn_out *o = c->outs[out];
    paused = paused ? 1 : 0;
    if (paused == o->paused) RET(c, 0);
    o->paused = paused;
    if (!paused) { /* Downstream.resume */
        int cur = o->cur;
        o->cur = -1;
        o->nheld = 0;
        o->frame_open = 0;
        if (cur >= 0 && cur != o->tgt && c->ins[cur]) ivec_del(&c->ins[cur]->readers, out);
        RET(c, ivec_add(&c->ins[o->tgt]->readers, out));
    }
    RET(c, 0);
}

/* RN_OUT_STATE: cur tgt next_seq next_ts seq_offset ts_offset switch_seq switch_out_seq
 *               max_seq(-1 none) last_ts last_sent_at_us pic_offset last_pic(-1 none) frame_open paused */
#define RN_OUT_STATE 15

int rn_out_get_state(rn_core *c, int out, int64_t *s, int n) {
    LOCK(c);
    if (out < 0 || out >= MAX_OUTS || !c->outs[out] || n < RN_OUT_STATE) RET(c, RN_EINVAL);
    rn_out *o = c->outs[out];
    int64_t v[RN_OUT_STATE] = {o->cur,
                               o->tgt,
                               o->next_seq,
                               o->next_ts,
                               o->seq_offset,
                               o->ts_offset,
                               o->switch_seq,
                               o->switch_out_seq,
                               o->max_valid ? o->max_seq : -1,
                               o->last_ts,
                               (int64_t)llround(o->last_sent_at * 1e6),
                               o->pic_offset,
                               o->pic_valid ? o->last_pic : -1,
                               o->frame_open,
                               o->paused};
    memcpy(s, v, sizeof(v));
    RET(c, RN_OUT_STATE);
}

int rn_out_set_state(rn_core *c, int out, const int64_t *s, int n) {
    LOCK(c);
    if (out < 0 || out >= MAX_OUTS || !c->outs[out] || n < RN_OUT_STATE) RET(c, RN_EINVAL);
    rn_out *o = c->outs[out];
    int cur = (int)s[0], tgt = (int)s[1];
    if ((cur >= 0 && (cur >= MAX_INS || !c->ins[cur])) || tgt < 0 || tgt >= MAX_INS || !c->ins[tgt])
        RET(c, RN_EINVAL);
    if (o->cur >= 0 && c->ins[o->cur]) ivec_del(&c->ins[o->cur]->readers, out);
    if (c->ins[o->tgt]) ivec_del(&c->ins[o->tgt]->readers, out);
    o->cur = cur;
    o->tgt = tgt;
    o->next_seq = (uint16_t)s[2];
    o->next_ts = (uint32_t)s[3];
    o->seq_offset = (uint16_t)s[4];
    o->ts_offset = (uint32_t)s[5];
    o->switch_seq = (uint16_t)s[6];
    o->switch_out_seq = (uint16_t)s[7];
    o->max_valid = s[8] >= 0;
    o->max_seq = (uint16_t)(s[8] >= 0 ? s[8] : 0);
    o->last_ts = (uint32_t)s[9];
    o->last_sent_at = (double)s[10] / 1e6;
    o->pic_offset = (uint16_t)(s[11] & 0x7FFF);
    o->pic_valid = s[12] >= 0;
    o->last_pic = (uint16_t)(s[12] >= 0 ? s[12] & 0x7FFF : 0);
    o->frame_open = s[13] != 0;
    o->paused = s[14] != 0;
    o->nheld = 0;
    int r = ivec_add(&c->ins[tgt]->readers, out);
    if (r == 0 && cur >= 0) r = ivec_add(&c->ins[cur]->readers, out);
    RET(c, r);
}

static int drain_socket(rn_core *c, int sock) {
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
    /* packets bytes lost expected highest_ext_seq keyframes gaps rtx_packets bad_rtx keyframe_events */
    uint64_t expected = x->started ? (uint64_t)(x->cycles + x->max_seq) - x->base_seq + 1 : 0;
    uint64_t lost = expected > x->st[2] ? expected - x->st[2] : 0;
    uint64_t v[10] = {x->st[0], x->st[1], lost, expected, (uint64_t)x->cycles + x->max_seq,
                      x->st[3], x->st[4], x->st[5], x->st[6], x->st[7]};
    RET(c, copy_stats(v, 10, out, n));
}

int rn_out_stats(rn_core *c, int out, uint64_t *o, int n) {
    LOCK(c);
    if (out < 0 || out >= MAX_OUTS || !c->outs[out]) RET(c, RN_EINVAL);
    RET(c, copy_stats(c->outs[out]->st, 10, o, n));
}
