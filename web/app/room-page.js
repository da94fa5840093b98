// The room page: join, publish camera and microphone (unless watching), the video grid,
// controls (microphone, camera, screen, leave), connection state, quality, speaker and chat.
// The address carries the room only (Copy link shares it); the devices come from this
// browser's storage (prefs.js), falling back to the default ones with a one-line notice.
import { openPreferred, openScreen } from "../sdk/devices.js";
import { Room } from "../sdk/room.js";
import { ChatPanel } from "./chat.js";
import { Grid } from "./grid.js";
import { describe, deviceNotice } from "./messages.js";
import { PeoplePanel } from "./people.js";
import { loadDevices, roomLink } from "./prefs.js";
import { RecordingPanel } from "./recording.js";
import { api, requireSession, signalingUrls } from "./session.js";

const $ = (id) => document.getElementById(id);
const session = requireSession();
const params = new URLSearchParams(location.search);
const roomId = params.get("room");
const viewLink = params.get("view") === "1";
const watching = viewLink || !session.grants.includes("publish") && !session.grants.includes("admin");
const SPEAKING_LEVEL = 0.02;
// an old link naming devices: tried on this page only; the address keeps the room alone
const linkDevices = { camera: params.get("camera") ?? "", microphone: params.get("microphone") ?? "" };
if (params.has("camera") || params.has("microphone")) {
  params.delete("camera");
  params.delete("microphone");
  history.replaceState(null, "", `${location.pathname}?${params}`);
}

const grid = new Grid($("grid"), $("audio"));
const room = new Room({ urls: signalingUrls(), token: session.token, room: roomId, name: session.name, qualityIntervalMs: 1000 });
window.roomlogPage = { room, grid, published: false, errors: [], notice: "", role: watching ? "watching" : "joining" };
$("room-name").textContent = roomId;
window.roomlogPage.recording = new RecordingPanel({ indicator: $("rec-indicator"), start: $("rec-start"), stop: $("rec-stop"),
                                                    list: $("rec-list"), player: $("rec-player") }, room, roomId, session);

const LABELS = { idle: "Idle", connecting: "Connecting", connected: "Connected", reconnecting: "Reconnecting",
                 ending: "Leaving", failed: "Failed", calling: "Calling", ringing: "Ringing" };
const ROLES = { watching: "watching", "not-sending": "not sending" };
/** The badge: the room's connection state, and while connected whether we send (never
 *  "Connected" after a failed join: the SDK's state is then `failed`). */
function showState() {
  const { state } = room, role = ROLES[window.roomlogPage.role];
  $("state").textContent = state === "connected" && role ? `${LABELS.connected} · ${role}` : LABELS[state] ?? state;
  $("state").dataset.state = state === "connected" && window.roomlogPage.role === "not-sending" ? "degraded" : state;
  $("peer-id").textContent = room.peerId ?? "";
}
room.on("state", showState);
room.on("state", ({ state }) => { if (state !== "connected") showQuality({ level: 0, name: "", lossPct: 0, rttMs: null }); });
room.on("reconnecting", ({ attempt, delayMs }) => banner(`Connection lost — reconnecting (attempt ${attempt}, in ${(delayMs / 1000).toFixed(1)} s)…`));
room.on("reconnected", ({ resumed }) => banner(resumed ? "" : "Rejoined the room as a new participant."));
room.on("gave-up", ({ elapsedMs }) => {
  banner(`Could not reconnect after ${Math.round(elapsedMs / 1000)} s.`, true);
  $("rejoin").hidden = false;
});
room.on("error", (err) => { window.roomlogPage.errors.push({ code: err.code, message: err.message }); banner(describe(err), true); });
const people = new PeoplePanel($("people-count"), $("people-list"));
const syncPeers = () => {
  grid.syncPeers(room.peers, room.peerId, { publishersOnly: room.roomType === "broadcast" });
  people.render(room.peers, { peerId: room.peerId, name: session.name, muted: room.muted,
                              publishing: window.roomlogPage.published });
};
for (const kind of ["joined", "resumed", "peer-joined", "peer-updated", "peer-left", "track-published", "track-unpublished"]) {
  room.on(kind, syncPeers);
}
room.on("track", (remote) => grid.attach(remote, room.peers));
const chat = new ChatPanel({ log: $("chat-log"), form: $("chat-form"), input: $("chat-text"), send: $("chat-send"),
                             error: $("chat-error") }, (text) => room.sendChat(text));
room.on("chat", (message) => chat.add(message));
room.on("state", ({ state }) => chat.setEnabled(state === "connected"));
room.on("track-removed", (remote) => grid.detach(remote));
room.on("quality", (sample) => {
  showQuality(sample);
  grid.highlight(activeSpeaker(sample));
  if (sample.uplink) grid.setQuality(room.peerId, sample.uplink, { local: true });
  for (const [peerId, q] of sample.downlink ?? []) grid.setQuality(peerId, q);
});

/** The page's one-line status: a notice (yellow) or an error (red); "" hides it. */
function banner(text, error = false) {
  $("banner").textContent = text;
  $("banner").hidden = !text;
  $("banner").classList.toggle("error", error);
}

function showQuality({ level, name, lossPct, rttMs }) {
  const q = $("quality");
  if (room.state !== "connected") { // media may still flow, but the meeting is not "excellent" now
    q.dataset.level = "0";
    q.title = "not connected to the room";
    q.querySelector(".text").textContent = `– · ${(LABELS[room.state] ?? room.state).toLowerCase()}`;
    return;
  }
  q.dataset.level = level;
  q.title = `network ${name}: loss ${lossPct.toFixed(1)} %, RTT ${rttMs == null ? "?" : Math.round(rttMs)} ms`;
  q.querySelector(".text").textContent = `${level} · ${name}`;
}

/** The peer with the loudest audio above SPEAKING_LEVEL in this sample (ourselves included). */
function activeSpeaker(sample) {
  let best = null, loudest = SPEAKING_LEVEL;
  const [pub, sub] = sample.snapshots;
  if (pub?.localAudioLevel > loudest && !room.muted.microphone) { best = room.peerId; loudest = pub.localAudioLevel; }
  for (const s of sub?.inbound ?? []) {
    const source = room.subscriber?.sourceOf(s.mid);
    if (s.kind === "audio" && s.audioLevel > loudest && source) { best = source.peer_id; loudest = s.audioLevel; }
  }
  return best;
}

function setRole(role) {
  window.roomlogPage.role = role;
  showState();
}

/** Whether the link names a room that exists (a mistyped link must not create one). Retries a
 *  404 for ~3 s (a room created a moment ago may not be in the read model yet); any other
 *  answer (e.g. a token that may not read rooms) leaves it to the join. */
async function roomExists() {
  if (!roomId) return false;
  for (let attempt = 0; attempt < 6; attempt += 1) {
    try {
      await api(`/v1/rooms/${encodeURIComponent(roomId)}`, { token: session.token });
      return true;
    } catch (err) {
      if (err.code !== "room_not_found") return true;
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  return false;
}

async function start() {
  if (!await roomExists()) {
    window.roomlogPage.role = "missing";
    $("state").textContent = "No such room";
    $("state").dataset.state = "failed";
    banner(roomId ? `There is no room named “${roomId}”. Check the link, or create the room in the lobby.`
                  : "This link names no room. Choose one in the lobby.", true);
    return;
  }
  await room.join();
  syncPeers();
  if (watching) { $("controls").classList.add("watching"); return setRole("watching"); }
  const saved = loadDevices();
  const opened = await openPreferred({ cameraId: linkDevices.camera || saved.camera || undefined,
                                       microphoneId: linkDevices.microphone || saved.microphone || undefined });
  window.roomlogPage.devices = { camera: opened.camera, microphone: opened.microphone };
  window.roomlogPage.notice = deviceNotice(opened);
  banner(window.roomlogPage.notice);
  if (!opened.stream) { $("controls").classList.add("watching"); return setRole("watching"); }
  grid.setLocal(room.peerId, session.name, opened.stream);
  try {
    await room.publishMedia(opened.stream, { layers: Number(params.get("layers") || 2) });
  } catch (err) {
    setRole("not-sending");
    throw err;
  }
  setRole("publishing");
  window.roomlogPage.published = true;
  syncPeers();
  $("screen").disabled = false;
  $("mic").disabled = opened.stream.getAudioTracks().length === 0;
  $("camera").disabled = opened.stream.getVideoTracks().length === 0;
}

/** A device button shows its device's state: pressed and "… on" while it sends, "… off" (grey)
 *  while muted; our own tile shows the same as a badge. */
function toggle(button, on) {
  button.setAttribute("aria-pressed", String(on));
  button.classList.toggle("off", !on);
  button.textContent = `${button.dataset.label} ${on ? "on" : "off"}`;
  grid.setLocalMutes({ audio: room.muted.microphone, video: room.muted.camera });
  syncPeers();
}

$("mic").addEventListener("click", async () => {
  const on = room.muted.microphone;
  const done = room.setMicrophoneEnabled(on);
  toggle($("mic"), on);
  await done;
});
$("camera").addEventListener("click", async () => {
  const on = room.muted.camera;
  const done = room.setCameraEnabled(on);
  toggle($("camera"), on);
  document.querySelector(".tile.local")?.classList.toggle("video-off", !on);
  await done;
});
$("screen").addEventListener("click", async () => {
  try {
    if (document.body.classList.contains("sharing")) await room.stopScreen();
    else await room.shareScreen(await openScreen());
  } catch (err) { banner(`Could not share the screen: ${describe(err)}`, true); }
});
room.on("screen", ({ sharing }) => {
  document.body.classList.toggle("sharing", sharing);
  $("screen").textContent = sharing ? "Stop sharing" : "Share screen";
});
$("leave").addEventListener("click", async () => {
  await room.leave();
  location.assign("/web/lobby.html");
});
$("rejoin").addEventListener("click", () => location.reload());
$("copy-link").addEventListener("click", async () => {
  const link = roomLink(roomId, { view: viewLink, absolute: true });
  window.roomlogPage.link = link;
  try {
    await navigator.clipboard.writeText(link);
    $("copy-link").textContent = "Link copied";
  } catch {
    window.prompt("Copy this link to invite someone:", link); // no clipboard access (e.g. plain http)
  }
  setTimeout(() => { $("copy-link").textContent = "Copy link"; }, 2000);
});

start().catch((err) => {
  window.roomlogPage.errors.push({ code: err.code ?? err.name ?? "start", message: err.message });
  const joined = room.state === "connected";
  banner(`${joined ? "Could not send your camera and microphone" : "Could not join the room"}: ${describe(err)}`, true);
  $("rejoin").hidden = false;
  showState();
});
