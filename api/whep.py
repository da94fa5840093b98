"""WHEP playback and WHIP ingest (docs/protocol.md, "WHEP and WHIP").

``POST /v1/whep/{room}/{source}`` (IETF WHEP draft) and ``POST /v1/whip/{room}`` (RFC 9725)
take an SDP offer (``Content-Type: application/sdp``, ``Authorization: Bearer <token>``) and
answer ``201`` with the SDP answer and a ``Location`` to ``DELETE`` when done.

Each resource is a peer of the room that this gateway holds instead of a socket (a
:class:`MediaSession`, registered with the hub like a socket's session): it writes the same
intents a client's socket writes (``JoinRequested``, ``PublishRequested``,
``SubscriberAnswerSubmitted``, ``LeaveRequested``) and reads the same notifications.

* WHIP: the encoder's offer is the peer's ``publish`` offer; the node's ``publisher-answer``
  is the answer. Its tracks appear to the room as any peer's (``whip-<id>-video0``...).
* WHEP: the peer joins with the ``subscribe`` grant; the node offers its subscriber
  connection as always, and ``api.whep_sdp`` answers each side with the other's parameters,
  so the player and the node connect directly. The node's later offers (renegotiation when
  sources come and go) are answered by the gateway for as long as the resource lives.

Refusals write nothing: ``invalid_sdp``, ``no_video``, ``unsupported_codec``,
``unsupported_media_type``, ``unauthorized``, ``forbidden``, ``room_not_found``. One
exception: whether a source is published is known only from the ``joined`` answer, so an
unknown source (``source_not_found``) leaves the probe peer at once (a ``JoinRequested`` and
a ``LeaveRequested``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from aiortc.sdp import SessionDescription
from fastapi import APIRouter, Depends, Request, Response

from api.errors import (
    ApiError,
    Forbidden,
    InvalidSdp,
    MediaRefused,
    NoVideo,
    ResourceNotFound,
    RoomNotFound,
    SourceNotFound,
    Unavailable,
    UnsupportedCodec,
    UnsupportedMediaType,
)
from api.services import Services, claims, services
from api.tokens import Claims
from api.whep_sdp import SdpRefused, answer_for_node, answer_for_player, candidates_of, parse_offer, video_media
from db.models import Room
from producers.fields import Grant, Id, SourceKind, TrackInfo
from producers.rtc import JoinRequested, LeaveRequested, PublishRequested, SubscriberAnswerSubmitted

log = logging.getLogger(__name__)
router = APIRouter(tags=["whep"])
SDP = "application/sdp"


REFUSALS: dict[str, type[ApiError]] = {
    "invalid_sdp": InvalidSdp,
    "no_video": NoVideo,
    "unsupported_codec": UnsupportedCodec,
    "source_not_found": SourceNotFound,
}


class MediaSession:
    """A WHEP or WHIP resource: a peer of ``room`` held by this gateway."""

    def __init__(self, svc: Services, who: Claims, room: str, kind: str) -> None:
        self.svc, self.who, self.room, self.kind = svc, who, room, kind
        self.resource_id = uuid.uuid4().hex[:16]
        self.session_id = f"S{uuid.uuid4().hex[:16]}"
        self.peer_id: str | None = None
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        svc.hub.register(self.session_id, self.deliver)

    async def deliver(self, message: dict[str, Any]) -> None:
        await self.messages.put(message)

    async def expect(self, types: set[str]) -> dict[str, Any]:
        """The next message of ``types``; an ``error`` raises it (others are skipped)."""
        wait = self.svc.settings.whep_wait_s
        async with asyncio.timeout(wait):
            while True:
                message = await self.messages.get()
                if message.get("type") == "error":
                    code = str(message.get("code"))
                    raise MediaRefused(f"{code}: {message.get('message')}", details={"code": code})
                if message.get("type") in types:
                    return message

    async def join(self, grants: list[Grant]) -> dict[str, Any]:
        identity = f"{self.who.identity[:40]}.{self.kind}-{self.resource_id[:8]}"
        peer_id = f"P{uuid.uuid4().hex[:16]}"
        await self.svc.publish(
            "rtc.intents",
            JoinRequested.new(
                room_id=self.room,
                peer_id=peer_id,
                identity=identity,
                name=f"{self.kind} {self.who.name or self.who.identity}"[:128],
                session_id=self.session_id,
                gateway_id=self.svc.settings.gateway_id,
                grants=sorted(grants),
                correlation_id=self.resource_id,
            ),
        )
        self.peer_id = peer_id
        joined = await self.expect({"joined"})
        self.peer_id = joined["peer_id"]
        return joined

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.svc.hub.unregister(self.session_id)
        if self.peer_id is not None:
            await self.svc.publish("rtc.intents", LeaveRequested.new(room_id=self.room, peer_id=self.peer_id))
            self.peer_id = None


def _resources(request: Request) -> dict[str, MediaSession]:
    state = request.app.state
    if not hasattr(state, "media_sessions"):
        state.media_sessions = {}
    resources: dict[str, MediaSession] = state.media_sessions
    return resources


async def _offer(request: Request) -> SessionDescription:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != SDP:
        raise UnsupportedMediaType(f"the offer is {SDP}, not {kind or 'nothing'}")
    body = await request.body()
    if len(body) > 60_000:
        raise InvalidSdp("the offer is over 60,000 bytes")
    try:
        return parse_offer(body.decode("utf-8", errors="strict"))
    except UnicodeDecodeError:
        raise InvalidSdp("the offer is not UTF-8") from None
    except SdpRefused as exc:
        raise REFUSALS[exc.code](exc.message) from None


def _refused(exc: SdpRefused) -> ApiError:
    return REFUSALS.get(exc.code, InvalidSdp)(exc.message)


async def _open_room(svc: Services, room: str) -> None:
    async with svc.sessions() as session:
        row = await session.get(Room, room, populate_existing=True)
    if row is None or row.status != "open":
        raise RoomNotFound(f"room {room} does not exist or is closed")


def _answer(sdp: str, location: str, resource_id: str) -> Response:
    return Response(
        content=sdp, status_code=201, media_type=SDP, headers={"Location": location, "ETag": f'"{resource_id}"'}
    )


@router.post("/v1/whep/{room}/{source}", status_code=201, response_class=Response)
async def whep(
    room: Id, source: Id, request: Request, who: Claims = Depends(claims), svc: Services = Depends(services)
) -> Response:
    """Play ``source`` of ``room``: the body is the player's SDP offer (recvonly video, ICE
    candidates gathered); the answer is ``201`` ``application/sdp`` with ``Location``."""
    who.require(Grant.SUBSCRIBE, room=room)
    player = await _offer(request)
    try:
        video_media(player)
        candidates_of(player)
    except SdpRefused as exc:
        raise _refused(exc) from None
    await _open_room(svc, room)
    session = MediaSession(svc, who, room, "whep")
    try:
        joined = await session.join([Grant.JOIN, Grant.SUBSCRIBE])
        published = {t["source_id"] for p in joined.get("peers", []) for t in p.get("tracks", [])}
        if source not in published:
            raise SourceNotFound(f"nobody publishes {source} in room {room}")
        answer = await _first_answer(session, player, source)
    except BaseException as exc:
        await session.close()
        if isinstance(exc, TimeoutError):
            raise Unavailable("the media node did not offer the source in time") from None
        raise
    _resources(request)[session.resource_id] = session
    log.info("whep %s plays %s/%s", session.resource_id, room, source, extra={"room_id": room})
    return _answer(answer, f"/v1/whep/{room}/{source}/{session.resource_id}", session.resource_id)


async def _first_answer(session: MediaSession, player: SessionDescription, source: str) -> str:
    """Answer the node's offers until one carries ``source``; then keep answering in the
    background. Returns the answer for the player."""
    while True:
        offer = await session.expect({"subscriber-offer"})
        mid = _mid_of(offer, source)
        await _answer_node(session, offer["sdp"], player, mid)
        if mid is not None:
            try:
                answer = answer_for_player(player, offer["sdp"], mid)
            except SdpRefused as exc:
                raise _refused(exc) from None
            session.task = asyncio.create_task(_keep_answering(session, player, source), name="whep-answers")
            return answer


def _mid_of(offer: dict[str, Any], source: str) -> str | None:
    for s in offer.get("sources", []):
        if s.get("source_id") == source and s.get("mid") is not None:
            return str(s["mid"])
    return None


async def _answer_node(session: MediaSession, sdp: str, player: SessionDescription, mid: str | None) -> None:
    try:
        answer = answer_for_node(sdp, player, mid or "")
    except SdpRefused as exc:
        raise _refused(exc) from None
    assert session.peer_id is not None
    await session.svc.publish(
        "rtc.intents",
        SubscriberAnswerSubmitted.new(room_id=session.room, peer_id=session.peer_id, sdp=answer),
    )


async def _keep_answering(session: MediaSession, player: SessionDescription, source: str) -> None:
    while True:
        message = await session.messages.get()
        if message.get("type") == "subscriber-offer":
            try:
                await _answer_node(session, message["sdp"], player, _mid_of(message, source))
            except ApiError:
                log.exception("whep %s: cannot answer the node's offer", session.resource_id)


@router.delete("/v1/whep/{room}/{source}/{resource_id}", status_code=200, response_class=Response)
async def end_whep(room: Id, source: Id, resource_id: Id, request: Request, who: Claims = Depends(claims)) -> Response:
    """End a WHEP session (the peer leaves the room)."""
    return await _end(request, who, room, resource_id, "whep")


@router.post("/v1/whip/{room}", status_code=201, response_class=Response)
async def whip(
    room: Id, request: Request, who: Claims = Depends(claims), svc: Services = Depends(services)
) -> Response:
    """Publish into ``room`` from an external encoder (RFC 9725): the body is its SDP offer;
    each sending audio/video m-line becomes a track of the room."""
    who.require(Grant.PUBLISH, room=room)
    offer = await _offer(request)
    session = MediaSession(svc, who, room, "whip")
    tracks = []
    for index, media in enumerate(offer.media):
        if media.kind in ("audio", "video") and media.direction in (None, "sendonly", "sendrecv") and media.port:
            kind = SourceKind.CAMERA if media.kind == "video" else SourceKind.MICROPHONE
            source_id = f"whip-{session.resource_id[:8]}-{media.kind}{index}"
            tracks.append(TrackInfo(source_id=source_id, kind=kind, layer="single", mid=media.rtp.muxId))
    if not tracks or any(not t.mid for t in tracks):
        svc.hub.unregister(session.session_id)
        raise InvalidSdp("the offer sends no audio or video m-line with a mid")
    sdp = (await request.body()).decode()
    try:
        await session.join([Grant.JOIN, Grant.PUBLISH])
        assert session.peer_id is not None
        await svc.publish(
            "rtc.intents",
            PublishRequested.new(room_id=room, peer_id=session.peer_id, sdp=sdp, tracks=tracks),
        )
        answer = await session.expect({"publisher-answer"})
    except BaseException as exc:
        await session.close()
        if isinstance(exc, TimeoutError):
            raise Unavailable("the media node did not answer in time") from None
        raise
    _resources(request)[session.resource_id] = session
    log.info("whip %s publishes %s into %s", session.resource_id, [t.source_id for t in tracks], room)
    return _answer(str(answer["sdp"]), f"/v1/whip/{room}/{session.resource_id}", session.resource_id)


@router.delete("/v1/whip/{room}/{resource_id}", status_code=200, response_class=Response)
async def end_whip(room: Id, resource_id: Id, request: Request, who: Claims = Depends(claims)) -> Response:
    """End a WHIP session (the peer leaves; its tracks are unpublished)."""
    return await _end(request, who, room, resource_id, "whip")


async def _end(request: Request, who: Claims, room: str, resource_id: str, kind: str) -> Response:
    resources = _resources(request)
    session = resources.get(resource_id)
    if session is None or session.room != room or session.kind != kind:
        raise ResourceNotFound(f"no {kind} resource {resource_id} on this gateway")
    if who.identity != session.who.identity:
        raise Forbidden("only the identity that created the resource may end it")
    resources.pop(resource_id, None)
    await session.close()
    return Response(status_code=200)
