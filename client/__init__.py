"""The roomlog Python client SDK: ``Room.connect(url, token, room)``."""

from client.room import LocalTrack, RemoteTrack, Room, RoomError

__all__ = ["LocalTrack", "RemoteTrack", "Room", "RoomError"]
