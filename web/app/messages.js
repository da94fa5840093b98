// What the pages tell a person: every error shown gets a sentence (never an empty message,
// never a bare code), from the api/protocol error code (docs/protocol.md) or the browser's
// DOMException name.

const CODES = {
  unauthorized: "Your sign-in is no longer valid. Sign in again.",
  token_expired: "Your sign-in has expired. Sign in again.",
  forbidden: "You are not allowed to do that in this room.",
  room_not_found: "There is no room with that name.",
  room_exists: "A room with that name already exists.",
  room_full: "The room is full.",
  not_joined: "You are not in the room (any more).",
  already_joined: "This page is already in the room.",
  publisher_exists: "Someone else is already broadcasting in this room.",
  unsupported_room_type: "This kind of room is not supported.",
  peer_not_found: "Your place in the room has expired.",
  rate_limited: "Too many requests: wait a moment and try again.",
  chat_empty: "Type a message first.",
  chat_too_long: "The message is too long (2,000 characters at most).",
  timeout: "The server did not answer in time.",
  disconnected: "The connection to the server was lost.",
  closed: "The connection to the server was closed.",
  unavailable: "The service is not available right now. Try again in a moment.",
  invalid_request: "The request was not accepted.",
  not_found: "Not found.",
  http_error: "The server answered with an error.",
  no_video: "The player offered no video to play.",
  unsupported_codec: "The player supports neither VP8 nor H.264.",
  unsupported_media_type: "The request must carry an SDP offer (application/sdp).",
  resource_not_found: "That playback or ingest session does not exist (any more).",
  media_refused: "The room refused the stream.",
  source_not_found: "That video or audio is no longer published.",
  no_screen_slot: "Screen sharing is not available here.",
  invalid_message: "The page sent a request the server could not read. Reload the page.",
  unknown_type: "The page asked for something the server does not know. Reload the page.",
  invalid_sdp: "The browser's media description was not accepted. Reload the page.",
  unsupported: "That is not supported in this room.",
  call_not_found: "That call no longer exists.",
  call_over: "That call is already over.",
  invite_expired: "The call invitation has expired.",
  source_not_on_node: "That video or audio is not available on the room's media server (any more).",
  no_offer_pending: "The media connection got out of step. Reload the page.",
  not_subscribed: "You are not receiving that video or audio.",
  media_failed: "The media server could not do that.",
  invalid_since: "That time is not valid.",
  method_not_allowed: "The server does not allow that request.",
  recording_not_found: "There is no such recording.",
  recording_active: "This room is already being recorded.",
  recording_ended: "That recording has already ended.",
  recording_not_completed: "That recording is not finished yet.",
};

const DOM = {
  NotAllowedError: "access was refused (allow the camera and microphone for this site in the browser's settings)",
  SecurityError: "access was refused by the browser",
  NotFoundError: "no such device was found",
  OverconstrainedError: "the chosen device is not available on this computer",
  NotReadableError: "the device is busy (another program may be using it)",
  AbortError: "the device could not be started",
  TypeError: "the request was not valid",
};

/** A sentence for `err` (a RoomError/ApiError with `code`, a DOMException, an Error or a string). */
export function describe(err) {
  if (err == null) return "Something went wrong.";
  if (typeof err === "string") return err || "Something went wrong.";
  if (err.code && CODES[err.code]) return CODES[err.code];
  if (err.name && DOM[err.name]) return capitalize(DOM[err.name]) + ".";
  const text = err.detail || err.message || err.name || err.code;
  return text ? capitalize(String(text)) : "Something went wrong.";
}

/** The reason a device kind could not be used, for a notice ("camera: <reason>"). */
export function deviceReason(err) {
  return DOM[err?.name] ?? (err?.message || err?.name || "it could not be opened");
}

/** One line on what the devices came out as ("" when both opened as chosen). */
export function deviceNotice(opened) {
  const { camera, microphone, errors } = opened;
  if (!opened.stream) {
    return `Camera and microphone unavailable (${deviceReason(errors.camera ?? errors.microphone)}): you are ` +
      "watching only. Allow them for this site and choose Rejoin to take part.";
  }
  const parts = [];
  for (const [kind, state] of [["camera", camera], ["microphone", microphone]]) {
    if (state === "default") parts.push(`The chosen ${kind} is not available here: using the default ${kind}.`);
    else if (state === "refused" || state === "unavailable") {
      parts.push(`${kind === "camera" ? "Camera" : "Microphone"} unavailable (${deviceReason(errors[kind])}): ` +
        `${kind === "camera" ? "others hear you but do not see you" : "others see you but do not hear you"}.`);
    }
  }
  return parts.join(" ");
}

const capitalize = (s) => s.charAt(0).toUpperCase() + s.slice(1);
