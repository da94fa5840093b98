// One getStats() snapshot of a peer connection, reduced to what the quality level, the
// active speaker and the tests need.

export async function snapshot(pc) {
  const out = { bytesReceived: 0, bytesSent: 0, rttMs: null, inbound: [], outbound: [], remoteLost: 0,
                remoteSent: 0, remoteJitterMs: 0, rtpBytesSent: 0, localAudioLevel: null };
  if (!pc || pc.connectionState === "closed") return out;
  const report = await pc.getStats();
  const sentByRtp = new Map();
  report.forEach((s) => {
    if (s.type === "candidate-pair" && (s.nominated || s.selected) && s.state === "succeeded") {
      out.bytesReceived += s.bytesReceived ?? 0;
      out.bytesSent += s.bytesSent ?? 0;
      if (s.currentRoundTripTime != null) out.rttMs = Math.max(out.rttMs ?? 0, s.currentRoundTripTime * 1000);
    } else if (s.type === "inbound-rtp") {
      out.inbound.push({ mid: s.mid, kind: s.kind, packetsReceived: s.packetsReceived ?? 0,
        packetsLost: Math.max(0, s.packetsLost ?? 0), framesDecoded: s.framesDecoded ?? 0,
        audioLevel: s.audioLevel ?? null, frameWidth: s.frameWidth ?? 0, frameHeight: s.frameHeight ?? 0,
        bytesReceived: s.bytesReceived ?? 0, jitterMs: (s.jitter ?? 0) * 1000,
        retransmitted: s.retransmittedPacketsReceived ?? 0 });
    } else if (s.type === "outbound-rtp") {
      sentByRtp.set(s.id, s.packetsSent ?? 0);
      out.rtpBytesSent += s.bytesSent ?? 0;
      out.outbound.push({ mid: s.mid, kind: s.kind, packetsSent: s.packetsSent ?? 0, bytesSent: s.bytesSent ?? 0,
        framesEncoded: s.framesEncoded ?? 0, frameWidth: s.frameWidth ?? 0, active: s.active ?? null });
    } else if (s.type === "remote-inbound-rtp") {
      out.remoteLost += Math.max(0, s.packetsLost ?? 0);
      out.remoteJitterMs = Math.max(out.remoteJitterMs, (s.jitter ?? 0) * 1000);
      if (s.roundTripTime != null) out.rttMs = Math.max(out.rttMs ?? 0, s.roundTripTime * 1000);
      out.remoteSent += sentByRtp.get(s.localId) ?? 0;
    } else if (s.type === "media-source" && s.kind === "audio" && s.audioLevel != null) {
      out.localAudioLevel = Math.max(out.localAudioLevel ?? 0, s.audioLevel);
    }
  });
  // remote-inbound may be listed before its outbound-rtp
  if (out.remoteSent === 0) out.remoteSent = out.outbound.reduce((n, o) => n + o.packetsSent, 0);
  return out;
}
