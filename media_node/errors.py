"""The media node's failures: small named classes, each with a code from ``NodeError``.

A command that fails is reported as ``CommandFailed {code, message}`` on ``media.results``;
streams pass the code on to the peer concerned as a socket ``error`` (docs/protocol.md).
"""

from __future__ import annotations

from enum import StrEnum


class NodeError(StrEnum):
    """``CommandFailed.code``: why the node could not do what a command said."""

    #: ``AddSubscription`` of a source that is not published on this node.
    SOURCE_NOT_ON_NODE = "source_not_on_node"
    #: ``ApplySubscriberAnswer`` while no subscriber offer waits for an answer.
    NO_OFFER_PENDING = "no_offer_pending"
    #: ``SetLayer``/``SetPaused`` for a source the peer does not subscribe to.
    NOT_SUBSCRIBED = "not_subscribed"
    #: Anything else (an SDP aiortc refuses, a transport error): the message says what.
    MEDIA_FAILED = "media_failed"


class NodeFailure(Exception):
    code: NodeError = NodeError.MEDIA_FAILED


class SourceNotOnNode(NodeFailure, LookupError):
    code = NodeError.SOURCE_NOT_ON_NODE


class NoOfferPending(NodeFailure, LookupError):
    code = NodeError.NO_OFFER_PENDING


class NotSubscribed(NodeFailure, LookupError):
    code = NodeError.NOT_SUBSCRIBED


def failure_code(exc: BaseException) -> NodeError:
    """The code a failed command reports: the failure's own, else ``media_failed``."""
    return exc.code if isinstance(exc, NodeFailure) else NodeError.MEDIA_FAILED
