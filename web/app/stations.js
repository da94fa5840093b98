// Stations page (docs/stations.md): the registry live (`stations-subscribe` on the signaling
// socket: a snapshot, then each online/offline change), a camera view that asks for the
// stream (`request-stream` → `stream-ready`) and plays it by joining the station room as a
// viewer, and gate buttons that follow one command: sent → acknowledged → done / failed /
// timed out. `window.stationsPage` exposes the state to the browser tests.
import { Room } from "../sdk/index.js";
import { Signaling } from "../sdk/signaling.js";
import { describe } from "./messages.js";
import { el, requireSession, signalingUrl, signOut } from "./session.js";

const session = requireSession();
const $ = (id) => document.getElementById(id);
$("who").textContent = `${session.name} (${session.identity})`;
$("signout").addEventListener("click", signOut);

const page = { stations: new Map(), commands: new Map(), stream: null, room: null, errors: [] };
window.stationsPage = page;

const GATE_WORDS = { sent: "Sent…", acked: "Acknowledged…", succeeded: "Done", failed: "Failed",
  "timed-out": "Timed out", rejected: "Refused" };

const socket = new Signaling(signalingUrl(), session.token);
socket.on("message", onMessage);
socket.on("closed", () => { $("feed").textContent = "Disconnected from the gateway; reload to reconnect."; });

function merge(change) {
  const known = page.stations.get(change.station_id) ?? { cameras: [], gates: [], name: "", site: "" };
  page.stations.set(change.station_id, { ...known, ...change });
}

function render() {
  const rows = [...page.stations.values()].sort((a, b) => a.station_id.localeCompare(b.station_id));
  $("stations").replaceChildren(...rows.map((s) => el("tr", { dataset: { station: s.station_id, status: s.status } },
    el("td", {}, el("strong", {}, s.name || s.station_id), el("div", { class: "muted" }, s.station_id)),
    el("td", {}, s.site || "—"),
    el("td", {}, el("span", { class: `state ${s.status}`, dataset: { state: s.status } }, s.status === "online" ? "Online" : "Offline")),
    el("td", {}, ...s.cameras.map((c) => el("button", {
      class: "camera", dataset: { camera: c.camera_id }, ...(s.status === "online" ? {} : { disabled: "" }),
      onclick: () => viewCamera(s.station_id, c.camera_id, c.name),
    }, `View ${c.name || c.camera_id}`))),
    el("td", {}, ...s.gates.map((g) => gateControl(s, g))))));
  $("stations-empty").hidden = rows.length > 0;
}

function gateControl(station, gateId) {
  const key = `${station.station_id}/${gateId}`;
  const command = [...page.commands.values()].reverse().find((c) => c.key === key);
  const busy = command && (command.status === "sent" || command.status === "acked");
  return el("span", { class: "gate", dataset: { gate: gateId } },
    el("button", { class: "open-gate", ...(station.status === "online" && !busy ? {} : { disabled: "" }),
      onclick: () => openGate(station.station_id, gateId) }, `Open ${gateId}`),
    el("span", { class: "gate-status", dataset: { status: command?.status ?? "" } },
      command ? ` ${GATE_WORDS[command.status] ?? command.status}${command.error ? `: ${command.error}` : ""}` : ""));
}

function onMessage(m) {
  if (m.type === "stations") {
    if (m.snapshot) page.stations.clear();
    for (const s of m.stations) merge(s);
    $("feed").textContent = `Live · ${page.stations.size} station(s)`;
    render();
  } else if (m.type === "command" && page.commands.has(m.command_id)) {
    Object.assign(page.commands.get(m.command_id), { status: m.status, error: m.error ?? m.code ?? null });
    render();
  } else if (m.type === "stream-ready" && page.stream && m.camera_id === page.stream.camera && m.station_id === page.stream.station) {
    playStream(m);
  } else if (m.type === "stream-failed" && page.stream && m.camera_id === page.stream.camera) {
    showViewer(`Failed: ${m.reason ?? m.code}`, "failed");
  }
}

async function openGate(stationId, gateId) {
  const commandId = `g-${crypto.randomUUID().slice(0, 18)}`;
  page.commands.set(commandId, { key: `${stationId}/${gateId}`, status: "sent", error: null, at: Date.now() });
  render();
  try {
    socket.send({ type: "open-gate", station_id: stationId, gate_id: gateId, command_id: commandId, request_id: commandId });
  } catch (err) {
    Object.assign(page.commands.get(commandId), { status: "failed", error: describe(err) });
    render();
  }
}

function showViewer(text, state) {
  $("viewer").hidden = false;
  $("viewer-state").textContent = text;
  $("viewer-state").dataset.state = state;
}

async function closeViewer() {
  const room = page.room;
  page.room = null;
  page.stream = null;
  $("camera-video").srcObject = null;
  $("viewer").hidden = true;
  if (room) await room.leave().catch(() => {});
}
$("viewer-close").addEventListener("click", closeViewer);

async function viewCamera(stationId, cameraId, name) {
  await closeViewer();
  page.stream = { station: stationId, camera: cameraId, requestedAt: performance.now(), readyAt: null, room: null };
  $("viewer-title").textContent = `${name || cameraId} · ${stationId}`;
  showViewer("Requesting the stream…", "requesting");
  try {
    socket.send({ type: "request-stream", station_id: stationId, camera_id: cameraId, request_id: `s-${cameraId}` });
  } catch (err) {
    showViewer(`Failed: ${describe(err)}`, "failed");
  }
}

async function playStream(m) {
  const stream = page.stream;
  if (stream.room) return; // already playing
  stream.room = m.room;
  stream.readyAt = performance.now();
  showViewer("Connecting to the stream…", "connecting");
  const room = new Room({ url: signalingUrl(), token: session.token, room: m.room, name: session.name });
  page.room = room;
  room.on("track", (remote) => {
    if (remote.mediaKind !== "video") return;
    $("camera-video").srcObject = remote.stream;
    showViewer("Live", "live");
  });
  room.on("error", (err) => page.errors.push({ code: err.code, message: err.message }));
  try {
    await room.join();
  } catch (err) {
    showViewer(`Failed: ${describe(err)}`, "failed");
  }
}

socket.open().then(() => {
  socket.send({ type: "stations-subscribe", request_id: "stations" });
}).catch((err) => { $("stations-error").textContent = `Could not reach the gateway: ${describe(err)}`; });

socket.on("message", (m) => {
  if (m.type === "error") {
    page.errors.push({ code: m.code, message: m.message, request_id: m.request_id });
    const command = page.commands.get(m.request_id ?? "");
    if (command) { Object.assign(command, { status: "rejected", error: describe({ code: m.code, message: m.message }) }); render(); }
    else if ((m.request_id ?? "").startsWith("s-")) showViewer(`Failed: ${m.message}`, "failed");
    else $("stations-error").textContent = m.message;
  }
});
