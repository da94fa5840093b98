/* roomlog native forwarding core: one datagram in: SRTP, media_node/forwarder.py's rewrite, NACK answers (see native/README.md). */
#include "rn_internal.h"

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
        o->nacked_bits[(seq % NACK_MEMORY) / 8] &= (uint8_t)~(1 << (seq % 8));
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

static void track_seq(rn_core *c, int in_id, uint16_t seq, uint32_t ts) {
    rn_in *in = c->ins[in_id];
    in->st[2]++;
    int64_t arrival = (int64_t)(now_mono(c) * in->clock_rate);
    if (!in->started) {
        in->started = 1;
        in->base_seq = in->max_seq = seq;
        in->last_arrival = arrival;
        in->last_ts = ts;
        return;
    }
    uint16_t delta = (uint16_t)(seq - in->max_seq);
    if (delta == 0 || delta >= 0x8000) return; /* duplicate or late (a retransmission) */
    if ((int64_t)ts != in->last_ts) { /* interarrival jitter, as aiortc's StreamStatistics.add */
        int64_t d = (arrival - in->last_arrival) - ((int64_t)ts - in->last_ts);
        in->jitter_q4 += (d < 0 ? -d : d) - ((in->jitter_q4 + 8) >> 4);
    }
    in->last_arrival = arrival;
    in->last_ts = ts;
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
    track_seq(c, in_id, p.seq, p.ts);
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
                uint8_t *bits = &o->nacked_bits[(seq % NACK_MEMORY) / 8], bit = (uint8_t)(1 << (seq % 8));
                if (!(*bits & bit)) { /* a packet this leg sent, NACKed for the first time */
                    *bits |= bit;
                    o->st[10]++;
                }
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

void handle_datagram(rn_core *c, int sock, uint8_t *b, int n, const struct sockaddr_storage *a,
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
