/* C unit tests of the native core (scripts/native.sh test, built with ASan/UBSan, linked
 * with every source file, so the internal helpers of rn_internal.h are tested directly).
 * Prints "N passed, N failed" and exits non-zero on a failure. */
#include "rn_internal.h"

#include <stdio.h>

static int passed, failed;
#define CHECK(cond)                                                      \
    do {                                                                 \
        if (cond) {                                                      \
            passed++;                                                    \
        } else {                                                         \
            failed++;                                                    \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
        }                                                                \
    } while (0)

static const uint8_t KEY[30] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                                16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30};
static const uint8_t KEY2[30] = {31, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                                 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 99};

static void test_vp8(void) {
    uint8_t key15[] = {0x90, 0x80, 0x81, 0x23, 0x00, 0x9d, 0x01, 0x2a};
    uint8_t inter15[] = {0x90, 0x80, 0x81, 0x23, 0x01, 0x9d};
    uint8_t cont[] = {0x80, 0x80, 0x05, 0x00, 0x00};
    uint8_t nopic[] = {0x10, 0x00, 0x9d};
    uint16_t pic = 0;
    CHECK(vp8_keyframe_start(key15, sizeof key15));
    CHECK(!vp8_keyframe_start(inter15, sizeof inter15));
    CHECK(!vp8_keyframe_start(cont, sizeof cont));
    CHECK(vp8_keyframe_start(nopic, sizeof nopic));
    CHECK(vp8_picture_id(key15, sizeof key15, &pic) == 15 && pic == 0x123);
    CHECK(vp8_picture_id(cont, sizeof cont, &pic) == 7 && pic == 5);
    CHECK(vp8_picture_id(nopic, sizeof nopic, &pic) == 0);
    CHECK(vp8_picture_id(key15, 3, &pic) == 0); /* truncated 15-bit id */
    CHECK(vp8_descriptor_size(key15, 1) == 0);
}

static void test_h264(void) {
    uint8_t idr[] = {0x65, 0, 0};
    uint8_t stap[] = {0x18, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce};
    uint8_t stap_bad[] = {0x18, 0, 9, 0x41};
    uint8_t fu_start[] = {0x7c, 0x85, 0};
    uint8_t fu_mid[] = {0x7c, 0x05, 0};
    CHECK(h264_keyframe_start(idr, sizeof idr));
    CHECK(h264_keyframe_start(stap, sizeof stap));
    CHECK(!h264_keyframe_start(stap_bad, sizeof stap_bad));
    CHECK(h264_keyframe_start(fu_start, sizeof fu_start));
    CHECK(!h264_keyframe_start(fu_mid, sizeof fu_mid));
    CHECK(!h264_keyframe_start(idr, 0));
}

static void test_parse(void) {
    rn_rtp p;
    /* one-byte extensions: audio level id 6 = 0x9e, padding 4 */
    uint8_t pkt[] = {0xb0, 0x6f, 0x12, 0x34, 0, 0, 0, 9, 0, 0, 0x33, 0x33, 0xbe, 0xde, 0, 1,
                     0x60, 0x9e, 0, 0, 'a', 'b', 'c', 0, 0, 0, 4};
    CHECK(parse_rtp(pkt, sizeof pkt, &p) == 0);
    CHECK(p.seq == 0x1234 && p.ts == 9 && p.ssrc == 0x3333 && p.pt == 0x6f && p.plen == 3 && p.padding == 4);
    CHECK(find_audio_level(&p, 6) == 0x9e && find_audio_level(&p, 5) == -1);
    uint8_t twobyte[] = {0x90, 0x6f, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0x10, 0x00, 0, 1, 7, 1, 0x55, 0, 'x'};
    CHECK(parse_rtp(twobyte, sizeof twobyte, &p) == 0 && find_audio_level(&p, 7) == 0x55);
    CHECK(parse_rtp(pkt, 11, &p) < 0);                  /* shorter than a header */
    uint8_t badpad[] = {0xa0, 0x6f, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 'x', 200};
    CHECK(parse_rtp(badpad, sizeof badpad, &p) < 0);     /* padding longer than the payload */
    uint8_t badext[] = {0x90, 0x6f, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0xbe, 0xde, 0, 9};
    CHECK(parse_rtp(badext, sizeof badext, &p) < 0);     /* extension past the end */
    uint8_t csrc[] = {0x8f, 0x6f, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1};
    CHECK(parse_rtp(csrc, sizeof csrc, &p) < 0);         /* 15 CSRCs announced, none there */
}

/* A publisher packet protected with the publisher's session. */
static int make_packet(srtp_t pub, uint8_t *buf, uint16_t seq, uint32_t ts, uint32_t ssrc, int keyframe, int marker) {
    uint8_t payload[] = {0x90, 0x80, 0x80, 0x07, (uint8_t)(keyframe ? 0 : 1), 1, 2, 3, 4, 5};
    buf[0] = 0x80;
    buf[1] = (uint8_t)((marker << 7) | 96);
    put16(buf + 2, seq);
    put32(buf + 4, ts);
    put32(buf + 8, ssrc);
    memcpy(buf + 12, payload, sizeof payload);
    int len = 12 + (int)sizeof payload;
    return srtp_protect(pub, buf, &len) == srtp_err_status_ok ? len : -1;
}

static srtp_t session(const uint8_t *key, int inbound) {
    srtp_t s;
    CHECK(make_session(&s, 1, key, 30, inbound) == 0);
    return s;
}

static void test_forwarding(void) {
    rn_core *c = rn_core_new();
    CHECK(c != NULL);
    rn_set_clock(c, 10.0, 1ULL << 40);
    int pub[2], sub[2];
    CHECK(socketpair(AF_UNIX, SOCK_DGRAM, 0, pub) == 0 && socketpair(AF_UNIX, SOCK_DGRAM, 0, sub) == 0);
    int ps = rn_add_socket(c, pub[0]), ss = rn_add_socket(c, sub[0]);
    int pl = rn_add_leg(c, ps, "", 0, 1, KEY, 30, KEY2, 30);
    int sl = rn_add_leg(c, ss, "", 0, 1, KEY2, 30, KEY, 30);
    CHECK(pl >= 0 && sl >= 0);
    int in = rn_add_in(c, pl, 0xAAAA, 0, -1, RN_CODEC_VP8, 90000, 0);
    int out = rn_add_out(c, sl, in, 0xBBBB, 100, 0, -1, 0, 1, "v", 2, 0, 500, 7000);
    CHECK(in >= 0 && out >= 0);
    srtp_t pubtx = session(KEY, 0), subrx = session(KEY, 1);
    uint8_t buf[2048];
    int n = make_packet(pubtx, buf, 40, 1000, 0xAAAA, 0, 1); /* not a keyframe: waits, asks for one */
    CHECK(n > 0 && send(pub[1], buf, (size_t)n, 0) == n);
    CHECK(rn_run_once(c, 1000) == 1);
    CHECK(recv(sub[1], buf, sizeof buf, MSG_DONTWAIT) < 0);
    int kind, sock, leg, id, port;
    char host[64];
    uint8_t ev[64];
    CHECK(rn_next_event(c, &kind, &sock, &leg, &id, host, &port, ev, sizeof ev) == 0 && kind == RN_EV_KEYFRAME &&
          id == in);
    for (int i = 0; i < 3; i++) {
        n = make_packet(pubtx, buf, (uint16_t)(41 + i), 4000, 0xAAAA, i == 0, i == 2);
        CHECK(n > 0 && send(pub[1], buf, (size_t)n, 0) == n);
    }
    CHECK(rn_run_once(c, 1000) == 3);
    for (int i = 0; i < 3; i++) {
        int r = (int)recv(sub[1], buf, sizeof buf, MSG_DONTWAIT);
        CHECK(r > 0 && srtp_unprotect(subrx, buf, &r) == srtp_err_status_ok);
        rn_rtp p;
        CHECK(parse_rtp(buf, r, &p) == 0);
        CHECK(p.seq == 500 + i && p.ts == 7000 && p.ssrc == 0xBBBB && p.pt == 100 && p.marker == (i == 2));
        CHECK(p.ext_profile == 0xBEDE && p.ext[0] == 0x10 && p.ext[1] == 'v'); /* mid id 1, "v" */
    }
    uint64_t st[10];
    CHECK(rn_out_stats(c, out, st, 10) == 10 && st[0] == 3 && st[6] == 1);
    CHECK(rn_in_stats(c, in, st, 10) == 10 && st[0] == 4 && st[2] == 0);

    /* garbage under valid SRTP (RTP and RTCP): parsed defensively, never crashes (ASan) */
    srand(7);
    for (int i = 0; i < 3000; i++) {
        int len = 12 + rand() % 300;
        for (int k = 0; k < len; k++) buf[k] = (uint8_t)rand();
        int rtcp = i % 3 == 0;
        buf[0] = (uint8_t)(0x80 | (buf[0] & 0x3f));
        if (rtcp) {
            buf[1] = (uint8_t)(192 + rand() % 17);
            int r = len;
            CHECK(srtp_protect_rtcp(pubtx, buf, &r) == srtp_err_status_ok);
            len = r;
        } else {
            buf[1] = (uint8_t)(rand() % 2 ? 96 : buf[1] & 0x7f);
            put32(buf + 8, rand() % 2 ? 0xAAAA : (uint32_t)rand());
            buf[1] &= 0x7f;
            int r = len;
            if (srtp_protect(pubtx, buf, &r) != srtp_err_status_ok) continue;
            len = r;
        }
        CHECK(rn_feed(c, ps, "", 0, buf, len) == 0);
        if (i % 64 == 0) rn_flush(c);
        while (rn_next_event(c, &kind, &sock, &leg, &id, host, &port, ev, sizeof ev) >= 0) {
        }
    }
    rn_flush(c);
    /* a NACK with a bogus length on the subscriber leg is passed on, not trusted */
    uint8_t nack[] = {0x81, 205, 0, 40, 0, 0, 0, 1, 0, 0, 0xBB, 0xBB, 0, 1, 0, 0};
    srtp_t subtx = session(KEY2, 0);
    int r = sizeof nack;
    memcpy(buf, nack, sizeof nack);
    CHECK(srtp_protect_rtcp(subtx, buf, &r) == srtp_err_status_ok);
    CHECK(rn_feed(c, ss, "", 0, buf, r) == 0);
    int got = 0;
    while (rn_next_event(c, &kind, &sock, &leg, &id, host, &port, ev, sizeof ev) >= 0) got += kind == RN_EV_RTCP;
    CHECK(got == 1);
    CHECK(rn_remove_leg(c, pl) == 0 && rn_in_stats(c, in, st, 10) == RN_EINVAL); /* removes its streams */
    CHECK(rn_out_stats(c, out, st, 10) == RN_EINVAL);
    srtp_dealloc(pubtx);
    srtp_dealloc(subrx);
    srtp_dealloc(subtx);
    rn_core_free(c);
    for (int i = 0; i < 2; i++) {
        close(pub[i]);
        close(sub[i]);
    }
}

int main(void) {
    test_vp8();
    test_h264();
    test_parse();
    test_forwarding();
    printf("native: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
