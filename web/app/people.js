// The room page's participant list: everyone in the room (ourselves first), with their
// microphone/camera state and whether they only watch (publish nothing), as a <details>
// whose summary counts them. User names only ever go in as textContent.
import { el } from "./session.js";

export class PeoplePanel {
  constructor(summary, list) {
    this.summary = summary;
    this.list = list;
  }

  /** `peers`: the room's peer map (without us); `self`: {peerId, name, muted} or null when not joined. */
  render(peers, self) {
    const rows = [];
    if (self?.peerId) {
      rows.push(this.#row(self.peerId, `${self.name} (you)`, self.publishing ? self.muted : null));
    }
    for (const peer of peers.values()) {
      const publishing = (peer.tracks ?? []).length > 0;
      rows.push(this.#row(peer.peer_id, peer.name || peer.identity,
                          publishing ? { microphone: !!peer.audio_muted, camera: !!peer.video_muted } : null));
    }
    this.list.replaceChildren(...rows);
    this.summary.textContent = `People (${rows.length})`;
  }

  #row(peerId, name, muted) {
    const state = muted === null ? "watching" : [muted.microphone ? "mic off" : "mic on",
                                                 muted.camera ? "camera off" : "camera on"].join(" · ");
    return el("li", { dataset: { peerId } }, el("span", { class: "who" }, name), el("span", { class: "muted" }, state));
  }
}
