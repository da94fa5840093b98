"""The roomlog Python client SDK: ``Room.connect(url, token, room)``."""

from client.room import ChatMessage, LocalTrack, RemoteTrack, Room, RoomError

__all__ = ["ChatMessage", "LocalTrack", "RemoteTrack", "Room", "RoomError"]
