// The room page: join, publish camera and microphone (unless watching), the video grid,
// controls (microphone, camera, screen, leave), connection state, quality, speaker and chat.
import { openMedia, openScreen } from "../sdk/devices.js";
import { Room } from "../sdk/room.js";
import { ChatPanel } from "./chat.js";
import { Grid } from "./grid.js";
import { RecordingPanel } from "./recording.js";
import { requireSession, signalingUrls } from "./session.js";

const $ = (id) => document.getElementById(id);
const session = requireSession();
const params = new URLSearchParams(location.search);
const roomId = params.get("room");
const watching = params.get("view") === "1" || !session.grants.includes("publish") && !session.grants.includes("admin");
const SPEAKING_LEVEL = 0.02;

const grid = new Grid($("grid"), $("audio"));
const room = new Room({ urls: signalingUrls(), token: session.token, room: roomId, name: session.name, qualityIntervalMs: 1000 });
window.roomlogPage = { room, grid, published: false, errors: [] };
$("room-name").textContent = roomId;
window.roomlogPage.recording = new RecordingPanel({ indicator: $("rec-indicator"), start: $("rec-start"), stop: $("rec-stop"),
                                                    list: $("rec-list"), player: $("rec-player") }, room, roomId, session);

const LABELS = { idle: "Idle", connecting: "Connecting", connected: "Connected", reconnecting: "Reconnecting",
                 ending: "Leaving", failed: "Failed", calling: "Calling", ringing: "Ringing" };
room.on("state", ({ state }) => {
  $("state").textContent = LABELS[state] ?? state;
  $("state").dataset.state = state;
  $("peer-id").textContent = room.peerId ?? "";
});
room.on("reconnecting", ({ attempt, delayMs }) => banner(`Connection lost — reconnecting (attempt ${attempt}, in ${(delayMs / 1000).toFixed(1)} s)…`));
room.on("reconnected", ({ resumed }) => banner(resumed ? "" : "Rejoined the room as a new participant."));
room.on("gave-up", ({ elapsedMs }) => banner(`Could not reconnect after ${Math.round(elapsedMs / 1000)} s. Gave up.`, true));
room.on("error", ({ code, message }) => { window.roomlogPage.errors.push({ code, message }); banner(`${code}: ${message}`, true); });
for (const kind of ["joined", "resumed", "peer-joined", "peer-updated", "peer-left"]) {
  room.on(kind, () => grid.syncPeers(room.peers, room.peerId));
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

function banner(text, error = false) {
  $("banner").textContent = text;
  $("banner").hidden = !text;
  $("banner").classList.toggle("error", error);
}

function showQuality({ level, name, lossPct, rttMs }) {
  const q = $("quality");
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

async function start() {
  await room.join();
  grid.syncPeers(room.peers, room.peerId);
  $("leave").disabled = false;
  if (watching) { $("controls").classList.add("watching"); return; }
  const stream = await openMedia({ cameraId: params.get("camera") || undefined,
                                   microphoneId: params.get("microphone") || undefined });
  grid.setLocal(room.peerId, session.name, stream);
  await room.publishMedia(stream, { layers: Number(params.get("layers") || 2) });
  window.roomlogPage.published = true;
  for (const id of ["mic", "camera", "screen"]) $(id).disabled = false;
}

function toggle(button, on) {
  button.setAttribute("aria-pressed", String(!on));
  button.classList.toggle("off", !on);
}

$("mic").addEventListener("click", async () => {
  const on = room.muted.microphone;
  toggle($("mic"), on);
  await room.setMicrophoneEnabled(on);
});
$("camera").addEventListener("click", async () => {
  const on = room.muted.camera;
  toggle($("camera"), on);
  document.querySelector(".tile.local")?.classList.toggle("video-off", !on);
  await room.setCameraEnabled(on);
});
$("screen").addEventListener("click", async () => {
  try {
    if (document.body.classList.contains("sharing")) await room.stopScreen();
    else await room.shareScreen(await openScreen());
  } catch (err) { banner(`Screen sharing: ${err.message}`, true); }
});
room.on("screen", ({ sharing }) => {
  document.body.classList.toggle("sharing", sharing);
  $("screen").textContent = sharing ? "Stop sharing" : "Share screen";
});
$("leave").addEventListener("click", async () => {
  await room.leave();
  location.assign("/web/lobby.html");
});

start().catch((err) => { window.roomlogPage.errors.push({ code: err.code ?? "start", message: err.message }); banner(`Could not join: ${err.message}`, true); });
