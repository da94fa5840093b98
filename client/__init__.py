"""The roomlog Python client SDK: ``Room.connect(url, token, room)``."""

from client.quality import LinkQuality, ParticipantQuality, RoomQuality
from client.room import ChatMessage, LocalTrack, RemoteTrack, Room, RoomError

__all__ = [
    "ChatMessage",
    "LinkQuality",
    "LocalTrack",
    "ParticipantQuality",
    "RemoteTrack",
    "Room",
    "RoomError",
    "RoomQuality",
]
