// Stations page (docs/stations.md): the registry live (sdk/stations.js: a snapshot, then
// each online/offline change), a camera view that asks for the stream (`request-stream` →
// `stream-ready`) and plays it by joining the station room as a viewer, and gate buttons
// that follow one command: sent → acknowledged → done / failed / timed out.
// `window.stationsPage` exposes the state to the browser tests.
import { Room, Stations } from "../sdk/index.js";
import { describe } from "./messages.js";
import { el, requireSession, signalingUrl, signOut } from "./session.js";

const session = requireSession();
const $ = (id) => document.getElementById(id);
$("who").textContent = `${session.name} (${session.identity})`;
$("signout").addEventListener("click", signOut);

const client = new Stations({ url: signalingUrl(), token: session.token });
const page = { client, stations: client.stations, commands: client.commands, stream: null, room: null, errors: [] };
window.stationsPage = page;

const GATE_WORDS = { sent: "Sent…", acked: "Acknowledged…", succeeded: "Done", failed: "Failed",
  "timed-out": "Timed out", rejected: "Refused" };

function render() {
  const rows = [...client.stations.values()].sort((a, b) => a.station_id.localeCompare(b.station_id));
  $("stations").replaceChildren(...rows.map((s) => el("tr", { dataset: { station: s.station_id, status: s.status } },
    el("td", {}, el("strong", {}, s.name || s.station_id), el("div", { class: "muted" }, s.station_id)),
    el("td", {}, s.site || "—"),
    el("td", {}, el("span", { class: `state ${s.status}`, dataset: { state: s.status } },
      s.status === "online" ? "Online" : "Offline")),
    el("td", {}, ...s.cameras.map((c) => el("button", {
      class: "camera", dataset: { camera: c.camera_id }, ...(s.status === "online" ? {} : { disabled: "" }),
      onclick: () => viewCamera(s.station_id, c.camera_id, c.name),
    }, `View ${c.name || c.camera_id}`))),
    el("td", {}, ...s.gates.map((g) => gateControl(s, g))))));
  $("stations-empty").hidden = rows.length > 0;
  $("feed").textContent = `Live · ${client.stations.size} station(s)`;
}

function gateControl(station, gateId) {
  const command = [...client.commands.values()].reverse()
    .find((c) => c.stationId === station.station_id && c.gateId === gateId);
  const busy = command && !command.final;
  const words = command ? ` ${GATE_WORDS[command.status] ?? command.status}` : "";
  const why = command?.error ? `: ${describe({ code: command.error, message: command.error })}` : "";
  return el("span", { class: "gate", dataset: { gate: gateId } },
    el("button", { class: "open-gate", ...(station.status === "online" && !busy ? {} : { disabled: "" }),
      onclick: () => openGate(station.station_id, gateId) }, `Open ${gateId}`),
    el("span", { class: "gate-status", dataset: { status: command?.status ?? "" } }, words + why));
}

function openGate(stationId, gateId) {
  try {
    client.openGate(stationId, gateId);
  } catch (err) {
    page.errors.push({ code: err.code, message: err.message });
  }
  render();
}

client.on("stations", render);
client.on("command", render);
client.on("stream-ready", (m) => {
  if (page.stream && m.station_id === page.stream.station && m.camera_id === page.stream.camera) playStream(m);
});
client.on("stream-failed", (m) => {
  if (page.stream && m.camera_id === page.stream.camera) showViewer(`Failed: ${m.reason ?? describe(m)}`, "failed");
});
client.on("error", (m) => {
  page.errors.push({ code: m.code, message: m.message, request_id: m.request_id });
  if ((m.request_id ?? "").startsWith("s-")) showViewer(`Failed: ${describe(m)}`, "failed");
  else if (!client.commands.has(m.request_id ?? "")) $("stations-error").textContent = describe(m);
});
client.on("closed", () => { $("feed").textContent = "Disconnected from the gateway; reload to reconnect."; });

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
    client.requestStream(stationId, cameraId);
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

client.open().catch((err) => { $("stations-error").textContent = `Could not reach the gateway: ${describe(err)}`; });
