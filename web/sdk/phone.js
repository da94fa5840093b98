// Phone: a signed-in user's session for presence and 1:1 calls (docs/protocol.md, Calls),
// with the call running as a direct browser-to-browser connection in the call's p2p room.
// One socket carries everything: presence, call invites and answers, and the p2p room the
// call lands in (a `leave` keeps the socket, the user's session, open).
//
// States (callstate.js): Idle -> Calling (call) | Ringing (call-incoming) -> Connecting
// (accepted: join the p2p room, exchange offer/answer/ICE) -> Connected (the peer
// connection is up) -> Ending (hang-up, rejected, cancelled, timed out, ended) -> Idle.
// A lost socket reconnects with backoff over the gateway URLs (Reconnecting in a call).
//
// Events: state, presence {users}, incoming {callId, caller, callerName, ringUntil},
// ringing {callId, callee, sessions}, ended {callId, reason, by}, track {track, stream,
// kind}, connection {state}, reconnecting, reconnected, gave-up, error, and every server message.

import { Backoff } from "./backoff.js";
import { CallState, States } from "./callstate.js";
import { Emitter } from "./emitter.js";
import { P2PLink } from "./p2p.js";
import { RoomError, Signaling } from "./signaling.js";
import { snapshot } from "./stats.js";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const OVER = { "call-rejected": "rejected", "call-cancelled": "cancelled", "call-timed-out": "timed_out",
               "call-ended": "ended", "call-refused": "refused" };
const P2P = new Set(["p2p-offer", "p2p-answer", "ice-candidate"]);

export class Phone extends Emitter {
  constructor({ url = null, urls = null, token, apiBase = null, iceServers = null, iceTransportPolicy = "all",
                backoff = {}, random = Math.random, endingMs = 5000 } = {}) {
    super();
    this.urls = urls ?? [url];
    this.urlIndex = 0;
    Object.assign(this, { token, iceServers, iceTransportPolicy, endingMs });
    this.apiBase = apiBase ?? this.urls[0].replace(/^ws/, "http").replace(/\/v1\/rtc.*$/, "");
    this.users = new Map();
    this.call = null; // {callId, role, peer, room, stream}
    this.peerId = null;
    this.link = null;
    this.callState = new CallState((state, previous, event) => this.emit("state", { state, previous, event }));
    this.backoff = new Backoff(backoff, random);
    this.signaling = null;
    this.closed = false;
    this.reconnecting = false;
  }

  get state() { return this.callState.state; }

  get url() { return this.urls[this.urlIndex % this.urls.length]; }

  rtcConfig(servers) {
    return { iceServers: this.iceServers ?? servers ?? [], iceTransportPolicy: this.iceTransportPolicy };
  }

  // --- the session socket ----------------------------------------------------------

  async start() {
    await this.#openSocket();
    await this.#subscribePresence();
  }

  async #openSocket() {
    this.signaling?.close();
    const signaling = new Signaling(this.url, this.token);
    signaling.on("message", (m) => this.#onMessage(m).catch((err) => this.emit("error", { code: "client", message: String(err) })));
    signaling.on("closed", () => this.#onSocketLost());
    this.signaling = signaling;
    await signaling.open();
  }

  async #subscribePresence() {
    const snap = await this.signaling.request({ type: "presence-subscribe" }, ["presence"]);
    this.#presence(snap);
  }

  #presence(message) {
    for (const user of message.users ?? []) {
      const known = this.users.get(user.user_id);
      if (!known || Date.parse(known.changed_at) <= Date.parse(user.changed_at)) this.users.set(user.user_id, user);
    }
    this.emit("presence", { users: [...this.users.values()] });
  }

  async #onSocketLost() {
    if (this.closed || this.reconnecting) return;
    this.reconnecting = true;
    if (this.callState.can("lost")) this.callState.send("lost");
    this.backoff.reset();
    while (!this.closed) {
      const delay = this.backoff.next(performance.now());
      if (delay === null) return this.#giveUp();
      this.emit("reconnecting", { attempt: this.backoff.attempt, delayMs: delay });
      await sleep(delay);
      this.urlIndex += 1; // the gateway we were on just went away: try the next one first
      try {
        await this.#openSocket();
        await this.#subscribePresence();
        if (this.call?.room && this.peerId) await this.#resumeCall();
        this.reconnecting = false;
        this.emit("reconnected", { peerId: this.peerId, url: this.url });
        return;
      } catch (err) {
        this.emit("reconnect-failed", { attempt: this.backoff.attempt, error: String(err) });
      }
    }
  }

  /** Back in the call's room with the same peer; the direct connection never stopped. */
  async #resumeCall() {
    try {
      await this.signaling.request({ type: "join", room: this.call.room, resume_peer_id: this.peerId }, ["resumed"]);
    } catch (err) {
      if (err.code !== "peer_not_found") throw err;
      this.#finish("lost");
      return;
    }
    if (this.callState.can("connected")) this.callState.send("connected");
  }

  #giveUp() {
    this.reconnecting = false;
    const info = { attempts: this.backoff.attempt, elapsedMs: this.backoff.elapsed(performance.now()) };
    this.#teardown();
    if (this.callState.can("fail")) this.callState.send("fail");
    this.emit("gave-up", info);
  }

  // --- placing and answering calls -----------------------------------------------------

  /** Call `callee` (a user id), sending `stream` once connected. Throws RoomError (e.g. rate_limited). */
  async dial(callee, { stream = null } = {}) {
    this.callState.send("dial");
    this.call = { callId: null, role: "caller", peer: callee, room: null, stream };
    let response, body;
    try {
      response = await fetch(`${this.apiBase}/v1/calls`, { method: "POST", body: JSON.stringify({ callee }),
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${this.token}` } });
      body = await response.json().catch(() => ({}));
    } catch (err) {
      this.#finish("failed");
      throw new RoomError("unreachable", String(err));
    }
    if (!response.ok) {
      this.#finish(body.error?.code ?? "failed");
      throw new RoomError(body.error?.code ?? "http_error", body.error?.message ?? response.statusText);
    }
    if (this.call?.role === "caller" && this.call.callId === null) this.call.callId = body.call_id;
    return body;
  }

  /** Answer the ringing call: we will send `stream`. */
  accept({ stream = null } = {}) {
    if (this.state !== States.RINGING) throw new RoomError("no_call", "no call is ringing");
    this.call.stream = stream;
    this.callState.send("accept");
    this.signaling.send({ type: "call-accept", call_id: this.call.callId });
  }

  reject() {
    if (this.state !== States.RINGING) return;
    this.signaling.send({ type: "call-reject", call_id: this.call.callId });
    this.#finish("rejected");
  }

  /** Cancel (before an answer) or hang up the current call. */
  hangup() {
    const call = this.call;
    if (!call || this.state === States.ENDING || this.state === States.IDLE) return;
    if (call.callId) {
      const type = this.state === States.CALLING ? "call-cancel" : "call-hangup";
      try { this.signaling.send({ type, call_id: call.callId }); } catch (err) { console.debug("hang-up not sent", err); }
    }
    this.#to("hangup");
    // the server confirms with call-ended / call-cancelled; do not wait forever for it
    setTimeout(() => { if (this.call === call) this.#finish("hung_up"); }, this.endingMs);
  }

  // --- server messages ---------------------------------------------------------------

  async #onMessage(m) {
    // a push names only the users who changed: `presence` events always carry everyone known
    // (re-emitting the raw push made the lobby list only those users, often just ourselves)
    if (m.type === "presence") return this.#presence(m);
    if (m.type === "call-incoming") this.#onIncoming(m);
    else if (m.type === "call-ringing" && this.call?.role === "caller") {
      this.call.callId ??= m.call_id;
      this.emit("ringing", { callId: m.call_id, callee: m.callee, sessions: m.sessions });
    } else if (m.type === "call-accepted") await this.#onAccepted(m);
    else if (OVER[m.type] && this.#isCurrent(m.call_id)) this.#finish(OVER[m.type], m.by ?? m.reason ?? null);
    else if (P2P.has(m.type) && this.link) await this.link.handle(m);
    this.emit(m.type, m);
  }

  #isCurrent(callId) {
    return this.call !== null && (this.call.callId === callId || this.call.callId === null);
  }

  #onIncoming(m) {
    if (this.state !== States.IDLE) return; // already in a call: the other call keeps ringing elsewhere
    this.call = { callId: m.call_id, role: "callee", peer: m.caller, room: null, stream: null };
    this.callState.send("incoming");
    this.emit("incoming", { callId: m.call_id, caller: m.caller, callerName: m.caller_name, ringUntil: m.ring_until });
  }

  async #onAccepted(m) {
    if (!this.#isCurrent(m.call_id)) return;
    if (this.call.role === "callee" && m.answered_here === false) return this.#finish("answered_elsewhere");
    this.call.callId = m.call_id;
    this.call.room = m.room;
    this.#to("accepted", "accept");
    const joined = await this.signaling.request({ type: "join", room: m.room }, ["joined"]);
    this.peerId = joined.peer_id;
    this.link = new P2PLink(this.rtcConfig(joined.ice_servers), (msg) => this.signaling.send(msg),
                            (remote) => this.emit("track", remote));
    const other = (joined.peers ?? []).find((p) => p.peer_id !== joined.peer_id);
    if (other) {
      this.#openLink(other.peer_id);
      await this.link.offer();
    } else {
      const off = this.on("peer-joined", ({ peer }) => { off(); this.#openLink(peer.peer_id); });
    }
  }

  #openLink(remotePeerId) {
    const pc = this.link.open(remotePeerId, this.call?.stream);
    pc.onconnectionstatechange = () => {
      this.emit("connection", { state: pc.connectionState });
      if (pc.connectionState === "connected" && this.callState.can("connected")) this.callState.send("connected");
      if (pc.connectionState === "failed" && this.callState.can("fail")) this.callState.send("fail");
    };
  }

  // --- ending ----------------------------------------------------------------------

  #to(...events) {
    const event = events.find((e) => this.callState.can(e));
    if (event) this.callState.send(event);
  }

  #finish(reason, by = null) {
    const call = this.call;
    if (call === null) return;
    this.call = null;
    this.#to({ rejected: "reject", cancelled: "cancelled", timed_out: "timeout" }[reason] ?? "hangup", "hangup",
             "rejected", "cancelled", "timeout");
    this.link?.close();
    this.link = null;
    if (call.room && this.peerId && this.signaling?.connected && reason !== "ended") {
      this.signaling.send({ type: "leave" });
    }
    this.peerId = null;
    if (this.state === States.ENDING) this.callState.send("ended");
    if (this.state === States.FAILED) this.callState.send("reset");
    this.emit("ended", { callId: call.callId, reason, by });
  }

  #teardown() {
    this.signaling?.close();
    this.link?.close();
  }

  close() {
    this.closed = true;
    if (this.call) this.hangup();
    this.#teardown();
  }

  // --- stats -----------------------------------------------------------------------

  /** The direct connection's inbound/outbound media and its selected candidate pair. */
  async stats() {
    const snap = await snapshot(this.link?.pc);
    return { inbound: snap.inbound, outbound: snap.outbound, pair: await this.link?.selectedPair() ?? null,
             connectionState: this.link?.pc?.connectionState ?? null };
  }
}
