// Network-quality level 1-6 (the Agora seed's scale), computed by the client from its
// own getStats. The one mapping, identical in client/quality.py and written down in docs/web.md:
//   6 Down       no packet for 5 s or more
//   otherwise the worse of the loss band and the RTT band over the last window:
//   1 Excellent  loss < 1 %   and RTT < 100 ms
//   2 Good       loss < 5 %   and RTT < 300 ms
//   3 Poor       loss < 10 %  and RTT < 500 ms
//   4 Bad        loss < 20 %  and RTT < 1000 ms
//   5 Very bad   loss >= 20 % or  RTT >= 1000 ms
// The loss bands are the layer thresholds of the quality loop (5/10/20 %, DESIGN.md).
// A remote participant's level is the worse of its legs' levels (their loss, our RTT; 6 when
// every counted leg has been silent 5 s) and the level of streams' latest `quality` decision
// for any of its sources (participantLevel).

import { snapshot } from "./stats.js";

export const LEVEL_NAMES = Object.freeze({ 1: "excellent", 2: "good", 3: "poor", 4: "bad", 5: "very bad", 6: "down" });
export const BANDS = Object.freeze([
  { level: 1, lossPct: 1, rttMs: 100 },
  { level: 2, lossPct: 5, rttMs: 300 },
  { level: 3, lossPct: 10, rttMs: 500 },
  { level: 4, lossPct: 20, rttMs: 1000 },
]);
export const DOWN_AFTER_MS = 5000;
// quality-report: at most one per 2 s is taken by the gateway; reports go 2.2 s after the previous one
// was sent (a timer chained on each send, never a fixed schedule: a late tick must not bring the next
// one closer), and the margin absorbs network and event-loop jitter
export const REPORT_INTERVAL_MS = 2200;

function band(value, key) {
  if (value == null || Number.isNaN(value)) return 1;
  const hit = BANDS.find((b) => value < b[key]);
  return hit ? hit.level : 5;
}

/** The level for a window's loss (%), round-trip time (ms) and time since the last packet (ms). */
export function qualityLevel({ lossPct = 0, rttMs = null, silentMs = 0 }) {
  if (silentMs >= DOWN_AFTER_MS) return 6;
  return Math.max(band(lossPct, "lossPct"), band(rttMs, "rttMs"));
}

/** A remote participant's level: `legs` [{lossPct, silentMs}] (muted kinds left out), our RTT,
 *  and the level streams pushed (or null). */
export function participantLevel(legs, rttMs, pushed) {
  let own = legs.length ? Math.max(...legs.map((l) => qualityLevel({ lossPct: l.lossPct, rttMs })))
    : qualityLevel({ lossPct: 0, rttMs });
  if (legs.length && Math.min(...legs.map((l) => l.silentMs)) >= DOWN_AFTER_MS) own = 6;
  return Math.max(own, pushed ?? 1);
}

/** Loss (%) between two snapshots: downlink (inbound-rtp) and uplink (remote-inbound-rtp), the worse. */
export function windowLossPct(prev, cur) {
  const sum = (list, key) => list.reduce((n, x) => n + x[key], 0);
  const lostDown = sum(cur.inbound, "packetsLost") - sum(prev.inbound, "packetsLost");
  const gotDown = sum(cur.inbound, "packetsReceived") - sum(prev.inbound, "packetsReceived");
  const down = lostDown > 0 && gotDown + lostDown > 0 ? (100 * lostDown) / (gotDown + lostDown) : 0;
  return Math.max(down, uplinkLossPct(prev, cur));
}

function uplinkLossPct(prev, cur) {
  const lostUp = cur.remoteLost - prev.remoteLost;
  const sentUp = cur.remoteSent - prev.remoteSent;
  return lostUp > 0 && sentUp > 0 ? Math.min(100, (100 * lostUp) / sentUp) : 0;
}

const kbps = (bytes, ms) => (ms > 0 ? Math.max(0, bytes) * 8 / ms : 0);

/** Window figures per link from successive snapshots (pure: time comes in as `now`, ms). */
export class LinkMeter {
  constructor() {
    this.prevPub = null;
    this.legs = new Map(); // "peer/source" -> {packetsReceived, packetsLost, bytesReceived, at, changedAt}
    this.heard = { bytes: -1, changedAt: 0 };
  }

  /** The uplink from the publisher connection's snapshot (null when not publishing). */
  uplink(pub, now) {
    if (!pub || pub.outbound.length === 0) { this.prevPub = null; return null; }
    const prev = this.prevPub;
    this.prevPub = { ...pub, at: now };
    // the node's RTCP keeps arriving while it is alive, whether we send media or not (dynacast)
    if (pub.bytesReceived !== this.heard.bytes) this.heard = { bytes: pub.bytesReceived, changedAt: now };
    const silentMs = now - this.heard.changedAt;
    const lossPct = prev ? uplinkLossPct(prev, pub) : 0;
    const bitrateKbps = prev ? kbps(pub.rtpBytesSent - prev.rtpBytesSent, now - prev.at) : 0;
    return { level: qualityLevel({ lossPct, rttMs: pub.rttMs, silentMs }), lossPct, rttMs: pub.rttMs,
             jitterMs: pub.remoteJitterMs, bitrateKbps, silentMs };
  }

  /** One remote source: `stat` an inbound entry of the subscriber snapshot. */
  leg(key, stat, rttMs, now) {
    const prev = this.legs.get(key);
    const changedAt = !prev || stat.packetsReceived !== prev.packetsReceived ? now : prev.changedAt;
    this.legs.set(key, { ...stat, at: now, changedAt });
    // the network's loss: what is still missing plus what retransmissions repaired (Chromium counts a
    // retransmitted packet as received and no longer lost; video is repaired, audio is not)
    const repaired = prev ? (stat.retransmitted ?? 0) - (prev.retransmitted ?? 0) : 0;
    const lost = prev ? stat.packetsLost - prev.packetsLost + Math.max(0, repaired) : 0;
    const got = prev ? stat.packetsReceived - prev.packetsReceived : 0;
    const lossPct = lost > 0 && got + lost > 0 ? Math.min(100, (100 * lost) / (got + Math.max(0, lost - repaired))) : 0;
    const silentMs = prev ? now - changedAt : 0;
    return { lossPct, rttMs, jitterMs: stat.jitterMs, silentMs, packets: Math.max(0, got),
             framesDecoded: stat.framesDecoded, level: qualityLevel({ lossPct, rttMs, silentMs }),
             bitrateKbps: prev ? kbps(stat.bytesReceived - prev.bytesReceived, now - prev.at) : 0 };
  }

  forget(keys) {
    for (const key of [...this.legs.keys()]) if (!keys.has(key)) this.legs.delete(key);
  }
}

/** Uplink, per-leg and per-participant figures from a publisher and a subscriber snapshot.
 *  `context`: {sourceOf(mid) -> {peer_id, source_id} | null, peers: Map, pushed: Map peer -> Map source -> {layer, level}}. */
export function measure(meter, pub, sub, context, now) {
  const uplink = meter.uplink(pub, now);
  const rttMs = sub?.rttMs ?? pub?.rttMs ?? null; // the subscriber connection's own, else the publisher's
  const legs = [];
  for (const stat of sub?.inbound ?? []) {
    const source = context.sourceOf(stat.mid);
    if (!source?.peer_id || !source?.source_id) continue;
    const key = `${source.peer_id}/${source.source_id}`;
    legs.push({ peerId: source.peer_id, sourceId: source.source_id, kind: stat.kind,
                ...meter.leg(key, stat, rttMs, now) });
  }
  meter.forget(new Set(legs.map((l) => `${l.peerId}/${l.sourceId}`)));
  const downlink = new Map();
  const peerIds = new Set([...legs.map((l) => l.peerId), ...context.pushed.keys()]);
  for (const peerId of peerIds) {
    const peer = context.peers.get(peerId);
    if (!peer) continue;
    const muted = new Set([peer.audio_muted ? "audio" : null, peer.video_muted ? "video" : null]);
    const mine = legs.filter((l) => l.peerId === peerId);
    const counted = mine.filter((l) => !muted.has(l.kind));
    const decisions = [...(context.pushed.get(peerId)?.values() ?? [])];
    const pushedLevel = decisions.length ? Math.max(...decisions.map((d) => d.level)) : null;
    const ownLevel = participantLevel(counted, rttMs, null);
    downlink.set(peerId, {
      level: Math.max(ownLevel, pushedLevel ?? 1), ownLevel, pushedLevel, rttMs,
      lossPct: Math.max(0, ...mine.map((l) => l.lossPct)),
      bitrateKbps: mine.reduce((n, l) => n + l.bitrateKbps, 0),
      layers: Object.fromEntries([...(context.pushed.get(peerId) ?? new Map())].map(([s, d]) => [s, d.layer])),
    });
  }
  return { uplink, legs, downlink };
}

const bounded = (v, top) => Math.round(Math.min(Math.max(Number.isFinite(v) ? v : 0, 0), top) * 1000) / 1000;

/** The `quality-report` message (docs/protocol.md) for one measurement. */
export function qualityReport({ uplink, legs }) {
  const up = uplink
    ? { loss_pct: bounded(uplink.lossPct, 100), rtt_ms: bounded(uplink.rttMs, 60000), jitter_ms: bounded(uplink.jitterMs, 60000),
        bitrate_kbps: bounded(uplink.bitrateKbps, 1e6), level: uplink.level }
    : { loss_pct: 0, rtt_ms: 0, jitter_ms: 0, bitrate_kbps: 0, level: null };
  const downlink = legs.slice(0, 64).map((l) => ({
    peer_id: l.peerId, source_id: l.sourceId, kind: l.kind === "audio" ? "audio" : "video",
    loss_pct: bounded(l.lossPct, 100), jitter_ms: bounded(l.jitterMs, 60000), bitrate_kbps: bounded(l.bitrateKbps, 1e6),
    packets: Math.min(Math.round(l.packets), 1e7), frames_decoded: Math.min(Math.round(l.framesDecoded), 1e7),
    silent_s: bounded(l.silentMs / 1000, 86400) }));
  return { type: "quality-report", uplink: up, downlink };
}

/** Samples the connections every `intervalMs` and reports {level, lossPct, rttMs, silentMs, snapshots,
 *  uplink, downlink, legs}. `connections()` -> [publisher pc, subscriber pc]; `context()` as for measure. */
export class QualityMonitor {
  constructor(connections, onSample, intervalMs = 2000, now = () => performance.now(), context = null) {
    this.connections = connections; // () => [RTCPeerConnection | null]
    this.onSample = onSample;
    this.intervalMs = intervalMs;
    this.now = now;
    this.context = context ?? (() => ({ sourceOf: () => null, peers: new Map(), pushed: new Map() }));
    this.meter = new LinkMeter();
    this.prev = null;
    this.lastBytes = -1;
    this.lastChange = now();
    this.timer = null;
  }

  start() {
    if (this.timer === null) this.timer = setInterval(() => this.sample().catch(() => {}), this.intervalMs);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }

  async sample() {
    const snaps = await Promise.all(this.connections().map((pc) => snapshot(pc)));
    const merged = merge(snaps);
    const now = this.now();
    const bytes = merged.bytesReceived + merged.bytesSent;
    if (bytes !== this.lastBytes) { this.lastBytes = bytes; this.lastChange = now; }
    const lossPct = this.prev ? windowLossPct(this.prev, merged) : 0;
    this.prev = merged;
    const silentMs = now - this.lastChange;
    const level = qualityLevel({ lossPct, rttMs: merged.rttMs, silentMs });
    const [pc] = this.connections();
    const links = measure(this.meter, pc ? snaps[0] : null, snaps[1], this.context(), now);
    const sample = { level, name: LEVEL_NAMES[level], lossPct, rttMs: merged.rttMs, silentMs, snapshots: snaps, ...links };
    this.onSample(sample);
    return sample;
  }
}

function merge(snaps) {
  const out = { bytesReceived: 0, bytesSent: 0, rttMs: null, inbound: [], outbound: [], remoteLost: 0, remoteSent: 0 };
  for (const s of snaps) {
    out.bytesReceived += s.bytesReceived;
    out.bytesSent += s.bytesSent;
    out.inbound.push(...s.inbound);
    out.outbound.push(...s.outbound);
    out.remoteLost += s.remoteLost;
    out.remoteSent += s.remoteSent;
    if (s.rttMs != null) out.rttMs = Math.max(out.rttMs ?? 0, s.rttMs);
  }
  return out;
}
