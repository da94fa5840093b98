// The signaling socket (docs/protocol.md): requests carry a request_id and wait for the
// answer of an expected type or an `error`; every other server message is emitted as
// "message". "closed" is emitted when the socket goes away without close() being called.

import { Emitter } from "./emitter.js";

export class RoomError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
    this.detail = message;
  }
}

let counter = 0;
const nextRequestId = () => `w${Date.now().toString(36)}${(counter++).toString(36)}`;

export class Signaling extends Emitter {
  constructor(url, token) {
    super();
    this.url = url;
    this.token = token;
    this.ws = null;
    this.pending = new Map();
  }

  open(timeoutMs = 10000) {
    const sep = this.url.includes("?") ? "&" : "?";
    const ws = new WebSocket(`${this.url}${sep}token=${encodeURIComponent(this.token)}`);
    this.ws = ws;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { ws.close(); reject(new RoomError("timeout", "socket did not open")); }, timeoutMs);
      ws.onopen = () => { clearTimeout(timer); resolve(); };
      ws.onerror = () => {};
      ws.onmessage = (ev) => this.#receive(ev.data);
      ws.onclose = (ev) => {
        clearTimeout(timer);
        reject(new RoomError(ev.code === 4001 ? "unauthorized" : "disconnected", ev.reason || "socket closed"));
        this.#closed(ws, ev);
      };
    });
  }

  get connected() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  send(message) {
    if (!this.connected) throw new RoomError("disconnected", "signaling socket is not open");
    this.ws.send(JSON.stringify(message));
  }

  request(message, answers, timeoutMs = 15000) {
    const requestId = nextRequestId();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(requestId);
        reject(new RoomError("timeout", `no answer to ${message.type}`));
      }, timeoutMs);
      this.pending.set(requestId, { answers: new Set(answers), resolve, reject, timer });
      try {
        this.send({ ...message, request_id: requestId });
      } catch (err) {
        clearTimeout(timer);
        this.pending.delete(requestId);
        reject(err);
      }
    });
  }

  close() {
    const ws = this.ws;
    this.ws = null;
    if (ws) { ws.onclose = null; ws.close(1000, "bye"); }
    this.#failPending("closed");
  }

  #receive(text) {
    let message;
    try { message = JSON.parse(text); } catch { return; }
    const waiter = this.pending.get(message.request_id ?? "");
    if (waiter) {
      this.pending.delete(message.request_id);
      clearTimeout(waiter.timer);
      if (message.type === "error") waiter.reject(new RoomError(message.code, message.message));
      else if (waiter.answers.has(message.type)) waiter.resolve(message);
      else waiter.reject(new RoomError("unexpected", `expected ${[...waiter.answers]}, got ${message.type}`));
      if (message.type === "error" || message.type === "pong") return;
    }
    this.emit("message", message);
  }

  #closed(ws, ev) {
    if (this.ws !== ws) return;
    this.ws = null;
    this.#failPending("disconnected");
    this.emit("closed", { code: ev.code, reason: ev.reason });
  }

  #failPending(code) {
    for (const [id, waiter] of this.pending) {
      clearTimeout(waiter.timer);
      waiter.reject(new RoomError(code, "signaling connection closed"));
      this.pending.delete(id);
    }
  }
}
