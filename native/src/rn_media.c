/* roomlog native forwarding core: payload rules (media_node/keyframes.py), RTP parsing and writing (see native/README.md). */
#include "rn_internal.h"

/* ---- payload rules: media_node/keyframes.py ---- */

int vp8_descriptor_size(const uint8_t *p, int n) {
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

int vp8_keyframe_start(const uint8_t *p, int n) {
    if (n < 2 || !(p[0] & 0x10) || (p[0] & 0x0F)) return 0;
    int size = vp8_descriptor_size(p, n);
    return size > 0 && size < n && !(p[size] & 0x01);
}

int h264_keyframe_start(const uint8_t *p, int n) {
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

int is_keyframe(int codec, const uint8_t *p, int n) {
    if (codec == RN_CODEC_VP8) return vp8_keyframe_start(p, n);
    if (codec == RN_CODEC_H264) return h264_keyframe_start(p, n);
    return 1; /* audio and unparsed codecs start anywhere (keyframes.always) */
}

/* VP8 PictureID: returns 0 (absent), 7 or 15 (width), value in *pic */
int vp8_picture_id(const uint8_t *p, int n, uint16_t *pic) {
    if (n < 3 || !(p[0] & 0x80) || !(p[1] & 0x80)) return 0;
    if (p[2] & 0x80) {
        if (n < 4) return 0;
        *pic = (uint16_t)(((p[2] & 0x7F) << 8) | p[3]);
        return 15;
    }
    *pic = p[2] & 0x7F;
    return 7;
}

/* ---- RTP parse / build ---- */

int parse_rtp(const uint8_t *b, int n, rn_rtp *p) {
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
int find_audio_level(const rn_rtp *p, int id) {
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

/* An out stream's packet, as OutboundLeg.prepare + aiortc_glue.serialize write it
 * (mid, abs-send-time, audio-level in one-byte headers; padding as zeros then its size).
 * osn >= 0: an RTX packet carrying original sequence number osn. Returns the length. */
int build_rtp(const rn_out *o, uint8_t *b, int pt, uint16_t seq, uint32_t ts, uint32_t ssrc, int marker,
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
