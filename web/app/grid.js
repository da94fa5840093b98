// The video grid: one tile per person (their camera, or their initial while it is off)
// and one per shared screen; names and mute badges from the room's peer list; the
// active speaker's tile is highlighted. Remote audio plays through hidden <audio>s.
import { el } from "./session.js";

export class Grid {
  constructor(container, audioBox) {
    this.container = container;
    this.audioBox = audioBox;
    this.tiles = new Map(); // key -> tile element
  }

  #tile(key, { peerId, sourceId = "", kind = "camera", name = "" }) {
    let tile = this.tiles.get(key);
    if (!tile) {
      const video = el("video", { autoplay: "", playsinline: "" });
      video.muted = true; // sound goes through the <audio> elements
      tile = el("div", { class: "tile", dataset: { key, peerId, kind } }, video,
        el("div", { class: "initial" }, (name || "?").slice(0, 1).toUpperCase()),
        el("div", { class: "label" }, el("span", { class: "name" }, name), el("span", { class: "badges" })));
      this.tiles.set(key, tile);
      this.container.append(tile);
    }
    if (sourceId) tile.dataset.sourceId = sourceId;
    if (name) this.#rename(tile, name);
    return tile;
  }

  #rename(tile, name) {
    tile.dataset.name = name;
    tile.querySelector(".name").textContent = tile.dataset.kind === "screen" ? `${name} (screen)` : name;
    tile.querySelector(".initial").textContent = name.slice(0, 1).toUpperCase();
  }

  setLocal(peerId, name, stream) {
    const tile = this.#tile("local", { peerId: peerId ?? "local", name: `${name} (you)` });
    tile.classList.add("local");
    tile.querySelector("video").srcObject = stream;
    tile.classList.toggle("has-video", stream.getVideoTracks().length > 0);
  }

  /** Keep one tile per peer, named, with their mute state; drop tiles of peers who left. */
  syncPeers(peers, selfId) {
    if (this.tiles.has("local") && selfId) this.tiles.get("local").dataset.peerId = selfId;
    for (const peer of peers.values()) {
      const tile = this.#tile(`${peer.peer_id}/camera`, { peerId: peer.peer_id, name: peer.name || peer.identity });
      tile.classList.toggle("video-off", !!peer.video_muted);
      tile.classList.toggle("audio-off", !!peer.audio_muted);
      tile.querySelector(".badges").textContent = [peer.audio_muted ? "mic off" : "", peer.video_muted ? "camera off" : ""]
        .filter(Boolean).join(" · ");
      for (const t of this.tiles.values()) if (t.dataset.peerId === peer.peer_id && t.dataset.kind === "screen") {
        this.#rename(t, peer.name || peer.identity);
      }
    }
    for (const [key, tile] of this.tiles) {
      if (key !== "local" && !peers.has(tile.dataset.peerId)) this.#remove(key);
    }
  }

  attach(remote, peers) {
    const peer = peers.get(remote.peerId);
    const name = peer?.name || peer?.identity || remote.peerId;
    if (remote.mediaKind === "audio") {
      const audio = el("audio", { autoplay: "", dataset: { key: remote.key } });
      audio.srcObject = remote.stream;
      this.audioBox.append(audio);
      return;
    }
    const key = remote.kind === "screen" ? remote.key : `${remote.peerId}/camera`;
    const tile = this.#tile(key, { peerId: remote.peerId, sourceId: remote.sourceId, kind: remote.kind, name });
    tile.querySelector("video").srcObject = remote.stream;
    tile.classList.add("has-video");
  }

  detach(remote) {
    this.audioBox.querySelector(`audio[data-key="${CSS.escape(remote.key)}"]`)?.remove();
    if (remote.kind === "screen") return this.#remove(remote.key);
    const tile = this.tiles.get(`${remote.peerId}/camera`);
    if (tile && tile.dataset.sourceId === remote.sourceId) {
      tile.querySelector("video").srcObject = null;
      tile.classList.remove("has-video");
    }
  }

  #remove(key) {
    this.tiles.get(key)?.remove();
    this.tiles.delete(key);
  }

  highlight(peerId) {
    for (const tile of this.tiles.values()) tile.classList.toggle("speaking", !!peerId && tile.dataset.peerId === peerId);
  }
}
