// Stations for operators (docs/protocol.md, "Stations (operators)"): one signaling socket
// carries the registry (`stations-subscribe` → "stations" snapshot, then each change),
// camera requests (`request-stream` → "stream-requested", then "stream-ready" or
// "stream-failed") and gate commands (`open-gate` → "command" with status sent, acked,
// then succeeded, failed, timed-out or rejected). Every server message is emitted by its
// type; `stations` is the merged registry, `commands` the latest status per command id.
import { Emitter } from "./emitter.js";
import { Signaling } from "./signaling.js";

const FINAL = new Set(["succeeded", "failed", "timed-out", "rejected"]);

export class Stations extends Emitter {
  constructor({ url, token }) {
    super();
    this.signaling = new Signaling(url, token);
    this.stations = new Map();
    this.commands = new Map();
    this.signaling.on("message", (m) => this.#onMessage(m));
    this.signaling.on("closed", (e) => this.emit("closed", e));
  }

  async open() {
    await this.signaling.open();
    this.signaling.send({ type: "stations-subscribe", request_id: "stations" });
  }

  close() { this.signaling.close(); }

  /** Ask for a camera's stream; "stream-ready" (or "stream-failed") follows. */
  requestStream(stationId, cameraId) {
    this.signaling.send({ type: "request-stream", station_id: stationId, camera_id: cameraId,
      request_id: `s-${stationId}-${cameraId}`.slice(0, 64) });
  }

  /** Open a gate once: a retry with the same `commandId` never opens it twice. */
  openGate(stationId, gateId, commandId = `g-${crypto.randomUUID().slice(0, 18)}`) {
    this.commands.set(commandId, { stationId, gateId, status: "sent", error: null, final: false });
    this.signaling.send({ type: "open-gate", station_id: stationId, gate_id: gateId, command_id: commandId,
      request_id: commandId });
    return commandId;
  }

  #onMessage(m) {
    if (m.type === "stations") {
      if (m.snapshot) this.stations.clear();
      for (const s of m.stations) this.#merge(s);
    } else if (m.type === "command") {
      const known = this.commands.get(m.command_id) ?? { stationId: m.station_id, gateId: null };
      if (known.final) return; // one outcome per command
      this.commands.set(m.command_id, { ...known, status: m.status, error: m.error ?? m.code ?? null,
        final: FINAL.has(m.status) });
    } else if (m.type === "error" && this.commands.has(m.request_id ?? "")) {
      Object.assign(this.commands.get(m.request_id), { status: "rejected", error: m.code, final: true });
      this.emit("command", { type: "command", command_id: m.request_id, status: "rejected", code: m.code });
    }
    // "stream-requested", "stream-ready", "stream-failed", "stations", "command", "error"
    this.emit(m.type, m);
  }

  #merge(change) {
    const known = this.stations.get(change.station_id);
    if (known && known.changed_at && change.changed_at && known.changed_at > change.changed_at) return;
    this.stations.set(change.station_id, { cameras: [], gates: [], name: "", site: "", ...known, ...change });
  }
}
