// Device check and selection: list cameras and microphones, open the chosen ones at the
// capture format the platform uses (640x360 at 15 fps), and open a screen for sharing.

export const CAPTURE = Object.freeze({ width: 640, height: 360, frameRate: 15 });

/** {cameras, microphones, speakers}: MediaDeviceInfo lists (labels appear after a permission grant). */
export async function listDevices() {
  const all = await navigator.mediaDevices.enumerateDevices();
  return {
    cameras: all.filter((d) => d.kind === "videoinput"),
    microphones: all.filter((d) => d.kind === "audioinput"),
    speakers: all.filter((d) => d.kind === "audiooutput"),
  };
}

/** Open a camera (optionally by deviceId) and/or a microphone; returns a MediaStream. */
export async function openMedia({ camera = true, microphone = true, cameraId, microphoneId, capture = CAPTURE } = {}) {
  const video = camera && {
    width: { ideal: capture.width }, height: { ideal: capture.height }, frameRate: { ideal: capture.frameRate },
    ...(cameraId ? { deviceId: { exact: cameraId } } : {}),
  };
  const audio = microphone && { echoCancellation: true, noiseSuppression: true,
    ...(microphoneId ? { deviceId: { exact: microphoneId } } : {}) };
  return navigator.mediaDevices.getUserMedia({ video, audio });
}

/** Try camera and microphone once: {camera, microphone, errors} (a device check before joining). */
export async function checkDevices() {
  const result = { camera: false, microphone: false, errors: [] };
  for (const kind of ["camera", "microphone"]) {
    try {
      const stream = await openMedia({ camera: kind === "camera", microphone: kind === "microphone" });
      result[kind] = stream.getTracks().some((t) => t.readyState === "live");
      stream.getTracks().forEach((t) => t.stop());
    } catch (err) {
      result.errors.push(`${kind}: ${err.name}: ${err.message}`);
    }
  }
  return result;
}

/** A screen (or window/tab) video track via getDisplayMedia. */
export async function openScreen() {
  const stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
  return stream.getVideoTracks()[0];
}

const REFUSED = new Set(["NotAllowedError", "SecurityError"]); // the person or the browser said no

/** Open the preferred camera and microphone, falling back to the defaults: a device id that does
 *  not exist here (or a busy device) is replaced by the default one; a kind that is refused or
 *  has no working device is left out. Resolves with {stream (null when nothing opened), camera,
 *  microphone: "ok" | "default" | "refused" | "unavailable", errors: {camera?, microphone?}}. */
export async function openPreferred({ cameraId, microphoneId, camera = true, microphone = true, capture = CAPTURE } = {}) {
  const result = { stream: null, camera: camera ? "ok" : "off", microphone: microphone ? "ok" : "off", errors: {} };
  try {
    result.stream = await openMedia({ camera, microphone, cameraId, microphoneId, capture });
    return result;
  } catch { /* each kind on its own below */ }
  const tracks = [];
  for (const [kind, wanted, id] of [["camera", camera, cameraId], ["microphone", microphone, microphoneId]]) {
    if (!wanted) continue;
    const open = (deviceId) => openMedia({ camera: kind === "camera", microphone: kind === "microphone", capture,
                                           cameraId: deviceId, microphoneId: deviceId });
    try {
      tracks.push(...(await open(id)).getTracks());
      continue;
    } catch (err) {
      result.errors[kind] = err;
      result[kind] = REFUSED.has(err.name) ? "refused" : "unavailable";
      if (REFUSED.has(err.name) || !id) continue;
    }
    try { // the chosen one is gone or busy: the default device
      tracks.push(...(await open(undefined)).getTracks());
      result[kind] = "default";
    } catch (err) {
      result.errors[kind] = err;
      result[kind] = REFUSED.has(err.name) ? "refused" : "unavailable";
    }
  }
  result.stream = tracks.length ? new MediaStream(tracks) : null;
  return result;
}
