// Network-quality level 1-6 (the Agora seed's scale), computed by the client from its
// own getStats. The one mapping, also written down in docs/web.md:
//   6 Down       no bytes received or sent on any connection for 5 s or more
//   otherwise the worse of the loss band and the RTT band over the last window:
//   1 Excellent  loss < 1 %   and RTT < 100 ms
//   2 Good       loss < 5 %   and RTT < 300 ms
//   3 Poor       loss < 10 %  and RTT < 500 ms
//   4 Bad        loss < 20 %  and RTT < 1000 ms
//   5 Very bad   loss >= 20 % or  RTT >= 1000 ms
// The loss bands are the layer thresholds of the quality loop (5/10/20 %, DESIGN.md).

import { snapshot } from "./stats.js";

export const LEVEL_NAMES = Object.freeze({ 1: "excellent", 2: "good", 3: "poor", 4: "bad", 5: "very bad", 6: "down" });
export const BANDS = Object.freeze([
  { level: 1, lossPct: 1, rttMs: 100 },
  { level: 2, lossPct: 5, rttMs: 300 },
  { level: 3, lossPct: 10, rttMs: 500 },
  { level: 4, lossPct: 20, rttMs: 1000 },
]);
export const DOWN_AFTER_MS = 5000;

function band(value, key) {
  if (value == null || Number.isNaN(value)) return 1;
  const hit = BANDS.find((b) => value < b[key]);
  return hit ? hit.level : 5;
}

/** The level for a window's loss (%), round-trip time (ms) and time since the last byte (ms). */
export function qualityLevel({ lossPct = 0, rttMs = null, silentMs = 0 }) {
  if (silentMs >= DOWN_AFTER_MS) return 6;
  return Math.max(band(lossPct, "lossPct"), band(rttMs, "rttMs"));
}

/** Loss (%) between two snapshots: downlink (inbound-rtp) and uplink (remote-inbound-rtp), the worse. */
export function windowLossPct(prev, cur) {
  const sum = (list, key) => list.reduce((n, x) => n + x[key], 0);
  const lostDown = sum(cur.inbound, "packetsLost") - sum(prev.inbound, "packetsLost");
  const gotDown = sum(cur.inbound, "packetsReceived") - sum(prev.inbound, "packetsReceived");
  const lostUp = cur.remoteLost - prev.remoteLost;
  const sentUp = cur.remoteSent - prev.remoteSent;
  const down = lostDown > 0 && gotDown + lostDown > 0 ? (100 * lostDown) / (gotDown + lostDown) : 0;
  const up = lostUp > 0 && sentUp > 0 ? (100 * lostUp) / sentUp : 0;
  return Math.max(down, up);
}

/** Samples the given connections every `intervalMs` and reports {level, lossPct, rttMs, silentMs, snapshots}. */
export class QualityMonitor {
  constructor(connections, onSample, intervalMs = 2000, now = () => performance.now()) {
    this.connections = connections; // () => [RTCPeerConnection | null]
    this.onSample = onSample;
    this.intervalMs = intervalMs;
    this.now = now;
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
    const sample = { level, name: LEVEL_NAMES[level], lossPct, rttMs: merged.rttMs, silentMs, snapshots: snaps };
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
