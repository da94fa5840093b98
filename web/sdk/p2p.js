// A direct browser-to-browser connection for a p2p room (docs/protocol.md, room types):
// offer, answer and ICE candidates go to the other peer as `p2p-offer`, `p2p-answer`
// and `ice-candidate` with `to: <peer_id>`; streams relay them over the log. Media never
// touches a media node. The peer that joined second offers (the protocol's suggestion).

export class P2PLink {
  /**
   * @param rtcConfig  {iceServers, iceTransportPolicy} for the RTCPeerConnection
   * @param send       (message) => void: sends a signaling message
   * @param onTrack    ({track, stream, kind}) => void: a remote track arrived
   */
  constructor(rtcConfig, send, onTrack) {
    this.rtcConfig = rtcConfig;
    this.send = send;
    this.onTrack = onTrack;
    this.remotePeerId = null;
    this.pc = null;
    this.pendingCandidates = [];
    this.queue = Promise.resolve();
  }

  /** Open the connection towards `remotePeerId`, sending the local stream's tracks. */
  open(remotePeerId, stream) {
    this.close();
    this.remotePeerId = remotePeerId;
    const pc = new RTCPeerConnection(this.rtcConfig);
    this.pc = pc;
    for (const track of stream?.getTracks() ?? []) pc.addTrack(track, stream);
    pc.onicecandidate = (ev) => {
      if (ev.candidate && this.pc === pc) this.#signal({ type: "ice-candidate", candidate: ev.candidate.toJSON() });
    };
    pc.ontrack = (ev) => this.onTrack({ track: ev.track, kind: ev.track.kind,
                                        stream: ev.streams[0] ?? new MediaStream([ev.track]) });
    return pc;
  }

  /** We joined second: offer to the peer already in the room. */
  offer() {
    return this.#serial(async () => {
      await this.pc.setLocalDescription(await this.pc.createOffer());
      this.#signal({ type: "p2p-offer", sdp: this.pc.localDescription.sdp });
    });
  }

  /** A relayed `p2p-offer`, `p2p-answer` or `ice-candidate` from the other peer. */
  handle(message) {
    if (message.from !== this.remotePeerId || this.pc === null) return Promise.resolve(false);
    return this.#serial(async () => {
      if (message.type === "p2p-offer") {
        await this.pc.setRemoteDescription({ type: "offer", sdp: message.sdp });
        await this.#flushCandidates();
        await this.pc.setLocalDescription(await this.pc.createAnswer());
        this.#signal({ type: "p2p-answer", sdp: this.pc.localDescription.sdp });
      } else if (message.type === "p2p-answer") {
        await this.pc.setRemoteDescription({ type: "answer", sdp: message.sdp });
        await this.#flushCandidates();
      } else if (message.type === "ice-candidate") {
        if (this.pc.remoteDescription) await this.#addCandidate(message.candidate);
        else this.pendingCandidates.push(message.candidate);
      }
      return true;
    });
  }

  async #flushCandidates() {
    const pending = this.pendingCandidates;
    this.pendingCandidates = [];
    for (const candidate of pending) await this.#addCandidate(candidate);
  }

  async #addCandidate(candidate) {
    try {
      await this.pc.addIceCandidate(typeof candidate === "string" ? { candidate, sdpMid: "0" } : candidate);
    } catch (err) {
      console.debug("ice candidate not added", err);
    }
  }

  #signal(message) {
    try {
      this.send({ ...message, to: this.remotePeerId });
    } catch (err) {
      console.debug("p2p signal not sent", err);
    }
  }

  #serial(fn) {
    const run = this.queue.then(fn);
    this.queue = run.catch(() => {});
    return run;
  }

  /** The selected candidate pair: {localType, remoteType, state} (null before one is chosen). */
  async selectedPair() {
    if (!this.pc) return null;
    const report = await this.pc.getStats();
    let pairId = null;
    report.forEach((s) => { if (s.type === "transport" && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId; });
    const pair = pairId ? report.get(pairId) : null;
    if (!pair) return null;
    return { state: pair.state, localType: report.get(pair.localCandidateId)?.candidateType ?? null,
             remoteType: report.get(pair.remoteCandidateId)?.candidateType ?? null };
  }

  close() {
    this.pc?.close();
    this.pc = null;
    this.pendingCandidates = [];
  }
}
