// This browser's chosen camera and microphone (localStorage): device ids belong to one
// browser profile, so they never go into a room link.

const KEY = "roomlog.devices";

/** {camera?, microphone?}: the device ids chosen in the lobby ("" / missing: the default). */
export function loadDevices() {
  try {
    const saved = JSON.parse(localStorage.getItem(KEY) ?? "{}");
    return { camera: typeof saved.camera === "string" ? saved.camera : "",
             microphone: typeof saved.microphone === "string" ? saved.microphone : "" };
  } catch {
    return { camera: "", microphone: "" };
  }
}

export function saveDevices({ camera, microphone }) {
  try {
    localStorage.setItem(KEY, JSON.stringify({ camera: camera ?? "", microphone: microphone ?? "" }));
  } catch { /* storage refused (private mode): the default devices are used */ }
}

/** The address to share for a room: the room only (and `view=1` for watching a broadcast). */
export function roomLink(roomId, { view = false, absolute = false } = {}) {
  const params = new URLSearchParams({ room: roomId });
  if (view) params.set("view", "1");
  const path = `/web/room.html?${params}`;
  return absolute ? `${location.origin}${path}` : path;
}
