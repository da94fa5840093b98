// The room page's chat panel: every message with the sender's name and time, and a form to
// post one. User text only ever goes into the page as textContent (never as HTML).
import { describe } from "./messages.js";

const MAX_SHOWN = 500; // older messages drop off the panel

export class ChatPanel {
  /** `post(text)` sends a message (Room.sendChat); its errors are shown under the log. */
  constructor({ log, form, input, send, error }, post) {
    Object.assign(this, { log, form, input, send, error, post });
    form.addEventListener("submit", (ev) => { ev.preventDefault(); this.#submit(); });
  }

  setEnabled(enabled) {
    this.input.disabled = !enabled;
    this.send.disabled = !enabled;
  }

  add({ id, peerId, identity, name, text, at, own }) {
    const item = document.createElement("li");
    item.className = own ? "chat-message own" : "chat-message";
    Object.assign(item.dataset, { id, peerId });
    const who = document.createElement("span");
    who.className = "chat-name";
    who.textContent = name || identity || peerId;
    const when = document.createElement("time");
    when.className = "chat-time";
    when.dateTime = at.toISOString();
    when.textContent = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    const body = document.createElement("span");
    body.className = "chat-text";
    body.textContent = text;
    item.append(who, when, body);
    const atBottom = this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 40;
    this.log.append(item);
    while (this.log.childElementCount > MAX_SHOWN) this.log.firstElementChild.remove();
    if (atBottom || own) item.scrollIntoView({ block: "end" });
  }

  async #submit() {
    const text = this.input.value;
    if (!text.trim()) return;
    this.send.disabled = true;
    try {
      await this.post(text);
      this.input.value = "";
      this.#showError("");
    } catch (err) {
      this.#showError(`Not sent: ${describe(err)}`);
    } finally {
      this.send.disabled = this.input.disabled;
      this.input.focus();
    }
  }

  #showError(text) {
    this.error.textContent = text;
    this.error.hidden = !text;
  }
}
