"""The quality decision: per subscriber and video source, which layer to forward, or none.

Pure: state in, decisions out; time comes only from the samples (``occurred_at``). The
state of a room is a JSON-able dict (a changelog entry) that ``decide`` updates in place:

* ``w``: a window per ``<subscriber>|<source>``: the current layer (``high``/``mid``/``low``
  or ``paused``), when it last changed, the recent (time, loss) samples, since when the loss
  has been good, the layers the source has, and its publisher;
* ``rates``: the latest bitrate of each published encoding (``<source>/<layer>``, kbit/s);
* ``src``: the encodings each source has on the node (from the samples);
* ``enc``: the encodings dynacast last told each publisher to send (``<publisher>|<source>``).

Rules (the mediasoup plan's thresholds, with hysteresis; docs/quality.md):

* **down at once**: the loss that counts is ``min(latest, 1.5 × mean of the last two
  samples)`` — a real rise counts within one sample, a lone spike is damped. At 5 % or more
  the subscriber goes to mid, 10 % low, 20 % video paused (audio is never paused); one step
  per sample unless the sample before also calls for the lower band. A
  bandwidth estimate below half the current layer's bitrate for two samples in a row
  moves it to the highest layer whose bitrate fits.
* **up slowly**: one layer up only after the loss stayed below the next layer's bar (3 %
  for high, 6 % for mid) for 10 s and 10 s after the last change, and not when the
  bandwidth estimate would push it straight back down.
* **paused**: nothing is forwarded, so the video leg shows no loss; the subscriber's audio
  from the same publisher (same transport) is the signal. Under 10 % for 10 s resumes the
  video at the layer that loss supports (< 3 % high, < 6 % mid, else low).

Replaying a room's samples in log order through ``decide`` yields the same decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from producers.media import QualitySample

RANK = {"low": 0, "mid": 1, "high": 2}
BY_RANK = ("low", "mid", "high")
#: The network-quality level a layer implies at best (the web SDK's 1-6 scale).
LAYER_LEVEL = {"high": 1, "mid": 3, "low": 4, "paused": 5}
LOSS_LEVELS = ((1.0, 1), (5.0, 2), (10.0, 3), (20.0, 4))


@dataclass(frozen=True)
class QualityConfig:
    mid_at_pct: float = 5.0
    low_at_pct: float = 10.0
    pause_at_pct: float = 20.0
    #: loss below which a layer may be climbed to (to high, to mid), and video resumed
    up_to_high_pct: float = 3.0
    up_to_mid_pct: float = 6.0
    resume_below_pct: float = 10.0
    #: how long loss must stay good before a step up or a resume, and the least time
    #: between a change and the next step up
    up_after_s: float = 10.0
    #: the node's sampling interval (a sample covers the interval before its time)
    sample_interval_s: float = 2.0
    #: samples kept per window; windows without a sample for this long are forgotten
    history_s: float = 12.0
    forget_after_s: float = 30.0
    #: a bandwidth estimate below this share of the current layer's bitrate does not fit
    bandwidth_fit: float = 0.5


@dataclass(frozen=True)
class Change:
    """One decision: ``peer_id`` (the subscriber) gets ``layer`` of ``source_id``."""

    peer_id: str
    source_id: str
    publisher_peer_id: str | None
    layer: str
    previous: str
    reason: str
    loss_pct: float
    level: int
    bandwidth_kbps: float | None


def new_state() -> dict[str, Any]:
    return {"w": {}, "rates": {}, "enc": {}, "src": {}}


def level_for(layer: str, loss_pct: float) -> int:
    by_loss = next((level for bound, level in LOSS_LEVELS if loss_pct < bound), 5)
    return max(by_loss, LAYER_LEVEL[layer])


def available(layers: list[str]) -> list[str]:
    """The layers a decision can choose from, lowest first (a single encoding is ``high``)."""
    found = [layer for layer in BY_RANK if layer in layers]
    return found or ["high"]


def fit(target: str, layers: list[str]) -> str:
    """The highest available layer not above ``target`` (the lowest if none is)."""
    usable = available(layers)
    below = [layer for layer in usable if RANK[layer] <= RANK[target]]
    return below[-1] if below else usable[0]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def decide(state: dict[str, Any], sample: QualitySample, config: QualityConfig) -> list[Change]:
    """Fold one node sample into the room's state; the decisions it causes (usually none)."""
    if sample.source != "node" or not sample.source_id:
        return []
    t = sample.occurred_at.timestamp()
    if sample.layers:
        state.setdefault("src", {})[sample.source_id] = list(sample.layers)
    if sample.leg.startswith("pub/"):
        if sample.layer:
            state["rates"][f"{sample.source_id}/{sample.layer}"] = sample.bitrate_kbps
        return []
    if not sample.leg.startswith("sub/"):
        return []
    _forget_stale(state, t, config)
    if sample.kind == "audio":
        return _audio(state, sample, t, config)
    key = f"{sample.peer_id}|{sample.source_id}"
    w = state["w"].get(key)
    if w is None:
        # the window's layer is the quality cap, not what the subscriber asked for (the node
        # forwards the lower of the two): every window starts uncapped
        w = state["w"][key] = {
            "layer": "high",
            "at": None,
            "hist": [],
            "good": None,
            "bwlow": 0,
            "audio": False,
            "pub": sample.publisher_peer_id,
            "layers": [],
            "source_id": sample.source_id,
        }
    w["layers"] = list(sample.layers)
    w["seen"] = t
    if w["layer"] == "paused":
        if w["audio"]:
            return []  # the subscriber's audio from this publisher is the signal while paused
        return _paused(w, sample, t, sample.loss_pct, config)
    _remember(w, t, sample.loss_pct, config)
    return _playing(state, w, sample, t, config)


def _remember(w: dict[str, Any], t: float, loss: float, config: QualityConfig) -> None:
    hist = w["hist"]
    hist.append([t, loss])
    while hist and hist[0][0] < t - config.history_s:
        hist.pop(0)


def _forget_stale(state: dict[str, Any], t: float, config: QualityConfig) -> None:
    """Drop windows without a sample for ``forget_after_s`` (looked for every 10 s of sample time)."""
    if t - state.get("swept", float("-inf")) < 10.0:
        return
    state["swept"] = t
    windows = state["w"]
    for key in [k for k, w in windows.items() if w.get("seen", t) < t - config.forget_after_s]:
        del windows[key]


def _audio(state: dict[str, Any], sample: QualitySample, t: float, config: QualityConfig) -> list[Change]:
    """A subscriber's audio leg: the loss signal of its paused video from the same publisher."""
    changes = []
    prefix = f"{sample.peer_id}|"
    for key, w in state["w"].items():
        if key.startswith(prefix) and w["pub"] == sample.publisher_peer_id and w["layer"] == "paused":
            w["audio"] = True
            changes += _paused(w, sample, t, sample.loss_pct, config)
    return changes


def _change(w: dict[str, Any], sample: QualitySample, layer: str, reason: str, loss: float, t: float) -> Change:
    previous = w["layer"]
    w.update(layer=layer, at=t, good=None, bwlow=0)
    source_id = sample.source_id if sample.kind != "audio" else None
    return Change(
        peer_id=sample.peer_id,
        source_id=source_id or "",
        publisher_peer_id=w["pub"],
        layer=layer,
        previous=previous,
        reason=reason,
        loss_pct=round(loss, 2),
        level=level_for(layer, loss),
        bandwidth_kbps=sample.bandwidth_kbps,
    )


def _good_for(w: dict[str, Any], t: float, good: bool, config: QualityConfig) -> float:
    """Track the run of good samples; how long (s) the loss has been good."""
    if not good:
        w["good"] = None
        return 0.0
    if w["good"] is None:
        w["good"] = t
    since: float = w["good"]
    return t - since + config.sample_interval_s


def _settled(w: dict[str, Any], t: float, config: QualityConfig) -> bool:
    return w["at"] is None or t - w["at"] >= config.up_after_s


def _paused(w: dict[str, Any], sample: QualitySample, t: float, loss: float, config: QualityConfig) -> list[Change]:
    _remember(w, t, loss, config)
    good_s = _good_for(w, t, loss < config.resume_below_pct, config)
    if good_s < config.up_after_s or not _settled(w, t, config):
        return []
    run = _mean([x for at, x in w["hist"] if at >= w["good"]])
    target = "high" if run < config.up_to_high_pct else "mid" if run < config.up_to_mid_pct else "low"
    change = _change(w, sample, fit(target, w["layers"]), "resumed", run, t)
    return [_with_source(change, w, sample)]


def _with_source(change: Change, w: dict[str, Any], sample: QualitySample) -> Change:
    """Changes caused by an audio sample name the paused video source, not the audio."""
    if change.source_id:
        return change
    return Change(**{**change.__dict__, "source_id": w.get("source_id") or ""})


def _playing(
    state: dict[str, Any], w: dict[str, Any], sample: QualitySample, t: float, config: QualityConfig
) -> list[Change]:
    hist = w["hist"]
    latest = hist[-1][1]
    effective = min(latest, 1.5 * _mean([x for _, x in hist[-2:]]))
    current = w["layer"]
    layers = w["layers"]
    target, reason = _band(effective, layers, config), "loss"
    by_bandwidth = _bandwidth_target(state, w, sample, config)
    if by_bandwidth is not None and RANK[by_bandwidth] < RANK.get(target, -1):
        target, reason = by_bandwidth, "bandwidth"
    ladder = ["paused", *available(layers)]
    if ladder.index(target) < ladder.index(current):
        # more than one step down at once only when the sample before says so too: a single
        # noisy sample (few packets) moves one step
        confirmed = _band(min(x for _, x in hist[-2:]), layers, config) if len(hist) > 1 else None
        if ladder.index(current) - ladder.index(target) > 1 and (
            confirmed is None or ladder.index(confirmed) > ladder.index(target)
        ):
            target = ladder[ladder.index(current) - 1]
        return [_change(w, sample, target, reason, effective, t)]
    usable = available(layers)
    above = [layer for layer in usable if RANK[layer] > RANK[current]]
    if not above:
        w["good"] = None
        return []
    step = above[0]
    bar = config.up_to_high_pct if step == "high" else config.up_to_mid_pct
    good_s = _good_for(w, t, latest < bar, config)
    if good_s < config.up_after_s or not _settled(w, t, config) or not _fits(state, sample, step, config):
        return []
    return [_change(w, sample, step, "recovered", _mean([x for at, x in hist if at >= w["good"]]), t)]


def _band(loss: float, layers: list[str], config: QualityConfig) -> str:
    """The layer (or ``paused``) a loss calls for, among the source's layers."""
    if loss >= config.pause_at_pct:
        return "paused"
    by_loss = "low" if loss >= config.low_at_pct else "mid" if loss >= config.mid_at_pct else "high"
    return fit(by_loss, layers)


def _rate(state: dict[str, Any], source_id: str | None, layer: str) -> float | None:
    rate: float | None = state["rates"].get(f"{source_id}/{layer}")
    return rate if rate else None


def _bandwidth_target(
    state: dict[str, Any], w: dict[str, Any], sample: QualitySample, config: QualityConfig
) -> str | None:
    """The highest layer that fits the subscriber's estimate, after two short samples in a row."""
    estimate = sample.bandwidth_kbps
    rate = _rate(state, sample.source_id, w["layer"])
    if estimate is None or rate is None or estimate >= config.bandwidth_fit * rate:
        w["bwlow"] = 0
        return None
    w["bwlow"] += 1
    if w["bwlow"] < 2:
        return None
    fitting = [
        layer
        for layer in available(w["layers"])
        if (r := _rate(state, sample.source_id, layer)) is not None and estimate >= config.bandwidth_fit * r
    ]
    return fitting[-1] if fitting else available(w["layers"])[0]


def _fits(state: dict[str, Any], sample: QualitySample, layer: str, config: QualityConfig) -> bool:
    rate = _rate(state, sample.source_id, layer)
    return sample.bandwidth_kbps is None or rate is None or sample.bandwidth_kbps >= config.bandwidth_fit * rate
