"""The topic registry: every topic's name, key, partitions and retention.

Names get an optional prefix (``ROOMLOG_TOPIC_PREFIX``) so tests and benchmarks run
on their own topics side by side. ``python -m producers.topics create`` creates them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from producers.errors import UnknownTopicError

DAY_MS = 86_400_000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    partitions: int
    retention_ms: int | None = 7 * DAY_MS
    compact: bool = False
    description: str = ""
    #: Has a dead-letter companion ``<name>.dlq`` for payloads consumers cannot parse.
    dlq: bool = True
    extra: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, str]:
        cfg: dict[str, str] = {"cleanup.policy": "compact" if self.compact else "delete"}
        cfg["retention.ms"] = str(self.retention_ms if self.retention_ms is not None else -1)
        cfg.update(self.extra)
        return cfg


# Streams co-partition rtc.intents / rtc.facts / media.results by room id, so those
# share one partition count.
ROOM_PARTITIONS = 4

REGISTRY: tuple[TopicSpec, ...] = (
    TopicSpec("rtc.intents", "room_id", ROOM_PARTITIONS, description="client intents, placements, ticks"),
    TopicSpec("rtc.facts", "room_id", ROOM_PARTITIONS, retention_ms=None, description="room decisions; replayable"),
    TopicSpec("session.events", "user_id", 4, description="sessions, pings, call requests, ticks"),
    TopicSpec("presence.facts", "user_id", 4, description="presence decisions; every gateway reads them"),
    TopicSpec("gateway.notifications", "gateway_id", 4, retention_ms=DAY_MS, description="messages for one gateway"),
    TopicSpec("media.commands", "node_id", 4, retention_ms=DAY_MS, description="commands for one media node"),
    TopicSpec("media.results", "room_id", ROOM_PARTITIONS, description="media node results"),
    TopicSpec("media.nodes", "node_id", 1, retention_ms=DAY_MS, description="heartbeats, placement requests"),
    TopicSpec("node.facts", "node_id", 1, retention_ms=None, description="node liveness decisions"),
    TopicSpec("quality.samples", "room_id", ROOM_PARTITIONS, retention_ms=3 * DAY_MS, description="stats samples"),
    TopicSpec(
        "quality.facts",
        "room_id",
        ROOM_PARTITIONS,
        retention_ms=30 * DAY_MS,
        description="quality decisions (layers, pauses, dynacast)",
    ),
    TopicSpec("station.events", "station_id", 4, description="station registry and command results"),
    TopicSpec("station.commands", "station_id", 4, retention_ms=DAY_MS, description="commands for edge agents"),
    TopicSpec("call.events", "call_id", 4, description="invites and outcomes"),
    TopicSpec("recording.commands", "room_id", 4, description="recorder commands"),
    TopicSpec("recording.events", "room_id", 4, description="recording progress"),
    TopicSpec("recording.intents", "room_id", 4, description="recording start/stop requests"),
    TopicSpec("recording.facts", "room_id", 4, retention_ms=None, description="recording decisions; replayable"),
)

_BY_NAME = {spec.name: spec for spec in REGISTRY}


def spec(name: str) -> TopicSpec:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownTopicError(name) from None


def dlq_spec(source: TopicSpec) -> TopicSpec:
    return TopicSpec(
        f"{source.name}.dlq",
        source.key,
        1,
        retention_ms=30 * DAY_MS,
        dlq=False,
        description=f"dead letters of {source.name}",
    )


def all_specs() -> list[TopicSpec]:
    out = list(REGISTRY)
    out += [dlq_spec(s) for s in REGISTRY if s.dlq]
    return out


@dataclass(frozen=True)
class Topics:
    """Topic names resolved with a prefix. ``Topics("t1-").name("rtc.intents")``."""

    prefix: str = ""

    def name(self, logical: str) -> str:
        spec(logical.removesuffix(".dlq"))
        return f"{self.prefix}{logical}"

    def dlq(self, logical: str) -> str:
        return self.name(logical) + ".dlq"
