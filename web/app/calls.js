// People and calls on the lobby page: who is online (presence pushed over the socket),
// a Call button per person, the incoming-call dialog that rings until answered,
// cancelled or timed out, and the call view (remote and local video, state, hang-up).
// The call runs on the lobby's own socket, so the page never navigates during a call.
import { openMedia } from "../sdk/devices.js";
import { Phone } from "../sdk/phone.js";
import { describe } from "./messages.js";
import { el, signalingUrls } from "./session.js";

const $ = (id) => document.getElementById(id);
const LABELS = { idle: "Idle", calling: "Calling", ringing: "Ringing", connecting: "Connecting",
                 connected: "Connected", reconnecting: "Reconnecting", ending: "Ending", failed: "Failed" };
const REASONS = { rejected: "Call declined.", cancelled: "Call cancelled.", timed_out: "No answer.",
                  ended: "Call ended.", refused: "Not reachable.", answered_elsewhere: "Answered on another device.",
                  lost: "Connection lost.", hung_up: "Call ended." };

/** A ring tone (two-tone bursts from an oscillator) while a call rings. */
class Ringer {
  constructor() { this.ctx = null; this.timer = null; this.ringing = false; }

  start() {
    if (this.ringing) return;
    this.ringing = true;
    try {
      this.ctx = new AudioContext();
      const burst = () => {
        const osc = this.ctx.createOscillator(), gain = this.ctx.createGain();
        osc.frequency.value = 440; gain.gain.value = 0.05;
        osc.connect(gain).connect(this.ctx.destination);
        osc.start(); osc.stop(this.ctx.currentTime + 0.8);
      };
      burst();
      this.timer = setInterval(burst, 2000);
    } catch (err) { console.debug("no ring tone", err); }
  }

  stop() {
    this.ringing = false;
    clearInterval(this.timer);
    this.ctx?.close().catch(() => {});
    this.ctx = null;
  }
}

export function setupCalls(session, { mediaOptions = () => ({}), iceTransportPolicy = "all" } = {}) {
  const phone = new Phone({ urls: signalingUrls(), token: session.token, apiBase: "", iceTransportPolicy });
  const ringer = new Ringer();
  const page = { phone, ringer, errors: [], states: [], ended: [], localStream: null };

  phone.on("presence", ({ users }) => renderPeople(users));
  phone.on("state", ({ state }) => {
    page.states.push(state);
    $("call-state").textContent = LABELS[state] ?? state;
    $("call-state").dataset.state = state;
    $("call").hidden = state === "idle" || state === "ringing";
    if (state !== "ringing") { ringer.stop(); $("incoming").close?.(); $("incoming").dataset.ringing = "false"; }
    document.body.dataset.callState = state;
  });
  phone.on("incoming", ({ caller, callerName }) => {
    $("incoming-who").textContent = `${callerName || caller} is calling`;
    $("incoming").dataset.ringing = "true";
    $("incoming").show();
    ringer.start();
  });
  phone.on("ringing", ({ sessions }) => note(`Ringing on ${sessions} device${sessions === 1 ? "" : "s"}…`));
  phone.on("track", ({ track, stream }) => { if (track.kind === "video" || !$("remote-video").srcObject) $("remote-video").srcObject = stream; });
  phone.on("ended", ({ reason }) => { page.ended.push(reason); note(REASONS[reason] ?? reason); stopLocal(); });
  phone.on("reconnecting", () => note("Connection lost — reconnecting…"));
  phone.on("reconnected", () => note(""));
  phone.on("error", (err) => { page.errors.push({ code: err.code, message: err.message }); note(describe(err), true); });

  function note(text, error = false) {
    $("call-note").textContent = text;
    $("call-note").classList.toggle("error", error);
  }

  function renderPeople(users) {
    const others = users.filter((u) => u.user_id !== session.identity && u.status !== "offline");
    $("people-list").replaceChildren(...others.map((u) => el("li", { dataset: { user: u.user_id, status: u.status } },
      el("span", { class: `dot ${u.status}` }), el("span", { class: "who" }, u.name || u.user_id),
      el("span", { class: "muted" }, u.status),
      el("button", { class: "call", onclick: () => dial(u.user_id), ...(u.status === "busy" ? { disabled: "" } : {}) }, "Call"))));
    $("people-empty").hidden = others.length > 0;
  }

  async function localMedia() {
    page.localStream = await openMedia(mediaOptions());
    $("local-video").srcObject = page.localStream;
    return page.localStream;
  }

  function stopLocal() {
    page.localStream?.getTracks().forEach((t) => t.stop());
    page.localStream = null;
    $("local-video").srcObject = null;
    $("remote-video").srcObject = null;
  }

  async function dial(userId) {
    note("");
    try {
      const stream = await localMedia();
      await phone.dial(userId, { stream });
    } catch (err) {
      page.errors.push({ code: err.code ?? "call", message: err.message });
      note(err.code === "rate_limited" ? "Too many calls: wait a minute and try again." : `Could not call: ${describe(err)}`, true);
    }
  }

  $("accept").addEventListener("click", async () => {
    try { phone.accept({ stream: await localMedia() }); } catch (err) { note(`Could not answer: ${describe(err)}`, true); }
  });
  $("reject").addEventListener("click", () => phone.reject());
  $("hangup").addEventListener("click", () => phone.hangup());

  phone.start().then(() => { page.started = true; })
    .catch((err) => { page.errors.push({ code: err.code ?? "start", message: err.message }); note(`Presence unavailable: ${describe(err)}`, true); });
  return page;
}
