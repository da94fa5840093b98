/* roomlog native forwarding core: in and out streams: add, remove, retarget, pause, rewrite state (see native/README.md). */
#include "rn_internal.h"

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

void remove_in_locked(rn_core *c, int in_id) {
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

void remove_out_locked(rn_core *c, int out) {
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
