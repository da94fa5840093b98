/* roomlog native core: what its C files share (not part of the Python API). */
#ifndef RN_INTERNAL_H
#define RN_INTERNAL_H
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
#define NACK_MEMORY 2048   /* aiortc_glue.NACK_MEMORY: seqs remembered to count a NACKed packet once */
#define MAX_GAP 512        /* larger jumps are a restart, not losses to report */

typedef struct {
    int *v;
    int n, cap;
} ivec;

static inline int ivec_add(ivec *a, int x) {
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

static inline void ivec_del(ivec *a, int x) {
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
    int64_t last_arrival, last_ts, jitter_q4; /* RFC 3550 A.8, as aiortc's StreamStatistics */
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
    uint8_t nacked_bits[NACK_MEMORY / 8]; /* seqs NACKed since sent (aiortc_glue's nacked_distinct) */
    uint64_t st[11]; /* packets payload_bytes wire_bytes nacked retransmitted nack_misses switches last_rtp_ts last_ntp
                        before_switch nacked_distinct */
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

typedef struct {
    uint8_t marker, pt;
    uint16_t seq;
    uint32_t ts, ssrc;
    const uint8_t *ext; /* extension block body */
    int ext_len, ext_profile;
    const uint8_t *payload;
    int plen, padding;
} rn_rtp;

static inline int seq_newer_or_equal(uint16_t a, uint16_t b) { return (uint16_t)(a - b) < 0x8000; }

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

#define LOCK(c) pthread_mutex_lock(&(c)->mu)
#define UNLOCK(c) pthread_mutex_unlock(&(c)->mu)
#define RET(c, v)           \
    do {                    \
        int _r = (v);       \
        UNLOCK(c);          \
        return _r;          \
    } while (0)

/* rn_media.c: payload rules (media_node/keyframes.py), RTP parse and build */
int vp8_descriptor_size(const uint8_t *p, int n);
int vp8_keyframe_start(const uint8_t *p, int n);
int h264_keyframe_start(const uint8_t *p, int n);
int is_keyframe(int codec, const uint8_t *p, int n);
int vp8_picture_id(const uint8_t *p, int n, uint16_t *pic);
int parse_rtp(const uint8_t *b, int n, rn_rtp *p);
int find_audio_level(const rn_rtp *p, int id);
int build_rtp(const rn_out *o, uint8_t *b, int pt, uint16_t seq, uint32_t ts, uint32_t ssrc, int marker,
              int audio_level, uint32_t abs_send_time, int osn, const uint8_t *payload, int plen, int padding,
              int pic_width, uint16_t pic);

/* rn_io.c: clocks, events, the send queue, receiving, SRTP sessions */
double now_mono(rn_core *c);
uint64_t now_ntp(rn_core *c);
void push_event(rn_core *c, int kind, int sock, int leg, int id, const struct sockaddr_storage *a, socklen_t alen,
                const uint8_t *data, int len);
rn_qitem *queue_slot(rn_core *c);
int queue_commit(rn_core *c, rn_qitem *it, int leg_id, int rtcp);
int flush_locked(rn_core *c);
int drain_socket(rn_core *c, int sock);
int make_policy(srtp_policy_t *p, uint8_t *k, int profile, const uint8_t *key, int key_len, int inbound, uint32_t ssrc);
int make_session(srtp_t *out, int profile, const uint8_t *key, int key_len, int inbound);

/* rn_forward.c: one datagram in, forwarded (media_node/forwarder.py) */
void handle_datagram(rn_core *c, int sock, uint8_t *b, int n, const struct sockaddr_storage *a, socklen_t alen);

/* rn_streams.c / rn_core.c: removal with the core's lock held */
void remove_in_locked(rn_core *c, int in);
void remove_out_locked(rn_core *c, int out);
void remove_leg_locked(rn_core *c, int leg);

#endif
