// Lobby: device check and selection, the open rooms, create a room, join one; people
// online and 1:1 calls (app/calls.js). `?ice=relay` makes calls relay-only (TURN).
import { checkDevices, listDevices, openMedia } from "../sdk/devices.js";
import { setupCalls } from "./calls.js";
import { describe } from "./messages.js";
import { loadDevices, roomLink, saveDevices } from "./prefs.js";
import { api, el, requireSession, signOut } from "./session.js";

const session = requireSession();
document.getElementById("who").textContent = `${session.name} (${session.identity})`;
document.getElementById("signout").addEventListener("click", signOut);
const $ = (id) => document.getElementById(id);

// room links carry the room only; the chosen devices stay in this browser (prefs.js)
const roomUrl = (roomId, view = false) => roomLink(roomId, { view });

async function loadRooms() {
  const body = $("rooms");
  try {
    const rooms = await api("/v1/rooms", { token: session.token });
    body.replaceChildren(...rooms.map((r) => el("tr", { dataset: { room: r.room_id } },
      el("td", {}, r.room_id), el("td", {}, r.type), el("td", {}, new Date(r.created_at).toLocaleString()),
      el("td", {}, el("a", { class: "button", href: roomUrl(r.room_id) }, r.type === "broadcast" ? "Broadcast" : "Join"),
        r.type === "broadcast" ? el("a", { class: "button secondary", href: roomUrl(r.room_id, true) }, "Watch") : ""))));
    $("rooms-empty").hidden = rooms.length > 0;
  } catch (err) {
    $("rooms-error").textContent = `Could not list rooms: ${describe(err)}`;
  }
}

$("create").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = ev.target;
  const body = { type: form.elements.type.value };
  if (form.elements.room_id.value) body.room_id = form.elements.room_id.value;
  try {
    const room = await api("/v1/rooms", { method: "POST", body, token: session.token });
    location.assign(roomUrl(room.room_id));
  } catch (err) {
    $("create-error").textContent = `Could not create the room: ${describe(err)}`;
  }
});

async function fillDevices() {
  const check = await checkDevices();
  $("device-status").textContent = [`camera ${check.camera ? "ok" : "unavailable"}`,
    `microphone ${check.microphone ? "ok" : "unavailable"}`, ...check.errors].join(" · ");
  const { cameras, microphones } = await listDevices();
  $("camera").replaceChildren(...cameras.map((d, i) => el("option", { value: d.deviceId }, d.label || `Camera ${i + 1}`)));
  $("microphone").replaceChildren(...microphones.map((d, i) => el("option", { value: d.deviceId }, d.label || `Microphone ${i + 1}`)));
  const saved = loadDevices();
  for (const kind of ["camera", "microphone"]) {
    if (saved[kind] && [...$(kind).options].some((o) => o.value === saved[kind])) $(kind).value = saved[kind];
  }
  saveChoice();
  await preview();
}

let previewStream = null;
async function preview() {
  previewStream?.getTracks().forEach((t) => t.stop());
  try {
    previewStream = await openMedia({ microphone: false, cameraId: $("camera").value || undefined });
    $("preview").srcObject = previewStream;
  } catch (err) {
    $("device-status").textContent += ` · preview failed: ${describe(err)}`;
  }
}
const saveChoice = () => saveDevices({ camera: $("camera").value, microphone: $("microphone").value });
$("camera").addEventListener("change", () => { saveChoice(); preview(); });
$("microphone").addEventListener("change", saveChoice);

window.lobbyPage = setupCalls(session, {
  mediaOptions: () => ({ cameraId: $("camera").value || undefined, microphoneId: $("microphone").value || undefined }),
  iceTransportPolicy: new URLSearchParams(location.search).get("ice") === "relay" ? "relay" : "all",
});
loadRooms();
setInterval(loadRooms, 5000);
fillDevices().catch((err) => { $("device-status").textContent = `Device check failed: ${describe(err)}`; });
