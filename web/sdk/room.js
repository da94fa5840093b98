// Room: join a roomlog room from a browser, publish, receive the others' tracks - the
// browser twin of client/room.py on protocol v1 (docs/protocol.md).
//
// Events (room.on(type, fn)): state {state, previous, event}, joined, resumed,
// peer-joined, peer-left, peer-updated, track {peerId, sourceId, kind, track, stream},
// track-removed {peerId, sourceId}, reconnecting {attempt, delayMs}, reconnected
// {peerId, resumed}, gave-up {attempts, elapsedMs}, quality {level, lossPct, rttMs, uplink, downlink, ...},
// quality-decision (streams' `quality` message), encodings (dynacast applied),
// screen {sharing}, chat {id, peerId, identity, name, text, at: Date, own}, error {code, message}, left.

import { Backoff } from "./backoff.js";
import { CallState, States } from "./callstate.js";
import { Emitter } from "./emitter.js";
import { cameraSlots, Publisher } from "./publisher.js";
import { LinkMeter, measure, QualityMonitor, qualityReport, REPORT_INTERVAL_MS } from "./quality.js";
import { RoomError, Signaling } from "./signaling.js";
import { snapshot } from "./stats.js";
import { Subscriber } from "./subscriber.js";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const CHAT_SEEN = 512; // chat message ids remembered to drop a re-delivered message

export class Room extends Emitter {
  constructor({ url = null, urls = null, token, room, name = "", iceServers = null, iceTransportPolicy = "all",
                backoff = {}, qualityIntervalMs = 2000, random = Math.random } = {}) {
    super();
    Object.assign(this, { token, room, name, iceServers, iceTransportPolicy });
    this.urls = urls ?? [url]; // gateways: a reconnection tries the next one first
    this.urlIndex = 0;
    this.peerId = null;
    this.roomType = null;
    this.peers = new Map();
    this.remote = new Map(); // "peer/source" -> remote track
    this.muted = { camera: false, microphone: false };
    this.unsynced = new Set(); // kinds whose mute state the server has not heard yet
    this.tag = Math.floor(random() * 36 ** 6).toString(36).padStart(6, "0");
    this.call = new CallState((state, previous, event) => this.emit("state", { state, previous, event }));
    this.backoff = new Backoff(backoff, random);
    this.signaling = null;
    this.publisher = null;
    this.subscriber = null;
    this.chatSeen = new Set();
    this.closed = false;
    this.reconnecting = false;
    this.recordingIds = []; // the room's active recordings (the latest `recording` message)
    this.pushed = new Map(); // peer -> Map source -> {layer, level}: streams' latest `quality` decisions
    this.encodings = new Map(); // source -> layers streams asked us to send (dynacast)
    this.reportMeter = new LinkMeter();
    this.reportTimer = null;
    this.reportsStopped = false;
    this.reportsSent = 0;
    this.reportErrors = {}; // refusals of our quality reports by code
    this.quality = new QualityMonitor(() => [this.publisher?.pc, this.subscriber?.pc],
      (sample) => { this.lastQuality = sample; this.emit("quality", sample); }, qualityIntervalMs,
      () => performance.now(), () => this.#qualityContext());
  }

  #qualityContext() {
    return { sourceOf: (mid) => this.subscriber?.sourceOf(mid) ?? null, peers: this.peers, pushed: this.pushed };
  }

  static async connect(options) {
    const room = new Room(options);
    await room.join();
    return room;
  }

  get state() { return this.call.state; }

  get url() { return this.urls[this.urlIndex % this.urls.length]; }

  rtcConfig() {
    return { iceServers: this.iceServers ?? [], iceTransportPolicy: this.iceTransportPolicy };
  }

  // --- joining and reconnecting ----------------------------------------------------

  async join() {
    this.call.send("join");
    try {
      await this.#openSocket();
      await this.#join(false);
    } catch (err) {
      this.call.send("fail");
      throw err;
    }
    this.call.send("connected");
    this.quality.start();
    this.#scheduleReport();
  }

  /** The next report REPORT_INTERVAL_MS after this one went out (chained: a late tick never brings
   *  the next closer to it, which the gateway would refuse). */
  #scheduleReport() {
    if (this.reportTimer !== null || this.reportsStopped) return;
    this.reportTimer = setTimeout(async () => {
      try { await this.#report(); } catch { /* a sample failed: the next one tries again */ }
      this.reportTimer = null;
      this.#scheduleReport();
    }, REPORT_INTERVAL_MS);
  }

  /** One `quality-report` (docs/protocol.md) from this window's stats; refusals are counted, not errors. */
  async #report() {
    if (!this.signaling?.connected || !this.peerId) return;
    const pc = this.publisher?.pc;
    const [pub, sub] = await Promise.all([snapshot(pc), snapshot(this.subscriber?.pc)]);
    const links = measure(this.reportMeter, pc ? pub : null, sub, this.#qualityContext(), performance.now());
    if (!this.signaling?.connected) return;
    this.reportsSent += 1;
    this.signaling.send({ ...qualityReport(links), request_id: `quality-${this.reportsSent}` });
  }

  /** Streams decided our layer for a remote source: its level counts in that participant's. */
  #onQualityDecision(m) {
    if (typeof m.peer_id !== "string" || typeof m.source_id !== "string" || !Number.isInteger(m.level)) return;
    if (!this.pushed.has(m.peer_id)) this.pushed.set(m.peer_id, new Map());
    this.pushed.get(m.peer_id).set(m.source_id, { layer: m.layer, level: Math.min(6, Math.max(1, m.level)) });
    this.quality.sample().catch(() => {}); // show it now, not at the next tick
  }

  /** Dynacast: send only the encodings of the source that some subscriber receives. */
  async #onEncodings(m) {
    if (typeof m.source_id !== "string" || !Array.isArray(m.active)) return;
    this.encodings.set(m.source_id, m.active);
    await this.publisher?.setActive(m.source_id, m.active);
  }

  async #openSocket() {
    this.signaling?.close();
    const signaling = new Signaling(this.url, this.token);
    signaling.on("message", (m) => this.#onMessage(m).catch((err) => this.emit("error", { code: "client", message: String(err) })));
    signaling.on("closed", () => this.#onSocketLost());
    this.signaling = signaling;
    await signaling.open();
  }

  async #join(resume) {
    const message = { type: "join", room: this.room, name: this.name };
    if (resume && this.peerId) message.resume_peer_id = this.peerId;
    const joined = await this.signaling.request(message, ["joined", "resumed"]);
    this.peerId = joined.peer_id;
    this.roomType = joined.room_type ?? this.roomType;
    if (this.iceServers === null) this.iceServers = joined.ice_servers ?? [];
    this.peers = new Map((joined.peers ?? []).map((p) => [p.peer_id, p]));
    return joined;
  }

  async #onSocketLost() {
    if (this.closed || this.reconnecting || !this.call.can("lost")) return;
    this.reconnecting = true;
    this.call.send("lost");
    this.backoff.reset();
    while (!this.closed) {
      const delay = this.backoff.next(performance.now());
      if (delay === null) return this.#giveUp();
      this.emit("reconnecting", { attempt: this.backoff.attempt, delayMs: delay });
      await sleep(delay);
      if (this.closed) return;
      this.urlIndex += 1; // the gateway we were on went away: try the next one first
      try {
        const resumed = await this.#reconnectOnce();
        this.reconnecting = false;
        this.#flushMutes();
        this.call.send("connected");
        this.emit("reconnected", { peerId: this.peerId, resumed, url: this.url });
        return;
      } catch (err) {
        this.emit("reconnect-failed", { attempt: this.backoff.attempt, error: String(err) });
      }
    }
  }

  /** One attempt: resume the peer, or join fully (new peer, republish) when it is gone. */
  async #reconnectOnce() {
    await this.#openSocket();
    try {
      await this.#join(true);
      // peers that left while the socket was down (their `peer-left` went to the lost socket)
      for (const [key, r] of this.remote) if (!this.peers.has(r.peerId)) this.#dropRemote(key);
      for (const id of [...this.pushed.keys()]) if (!this.peers.has(id)) this.pushed.delete(id);
      return true;
    } catch (err) {
      if (err.code !== "peer_not_found") throw err;
    }
    this.peerId = null;
    await this.#join(false);
    this.#renameSources();
    await this.#freshMedia();
    return false;
  }

  #giveUp() {
    this.reconnecting = false;
    const info = { attempts: this.backoff.attempt, elapsedMs: this.backoff.elapsed(performance.now()) };
    this.#teardown();
    this.call.send("fail");
    this.emit("gave-up", info);
  }

  /** New connections on the room's (new) media node: drop remote tracks, publish again. */
  async #freshMedia() {
    this.subscriber?.close();
    this.subscriber = null;
    for (const key of [...this.remote.keys()]) this.#dropRemote(key);
    this.encodings.clear();
    if (this.publisher) await this.publisher.open(this.signaling, this.publisher.specs());
    for (const kind of ["camera", "microphone"]) {
      if (this.muted[kind]) this.signaling.send({ type: "mute", source_kind: kind });
    }
  }

  /** A new peer publishes under new source ids (the old peer's may still be leaving the room). */
  #renameSources() {
    const old = this.tag;
    this.tag = Math.floor(Math.random() * 36 ** 6).toString(36).padStart(6, "0");
    for (const slot of this.publisher?.slots ?? []) slot.sourceId = slot.sourceId.replace(old, this.tag);
  }

  async #moveToNewNode(reason) {
    if (!this.call.can("lost")) return;
    this.call.send("lost");
    this.emit("reconnecting", { attempt: 0, delayMs: 0, reason });
    await this.#freshMedia();
    this.call.send("connected");
    this.emit("reconnected", { peerId: this.peerId, resumed: true, reason });
  }

  // --- publishing --------------------------------------------------------------------

  /** Publish slot specs ({track, sourceId, kind, layer?, encoding?}) on a fresh publisher connection. */
  async publish(specs) {
    this.publisher?.close({ stopTracks: false });
    this.encodings.clear(); // a fresh connection sends every encoding until streams say otherwise
    this.publisher = new Publisher(this.rtcConfig());
    await this.publisher.open(this.signaling, specs);
  }

  /** Publish a camera/microphone stream: the camera as `layers` encodings, plus an idle screen slot. */
  async publishMedia(stream, { layers = 2, screenSlot = true } = {}) {
    const specs = [];
    const video = stream.getVideoTracks()[0];
    const audio = stream.getAudioTracks()[0];
    if (video) specs.push(...cameraSlots(video, `cam-${this.tag}`, layers));
    if (audio) specs.push({ track: audio, sourceId: `mic-${this.tag}`, kind: "microphone", layer: "single" });
    if (screenSlot) specs.push({ track: null, sourceId: `screen-${this.tag}`, kind: "screen", layer: "single", enabled: false });
    await this.publish(specs);
  }

  async setCameraEnabled(enabled) { await this.#setKindEnabled("camera", enabled); }

  async setMicrophoneEnabled(enabled) { await this.#setKindEnabled("microphone", enabled); }

  async #setKindEnabled(kind, enabled) {
    this.muted[kind] = !enabled;
    const ids = new Set((this.publisher?.slots ?? []).filter((s) => s.kind === kind).map((s) => s.sourceId));
    for (const id of ids) await this.publisher.setEnabled(id, enabled);
    this.unsynced.add(kind);
    this.#flushMutes();
  }

  /** Tell the server the mute state of kinds changed while the socket was down. */
  #flushMutes() {
    if (!this.signaling?.connected) return;
    for (const kind of this.unsynced) {
      this.signaling.send({ type: this.muted[kind] ? "mute" : "unmute", source_kind: kind });
    }
    this.unsynced.clear();
  }

  /** Send `track` (e.g. from devices.openScreen()) as this peer's screen source. */
  async shareScreen(track) {
    const slot = this.publisher?.slots.find((s) => s.kind === "screen");
    if (!slot) throw new RoomError("no_screen_slot", "publish with a screen slot first");
    track.addEventListener("ended", () => this.stopScreen());
    await this.publisher.setTrack(slot.sourceId, track);
    this.emit("screen", { sharing: true, sourceId: slot.sourceId });
  }

  /** Stop sharing: the capture ends and the screen source is unpublished, so the others drop
   *  it (`track-unpublished`). Sharing again announces the source anew. */
  async stopScreen() {
    const slot = this.publisher?.slots.find((s) => s.kind === "screen");
    if (!slot?.track) return;
    const { sourceId } = slot;
    await this.#stopSending(sourceId);
    this.emit("screen", { sharing: false, sourceId });
    try {
      await this.unpublish(sourceId);
    } catch (err) {
      // stopped before the node saw any of it: there was nothing to unpublish
      if (err.code !== "source_not_found") throw err;
    }
  }

  /** Stop sending `sourceId` and unpublish it: the others get `track-unpublished` and drop it.
   *  Resolves with the server's `unpublished` answer; rejects with RoomError `source_not_found`,
   *  `forbidden` (another peer's source) or `not_joined`. The slot stays: putting a track in it
   *  again (setTrack / shareScreen) publishes the source again. */
  async unpublish(sourceId) {
    await this.#stopSending(sourceId);
    if (!this.signaling?.connected) throw new RoomError("disconnected", "not connected to the room");
    return this.signaling.request({ type: "unpublish", source_id: sourceId }, ["unpublished"]);
  }

  async #stopSending(sourceId) {
    for (const slot of this.publisher?.slots ?? []) if (slot.sourceId === sourceId) slot.track?.stop();
    if (this.publisher?.slots.some((s) => s.sourceId === sourceId)) await this.publisher.setTrack(sourceId, null);
  }

  // --- subscribing ---------------------------------------------------------------------

  subscribe(sourceId, layer = "high") { this.signaling.send({ type: "subscribe", source_id: sourceId, layer }); }

  unsubscribe(sourceId) { this.signaling.send({ type: "unsubscribe", source_id: sourceId }); }

  async #onSubscriberOffer(message) {
    if (this.subscriber === null) this.subscriber = new Subscriber(this.rtcConfig(), (t) => this.#onTrack(t));
    const sdp = await this.subscriber.applyOffer(message);
    this.signaling.send({ type: "subscriber-answer", sdp });
  }

  #onTrack(remote) {
    const key = `${remote.peerId}/${remote.sourceId}`;
    // offers name the media kind (audio/video); the peer's track list names the source kind
    const published = this.peers.get(remote.peerId)?.tracks?.find((t) => t.source_id === remote.sourceId);
    const kind = published?.kind ?? (remote.track.kind === "audio" ? "microphone" : "camera");
    const entry = { ...remote, key, kind, mediaKind: remote.track.kind, stream: new MediaStream([remote.track]) };
    this.remote.set(key, entry);
    this.emit("track", entry);
  }

  #dropRemote(key) {
    const entry = this.remote.get(key);
    if (!entry) return;
    this.remote.delete(key);
    this.emit("track-removed", entry);
  }

  // --- chat ---------------------------------------------------------------------------

  /** Post `text` to the room's chat; resolves with the message as everyone gets it (text
   *  stripped). Rejects with RoomError `chat_empty`, `chat_too_long` or `not_joined`. */
  async sendChat(text) {
    if (!this.signaling?.connected) throw new RoomError("disconnected", "not connected to the room");
    return this.#chatMessage(await this.signaling.request({ type: "chat", text }, ["chat"]));
  }

  #chatMessage(m) {
    return { id: m.id, peerId: m.peer_id, identity: m.identity ?? "", name: m.name ?? "", text: m.text,
             at: new Date(m.at), own: m.peer_id === this.peerId };
  }

  #onChat(m) {
    if (this.chatSeen.has(m.id)) return; // delivered again (the log is at-least-once)
    this.chatSeen.add(m.id);
    if (this.chatSeen.size > CHAT_SEEN) this.chatSeen.delete(this.chatSeen.values().next().value);
    this.emit("chat", this.#chatMessage(m));
  }

  // --- server messages -----------------------------------------------------------------

  async #onMessage(m) {
    if (m.type === "error" && String(m.request_id ?? "").startsWith("quality-")) {
      this.reportErrors[m.code] = (this.reportErrors[m.code] ?? 0) + 1;
      return;
    }
    if (m.type === "quality") { this.#onQualityDecision(m); return this.emit("quality-decision", m); }
    if (m.type === "encodings") { await this.#onEncodings(m); return this.emit("encodings", m); }
    if (m.type === "subscriber-offer") await this.#onSubscriberOffer(m);
    else if (m.type === "peer-joined" || m.type === "peer-updated") this.peers.set(m.peer.peer_id, m.peer);
    else if (m.type === "peer-left") {
      this.peers.delete(m.peer_id);
      this.pushed.delete(m.peer_id);
      for (const [key, r] of this.remote) if (r.peerId === m.peer_id) this.#dropRemote(key);
    } else if (m.type === "track-published") this.#peerTracks(m.peer_id, (ts) => [...ts, m.track]);
    else if (m.type === "track-unpublished") {
      this.#peerTracks(m.peer_id, (ts) => ts.filter((t) => t.source_id !== m.source_id));
      this.pushed.get(m.peer_id)?.delete(m.source_id);
      this.#dropRemote(`${m.peer_id}/${m.source_id}`);
    }
    else if (m.type === "reconnect") await this.#moveToNewNode(m.reason);
    else if (m.type === "chat") return this.#onChat(m);
    else if (m.type === "recording") this.recordingIds = [...(m.recording_ids ?? [])];
    else if (m.type === "left" && !this.closed) this.#end();
    this.emit(m.type, m);
  }

  #peerTracks(peerId, change) {
    const peer = this.peers.get(peerId);
    if (peer) peer.tracks = change(peer.tracks ?? []);
  }

  // --- leaving ---------------------------------------------------------------------------

  async leave() {
    if (this.closed) return;
    this.closed = true;
    if (this.call.can("hangup")) this.call.send("hangup");
    try {
      await this.signaling?.request({ type: "leave" }, ["left"], 5000);
    } catch (err) {
      console.debug("leave without answer", err);
    }
    this.#end();
  }

  #end() {
    this.closed = true;
    this.#teardown();
    if (this.call.can("hangup")) this.call.send("hangup");
    if (this.call.state === States.ENDING) this.call.send("ended");
  }

  #teardown() {
    this.quality.stop();
    clearTimeout(this.reportTimer);
    this.reportsStopped = true;
    this.signaling?.close();
    this.publisher?.close();
    this.subscriber?.close();
    for (const key of [...this.remote.keys()]) this.#dropRemote(key);
  }

  // --- stats -----------------------------------------------------------------------------

  /** Per remote source: frames decoded, packets, audio level (from the subscriber's getStats). */
  async stats() {
    const sub = await snapshot(this.subscriber?.pc);
    const pub = await snapshot(this.publisher?.pc);
    const inbound = sub.inbound.map((s) => {
      const source = this.subscriber?.sourceOf(s.mid);
      return { ...s, peerId: source?.peer_id ?? null, sourceId: source?.source_id ?? null };
    });
    return { inbound, outbound: pub.outbound, localAudioLevel: pub.localAudioLevel, quality: this.lastQuality ?? null };
  }
}
