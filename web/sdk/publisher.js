// The publisher connection (we offer, the media node answers). Each published track is
// one transceiver ("slot") named in the `publish` message by its mid. A camera goes out
// as two or three encodings of one source (separate tracks sharing the source id, with
// layer high/mid/low: aiortc cannot receive RID simulcast). A slot may start without a
// track (e.g. `screen`): the node announces the source when its first packet arrives.

export const LAYERS = Object.freeze({
  high: { scaleResolutionDownBy: 1, maxBitrate: 900_000 },
  mid: { scaleResolutionDownBy: 2, maxBitrate: 350_000 },
  low: { scaleResolutionDownBy: 4, maxBitrate: 150_000 },
});

/** Slot specs for a camera track sent as `count` (1-3) encodings of `sourceId`. */
export function cameraSlots(track, sourceId, count = 2) {
  const layers = { 1: ["single"], 2: ["high", "low"], 3: ["high", "mid", "low"] }[count];
  if (!layers) throw new RangeError("a camera has 1, 2 or 3 encodings");
  return layers.map((layer, i) => ({
    track: i === 0 ? track : track.clone(), sourceId, kind: "camera", layer,
    encoding: LAYERS[layer] ?? LAYERS.high,
  }));
}

const mediaKind = (kind) => (kind === "microphone" ? "audio" : "video");

export class Publisher {
  constructor(rtcConfig) {
    this.rtcConfig = rtcConfig;
    this.pc = null;
    this.slots = [];
  }

  /** Open a fresh connection carrying `specs` and exchange offer/answer over `signaling`. */
  async open(signaling, specs) {
    this.close({ stopTracks: false });
    const pc = new RTCPeerConnection(this.rtcConfig);
    this.pc = pc;
    this.slots = specs.map((spec) => {
      const init = { direction: "sendonly" };
      if (spec.encoding) init.sendEncodings = [{ ...spec.encoding }];
      const live = spec.enabled === false ? null : spec.track;
      const transceiver = pc.addTransceiver(live ?? mediaKind(spec.kind), init);
      return { enabled: true, ...spec, transceiver };
    });
    await pc.setLocalDescription(await pc.createOffer());
    const tracks = this.slots.map((s) => ({
      source_id: s.sourceId, kind: s.kind, layer: s.layer ?? "single", mid: s.transceiver.mid,
    }));
    const answer = await signaling.request({ type: "publish", sdp: pc.localDescription.sdp, tracks },
      ["publisher-answer"], 20000);
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    await Promise.all(this.slots.map((s) => this.#keepResolution(s)));
  }

  async #keepResolution(slot) {
    if (slot.kind === "microphone") return;
    const sender = slot.transceiver.sender;
    try {
      const params = sender.getParameters();
      params.degradationPreference = "maintain-resolution";
      await sender.setParameters(params);
    } catch (err) {
      console.debug("degradationPreference not applied", err);
    }
  }

  /** Stop (`enabled=false`) or resume sending every slot of `sourceId`. */
  async setEnabled(sourceId, enabled) {
    for (const slot of this.slots.filter((s) => s.sourceId === sourceId)) {
      slot.enabled = enabled;
      await slot.transceiver.sender.replaceTrack(enabled ? slot.track : null);
    }
  }

  /** Dynacast: send only the encodings of `sourceId` whose layer is in `layers` (`single` for a
   *  one-encoding source); each layer is its own sender, switched with `active`. Chromium starts a
   *  re-activated encoding with a keyframe. Microphones are never stopped. */
  async setActive(sourceId, layers) {
    for (const slot of this.slots.filter((s) => s.sourceId === sourceId && s.kind !== "microphone")) {
      const sender = slot.transceiver.sender;
      const params = sender.getParameters();
      if (!params.encodings?.length) continue;
      const active = layers.includes(slot.layer ?? "single");
      slot.active = active;
      if (params.encodings.every((e) => e.active === active)) continue;
      for (const encoding of params.encodings) encoding.active = active;
      await sender.setParameters(params);
    }
  }

  /** Per layer of `sourceId`: whether its encoding is active (what dynacast left on). */
  sending(sourceId) {
    return Object.fromEntries(this.slots.filter((s) => s.sourceId === sourceId).map((s) => [
      s.layer ?? "single", (s.transceiver.sender.getParameters().encodings ?? []).some((e) => e.active !== false)]));
  }

  /** Put a new track (or null) in the slots of `sourceId` (e.g. a screen share starting). */
  async setTrack(sourceId, track) {
    for (const slot of this.slots.filter((s) => s.sourceId === sourceId)) {
      slot.track = track;
      slot.enabled = track !== null;
      await slot.transceiver.sender.replaceTrack(track);
    }
  }

  /** The current specs (for republishing on a fresh connection). */
  specs() {
    return this.slots.map(({ transceiver, ...spec }) => spec);
  }

  close({ stopTracks = true } = {}) {
    if (stopTracks) for (const slot of this.slots) slot.track?.stop();
    this.pc?.close();
    this.pc = null;
  }
}
