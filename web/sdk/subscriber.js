// The subscriber connection (the media node offers, we answer). Every `subscriber-offer`
// names the source each mid carries; a transceiver whose mid maps to a new source is
// reported as a remote track {peerId, sourceId, kind, layer, mid, track}.

export class Subscriber {
  constructor(rtcConfig, onTrack) {
    this.rtcConfig = rtcConfig;
    this.onTrack = onTrack;
    this.pc = null;
    this.sources = new Map(); // mid -> source from the offers
    this.reported = new Map(); // mid -> "peer/source" already reported
    this.queue = Promise.resolve();
  }

  /** Apply a `subscriber-offer` and return the answer SDP (offers are handled in order). */
  applyOffer(message) {
    const run = this.queue.then(() => this.#apply(message));
    this.queue = run.catch(() => {});
    return run;
  }

  async #apply(message) {
    if (this.pc === null) this.pc = new RTCPeerConnection(this.rtcConfig);
    for (const source of message.sources ?? []) {
      if (source.mid == null) continue;
      // a source unpublished and published again comes on a new mid: the old one is retired
      for (const [mid, known] of this.sources) {
        if (mid !== source.mid && known.peer_id === source.peer_id && known.source_id === source.source_id) {
          this.sources.delete(mid);
        }
      }
      this.sources.set(source.mid, source);
    }
    const pc = this.pc;
    await pc.setRemoteDescription({ type: "offer", sdp: message.sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    this.#report();
    return pc.localDescription.sdp;
  }

  #report() {
    for (const transceiver of this.pc.getTransceivers()) {
      const source = this.sources.get(transceiver.mid);
      const track = transceiver.receiver.track;
      if (!source || !track) continue;
      const key = `${source.peer_id}/${source.source_id}`;
      if (this.reported.get(transceiver.mid) === key) continue;
      this.reported.set(transceiver.mid, key);
      this.onTrack({ peerId: source.peer_id, sourceId: source.source_id, kind: source.kind,
                     layer: source.layer, mid: transceiver.mid, track, receiver: transceiver.receiver });
    }
  }

  /** The source a mid carries (for stats). */
  sourceOf(mid) {
    return this.sources.get(mid) ?? null;
  }

  close() {
    this.pc?.close();
    this.pc = null;
    this.sources.clear();
    this.reported.clear();
  }
}
