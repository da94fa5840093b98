// Recording on the room page: the "recording" indicator every peer sees (the server sends a
// `recording` message when the room's recordings change, and to each peer that joins while
// one runs), start/stop buttons for holders of the `record` (or admin) grant, and the room's
// recordings list; a finished recording plays in the page (its composite when rendered,
// else its first camera track) from a presigned URL.
import { api } from "./session.js";

export class RecordingPanel {
  /** els: {indicator, start, stop, list, player}; room: the SDK Room; session: the signed-in user. */
  constructor(els, room, roomId, session) {
    Object.assign(this, { els, room, roomId, session, active: [] });
    this.canRecord = session.grants.includes("record") || session.grants.includes("admin");
    els.start.hidden = els.stop.hidden = !this.canRecord;
    room.on("recording", (m) => this.show(m.recording_ids ?? []));
    els.start.addEventListener("click", () => this.start());
    els.stop.addEventListener("click", () => this.stop());
    this.show([]);
  }

  show(active) {
    this.active = active;
    const { indicator, start, stop } = this.els;
    indicator.hidden = active.length === 0;
    start.disabled = active.length > 0;
    stop.disabled = active.length === 0;
    document.body.classList.toggle("recorded", active.length > 0);
    this.refresh().catch(() => {});
  }

  async start() {
    this.els.start.disabled = true;
    try {
      await api(`/v1/rooms/${encodeURIComponent(this.roomId)}/recordings`, { method: "POST", body: {}, token: this.session.token });
    } catch (err) { this.els.start.disabled = false; this.fail(err); }
  }

  async stop() {
    this.els.stop.disabled = true;
    for (const id of this.active) {
      try { await api(`/v1/recordings/${encodeURIComponent(id)}`, { method: "DELETE", token: this.session.token }); }
      catch (err) { this.fail(err); }
    }
  }

  async refresh() {
    const rows = await api(`/v1/recordings?room=${encodeURIComponent(this.roomId)}`, { token: this.session.token });
    const list = this.els.list;
    list.replaceChildren(...rows.map((r) => {
      const li = document.createElement("li");
      li.dataset.recordingId = r.recording_id;
      li.dataset.status = r.status;
      const when = new Date(r.started_at).toLocaleTimeString();
      const length = r.duration_s == null ? "" : ` · ${r.duration_s.toFixed(1)} s`;
      li.textContent = `${when} · ${r.status}${length} `;
      if (r.status === "completed") {
        const play = document.createElement("button");
        play.textContent = "Play";
        play.className = "play";
        play.addEventListener("click", () => this.play(r.recording_id));
        li.append(play);
      }
      return li;
    }));
    list.hidden = rows.length === 0;
  }

  async play(recordingId) {
    const r = await api(`/v1/recordings/${encodeURIComponent(recordingId)}`, { token: this.session.token });
    const camera = (r.tracks ?? []).find((t) => t.kind === "camera" && t.file?.url);
    const url = r.composite?.file?.url ?? camera?.file?.url;
    if (!url) return;
    const player = this.els.player;
    player.hidden = false;
    player.src = url;
    player.dataset.recordingId = recordingId;
    await player.play().catch(() => {});
  }

  fail(err) {
    window.roomlogPage?.errors.push({ code: err.code ?? "recording", message: err.message });
  }
}
