/* roomlog native forwarding core: the API Python sees (through cffi, see native/build.py).
 *
 * Everything between the CDEF markers is also the cffi declaration, so it must stay plain
 * C declarations (no macros, no includes). Ids are small non-negative ints; a negative
 * return is an error code (RN_E* below, documented in native/README.md).
 */
#ifndef RN_CORE_H
#define RN_CORE_H
#include <stdint.h>

/* CDEF-BEGIN */
typedef struct rn_core rn_core;

/* errors (negative returns) */
enum {
    RN_EINVAL = -1,      /* bad argument: unknown id, bad length, unsupported value */
    RN_ESRTP = -2,       /* libsrtp refused (bad key/profile, protect/unprotect failure) */
    RN_EFULL = -3,       /* a fixed-size table is full */
    RN_ESYS = -4,        /* a system call failed (see errno) */
    RN_EPARSE = -5       /* a packet did not parse */
};

/* event kinds handed back to Python by rn_next_event */
enum {
    RN_EV_RAW = 0,        /* STUN/DTLS/anything not SRTP, or from an unknown address: bytes as received */
    RN_EV_RTCP = 1,       /* decrypted RTCP the core did not handle (compound, handled parts removed) */
    RN_EV_RTP = 2,        /* decrypted RTP of an SSRC the core does not know */
    RN_EV_KEYFRAME = 3,   /* an out stream waits for a keyframe of in stream `id` (ask the publisher) */
    RN_EV_NACK_MISS = 4,  /* out stream `id` was NACKed packets the cache cannot answer: payload = u16 seqs (BE) */
    RN_EV_GAP = 5         /* in stream `id` saw a sequence gap: payload = missing u16 seqs (BE) */
};

/* codecs of an in stream */
enum { RN_CODEC_OTHER = 0, RN_CODEC_VP8 = 1, RN_CODEC_H264 = 2, RN_CODEC_AUDIO = 3 };

rn_core *rn_core_new(void);
void rn_core_free(rn_core *core);
int rn_epoll_fd(rn_core *core);
/* An eventfd readable while events wait for rn_next_event (a core run on its own thread). */
int rn_event_fd(rn_core *core);
/* A fixed clock for tests: monotonic seconds and 64-bit NTP; mono < 0 goes back to the real clocks. */
void rn_set_clock(rn_core *core, double mono, uint64_t ntp);

/* A UDP (or AF_UNIX datagram) socket the core reads with recvmmsg and writes with sendmmsg.
 * The fd stays owned by the caller (not closed by the core); it is made non-blocking. */
int rn_add_socket(rn_core *core, int fd);
int rn_remove_socket(rn_core *core, int sock);

/* A leg: one DTLS-SRTP association (one remote transport address on one socket).
 * host "" (port 0) means a connected socket (send without address, match any sender).
 * profile: libsrtp profile number (1 AES128_CM_SHA1_80, 7 AEAD_AES_128_GCM, 8 AEAD_AES_256_GCM);
 * keys are master key || master salt, as aiortc's SRTPProtectionProfile.get_key_and_salt. */
int rn_add_leg(rn_core *core, int sock, const char *host, int port, int profile,
               const uint8_t *rx_key, int rx_key_len, const uint8_t *tx_key, int tx_key_len);
int rn_remove_leg(rn_core *core, int leg);
/* Set the rollover counter of an outbound (tx) or inbound (rx) SSRC, for hand-over mid-stream. */
int rn_set_roc(rn_core *core, int leg, int tx, uint32_t ssrc, uint32_t roc);

/* An in stream: a publisher's encoding arriving on `leg` with media SSRC `ssrc`
 * (and RTX SSRC/payload type, 0/-1 for none). audio_level_id: its ssrc-audio-level
 * extension id on that leg (0: none). */
int rn_add_in(rn_core *core, int leg, uint32_t ssrc, uint32_t rtx_ssrc, int rtx_pt, int codec,
              int clock_rate, int audio_level_id);
int rn_remove_in(rn_core *core, int in);

/* An out stream: a subscriber's copy of in stream `in` (starting at its next keyframe).
 * pt: the payload type the subscriber negotiated; rtx_pt -1: no RTX. Extension ids must
 * be 0 (absent) or 1..14 (one-byte headers); mid at most 16 bytes. */
int rn_add_out(rn_core *core, int leg, int in, uint32_t ssrc, int pt, uint32_t rtx_ssrc, int rtx_pt,
               int rtx_seq, int mid_id, const char *mid, int abs_send_time_id, int audio_level_id,
               int initial_seq, uint32_t initial_ts);
int rn_remove_out(rn_core *core, int out);
/* Move to another in stream at its next keyframe (forwarder.Source.set_layer). */
int rn_out_retarget(rn_core *core, int out, int in);
/* Pause/resume (forwarder.Source.set_paused): resuming waits for a keyframe of the target. */
int rn_out_pause(rn_core *core, int out, int paused);
/* Rewrite state, for hand-over in either direction: 12 int64 values, see RN_OUT_STATE in rn_core.c. */
int rn_out_get_state(rn_core *core, int out, int64_t *state, int n);
int rn_out_set_state(rn_core *core, int out, const int64_t *state, int n);

/* Wait up to timeout_ms for readable sockets, read them in batches, forward, flush.
 * Returns the datagrams read (>= 0) or an error. Thread-safe against the calls above. */
int rn_run_once(rn_core *core, int timeout_ms);
/* Process one datagram as if `sock` had received it from host:port (tests, benchmarks). */
int rn_feed(rn_core *core, int sock, const char *host, int port, const uint8_t *data, int len);
/* Send every queued datagram (rn_feed leaves them queued). Returns datagrams sent. */
int rn_flush(rn_core *core);

/* Protect plain RTCP with the leg's tx session and send it to the leg's remote. */
int rn_send_rtcp(rn_core *core, int leg, const uint8_t *data, int len);
/* Protect/unprotect without sending (tests, hand-over checks): in place, returns the new length. */
int rn_protect(rn_core *core, int leg, int rtcp, uint8_t *buf, int len, int cap);
int rn_unprotect(rn_core *core, int leg, int rtcp, uint8_t *buf, int len);

/* Next event for Python: returns its payload length (copied into buf, at most cap), or -1
 * when there is none. kind: RN_EV_*; sock/leg/id: where it comes from (-1 when n/a);
 * host/port: the sender (host has room for 64 bytes). */
int rn_next_event(rn_core *core, int *kind, int *sock, int *leg, int *id, char *host, int *port,
                  uint8_t *buf, int cap);

/* Counters: fills up to n uint64 values, returns how many (layouts in rn_core.c / native/core.py). */
int rn_core_stats(rn_core *core, uint64_t *out, int n);
int rn_leg_stats(rn_core *core, int leg, uint64_t *out, int n);
int rn_in_stats(rn_core *core, int in, uint64_t *out, int n);
int rn_out_stats(rn_core *core, int out, uint64_t *values, int n);
/* CDEF-END */

#endif
