"""Recording control against the real stack (api + streams, Kafka, Postgres): start and
stop go through the log, streams decide and command the recorder, the row is projected;
bad input gets its documented code and writes nothing."""

from __future__ import annotations

import httpx

from producers.kafka import EventProducer
from producers.recordings import CompositeRequested, RecordingAccepted, RecordingRequested, RecordingStopping
from producers.sessions import RecordingCompleted, RecordingFailed, StartRecording, StopRecording
from producers.topics import Topics
from tests.harness import (
    Infra,
    of_type,
    read_events,
    unique,
    wait_for,
)
from tests.harness import (
    api_token as token,
)


def bearer(t: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {t}"}


async def test_start_list_stop_and_bad_input(stack: str, infra: Infra, topics: Topics, producer: EventProducer) -> None:
    room = unique("room-")
    async with httpx.AsyncClient(base_url=stack, timeout=20) as client:
        admin = bearer(await token(client, "admin", ["admin"]))
        assert (await client.post("/v1/rooms", json={"room_id": room}, headers=admin)).status_code == 201
        recorder = bearer(await token(client, "rita", ["join", "record"], room=room))
        joiner = bearer(await token(client, "joe", ["join", "publish", "subscribe"], room=room))

        # 403: no record grant; 404: unknown room; nothing written
        r = await client.post(f"/v1/rooms/{room}/recordings", headers=joiner)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        other = unique("room-")
        rec_other = bearer(await token(client, "rita", ["record"], room=other))
        r = await client.post(f"/v1/rooms/{other}/recordings", headers=rec_other)
        assert r.status_code == 404 and r.json()["error"]["code"] == "room_not_found"
        assert not of_type(await read_events(infra.kafka, topics.name("recording.intents")), RecordingRequested)

        # start: 201 with the projected row; streams record the fact and command the recorder
        r = await client.post(f"/v1/rooms/{room}/recordings", json={"segment_s": 5}, headers=recorder)
        assert r.status_code == 201, r.text
        body = r.json()
        recording_id = body["recording_id"]
        assert body["status"] == "recording" and body["room_id"] == room and body["requested_by"] == "rita"
        commands = of_type(await read_events(infra.kafka, topics.name("recording.commands")), StartRecording)
        assert [(c.recording_id, c.segment_s) for c in commands] == [(recording_id, 5)]
        facts = await read_events(infra.kafka, topics.name("recording.facts"))
        assert [f.recording_id for f in of_type(facts, RecordingAccepted)] == [recording_id]

        # 409: a second concurrent start; nothing written
        r = await client.post(f"/v1/rooms/{room}/recordings", headers=recorder)
        assert r.status_code == 409 and r.json()["error"]["code"] == "recording_active"
        intents = of_type(await read_events(infra.kafka, topics.name("recording.intents")), RecordingRequested)
        assert len(intents) == 1

        # lists and reads: a joiner of the room may read, another room's token may not
        listed = (await client.get("/v1/recordings", params={"room": room}, headers=joiner)).json()
        assert [x["recording_id"] for x in listed] == [recording_id]
        r = await client.get(f"/v1/recordings/{recording_id}", headers=rec_other)
        assert r.status_code == 403
        r = await client.get("/v1/recordings/rec-nope", headers=recorder)
        assert r.status_code == 404 and r.json()["error"]["code"] == "recording_not_found"

        # stop: 202, streams record RecordingStopping and command StopRecording; row is `stopping`
        r = await client.delete(f"/v1/recordings/{recording_id}", headers=recorder)
        assert r.status_code == 202 and r.json()["status"] == "stopping"

        async def stopping() -> bool:
            got = await client.get(f"/v1/recordings/{recording_id}", headers=recorder)
            return bool(got.json()["status"] == "stopping")

        await wait_for(stopping, 20, "row stopping")
        assert of_type(await read_events(infra.kafka, topics.name("recording.commands")), StopRecording)
        assert of_type(await read_events(infra.kafka, topics.name("recording.facts")), RecordingStopping)

        # the recorder's report ends it (no recorder runs here: write its report by hand)
        await producer.send(
            topics.name("recording.events"),
            RecordingCompleted.new(
                room_id=room,
                recording_id=recording_id,
                duration_s=4.0,
                size_bytes=1234,
                participants=["joe"],
                codecs=["vp8"],
            ),
        )

        async def completed() -> dict[str, object] | None:
            got = (await client.get(f"/v1/recordings/{recording_id}", headers=recorder)).json()
            return got if got["status"] == "completed" else None

        done = await wait_for(completed, 20, "row completed")
        assert done["size_bytes"] == 1234 and done["participants"] == ["joe"]
        r = await client.delete(f"/v1/recordings/{recording_id}", headers=recorder)
        assert r.status_code == 409 and r.json()["error"]["code"] == "recording_ended"

        # after it ended a new recording may start; closing the room stops it
        r = await client.post(f"/v1/rooms/{room}/recordings", headers=recorder)
        assert r.status_code == 201, r.text
        second = r.json()["recording_id"]
        assert (await client.delete(f"/v1/rooms/{room}", headers=admin)).status_code == 202

        async def stopped_by_close() -> bool:
            stops = of_type(await read_events(infra.kafka, topics.name("recording.commands")), StopRecording)
            return any(s.recording_id == second and s.reason == "room-closed" for s in stops)

        await wait_for(stopped_by_close, 20, "room close stops the recording")
        r = await client.post(f"/v1/rooms/{room}/recordings", headers=recorder)
        assert r.status_code == 404

        # a failed recording has no composite: 409, nothing written
        await producer.send(
            topics.name("recording.events"),
            RecordingFailed.new(room_id=room, recording_id=second, error="test: recorder gone"),
        )

        async def failed() -> bool:
            got = (await client.get(f"/v1/recordings/{second}", headers=recorder)).json()
            return bool(got["status"] == "failed" and got["error"] == "test: recorder gone")

        await wait_for(failed, 20, "row failed")
        r = await client.post(f"/v1/recordings/{second}/composite", json={"layout": "grid"}, headers=recorder)
        assert r.status_code == 409 and r.json()["error"]["code"] == "recording_not_completed"
        r = await client.post(f"/v1/recordings/{second}/composite", json={"layout": "mosaic"}, headers=recorder)
        assert r.status_code == 400
        r = await client.post(f"/v1/recordings/{recording_id}/composite", headers=joiner)
        assert r.status_code == 403
        intents = await read_events(infra.kafka, topics.name("recording.intents"))
        assert not of_type(intents, CompositeRequested)
