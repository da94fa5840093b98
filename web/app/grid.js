// The video grid: one tile per person (their camera, or their initial while it is off)
// and one per shared screen; names and mute badges from the room's peer list; the
// active speaker's tile is highlighted; each tile shows its network-quality level (own tile:
// uplink; a remote person's tiles: what we receive from them) as bars with a tooltip of
// loss/RTT/bitrate, and as `data-quality-level` on the tile. Remote audio plays through hidden <audio>s.
import { LEVEL_NAMES } from "../sdk/quality.js";
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
        el("div", { class: "label" }, el("span", { class: "name" }, name), el("span", { class: "badges" })),
        el("span", { class: "quality tile-quality", dataset: { level: "0" }, title: "network quality: not measured yet" },
          el("span", { class: "bars" }, el("i"), el("i"), el("i"), el("i"), el("i")), el("span", { class: "text" }, "")));
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

  /** Our own mute state as the badge of our tile (the others see it on theirs from the server). */
  setLocalMutes({ audio, video }) {
    const tile = this.tiles.get("local");
    if (tile) tile.querySelector(".badges").textContent = [audio ? "mic off" : "", video ? "camera off" : ""]
      .filter(Boolean).join(" · ");
  }

  /** Keep one tile per peer, named, with their mute state; drop tiles of peers who left. */
  syncPeers(peers, selfId, { publishersOnly = false } = {}) {
    if (this.tiles.has("local") && selfId) this.tiles.get("local").dataset.peerId = selfId;
    for (const peer of peers.values()) {
      // a broadcast's viewers publish nothing: no blank tile for each of them
      if (publishersOnly && !(peer.tracks ?? []).length && !this.tiles.has(`${peer.peer_id}/camera`)) continue;
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

  /** Show `q` ({level, lossPct, rttMs, bitrateKbps}) on the local tile (`local`) or on every tile of a remote peer. */
  setQuality(peerId, q, { local = false } = {}) {
    for (const [key, tile] of this.tiles) {
      if (local ? key !== "local" : key === "local" || tile.dataset.peerId !== peerId) continue;
      const level = String(q.level);
      tile.dataset.qualityLevel = level;
      const indicator = tile.querySelector(".tile-quality");
      indicator.dataset.level = level;
      indicator.querySelector(".text").textContent = `${level} · ${LEVEL_NAMES[q.level]}`;
      const rtt = q.rttMs == null ? "?" : Math.round(q.rttMs);
      const pushed = q.pushedLevel ? ` (server: ${q.pushedLevel})` : "";
      indicator.title = `${local ? "uplink" : "downlink"} ${level} · ${LEVEL_NAMES[q.level]}${pushed}: loss ` +
        `${q.lossPct.toFixed(1)} %, RTT ${rtt} ms, ${Math.round(q.bitrateKbps)} kbit/s`;
    }
  }

  highlight(peerId) {
    for (const tile of this.tiles.values()) tile.classList.toggle("speaking", !!peerId && tile.dataset.peerId === peerId);
  }
}
