"""In-room text chat: a message is a fact on the room's log, pushed to every peer.

Only a peer in the room may post (``not_joined`` otherwise); the text is re-checked
with the gateway's rule (``producers.fields.chat_text``: ``chat_empty``,
``chat_too_long``). A posted message is a ``ChatMessagePosted`` fact and a ``chat``
notification to every joined peer, the sender included (its copy carries the
``request_id``: the answer to its request). Chat is not room state: nothing is folded.
Duplicate intents are dropped by the room's seen-set (``rooms.handle``). Pure.
"""

from __future__ import annotations

from typing import Any

from producers.errors import InvalidChatText
from producers.fields import chat_text
from producers.rtc import ChatMessagePosted, ChatMessageRequested
from streams.decision import Decision
from streams.errors import Rejection


def chat_message(posted: ChatMessagePosted) -> dict[str, Any]:
    """The ``chat`` message clients get for a posted message."""
    return {
        "type": "chat",
        "id": str(posted.event_id),
        "room": posted.room_id,
        "peer_id": posted.peer_id,
        "identity": posted.identity,
        "name": posted.name,
        "text": posted.text,
        "at": posted.occurred_at.isoformat(),
    }


def on_chat(d: Decision, intent: ChatMessageRequested) -> None:
    sender = d.peer(intent.peer_id)
    if sender is None:
        d.reject(
            intent,
            Rejection.NOT_JOINED,
            f"peer {intent.peer_id} is not in room {intent.room_id}",
            peer_id=intent.peer_id,
            gateway_id=intent.gateway_id,
            session_id=intent.session_id,
        )
        return
    try:
        text = chat_text(intent.text)
    except InvalidChatText as exc:
        d.reject_to(intent, sender, exc.code, exc.message)
        return
    posted = d.fact(ChatMessagePosted, peer_id=sender.peer_id, identity=sender.identity, name=sender.name, text=text)
    message = chat_message(posted)
    d.notify(sender, {**message, "request_id": intent.correlation_id})
    d.notify_others(sender.peer_id, message)
