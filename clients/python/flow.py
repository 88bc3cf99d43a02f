"""Drives the generated Python client through create, append (with a deduped retry), list,
patch and events against a live gateway. Exits non-zero on the first surprise.

usage: flow.py <gateway base url> <directory holding the generated starcite_client package>
"""

import sys
import uuid

sys.path.insert(0, sys.argv[2])

from starcite_client import Client  # noqa: E402
from starcite_client.api.sessions import (  # noqa: E402
    append_event,
    create_session,
    get_session,
    list_events,
    list_sessions,
    patch_session,
)
from starcite_client.models import (  # noqa: E402
    AppendReply,
    AppendRequest,
    AppendRequestPayload,
    CreateSessionRequest,
    CreateSessionRequestMetadataType0,
    ErrorBody,
    EventPageBody,
    PatchSessionBody,
    SessionBody,
    SessionPage,
)


def check(condition, what):
    if not condition:
        sys.exit(f"python client flow failed: {what}")


def main():
    client = Client(base_url=sys.argv[1], raise_on_unexpected_status=True)
    session_id = f"py-{uuid.uuid4().hex}"

    created = create_session.sync(
        client=client,
        body=CreateSessionRequest(
            id=session_id,
            title="From Python",
            metadata=CreateSessionRequestMetadataType0.from_dict({"client": "python"}),
        ),
    )
    check(isinstance(created, SessionBody), f"create returned {created!r}")
    check(created.id == session_id and created.version == 1, "created session fields")

    def append(producer_seq, text):
        return append_event.sync(
            session_id,
            client=client,
            body=AppendRequest(
                type_="message",
                payload=AppendRequestPayload.from_dict({"text": text}),
                actor="agent:python",
                producer_id="python-writer",
                producer_seq=producer_seq,
            ),
        )

    first = append(1, "hello")
    check(isinstance(first, AppendReply) and first.seq == 1 and not first.deduped, f"first append {first!r}")
    retry = append(1, "hello")
    check(isinstance(retry, AppendReply) and retry.seq == 1 and retry.deduped, f"retry {retry!r}")
    second = append(2, "world")
    check(second.seq == 2 and second.last_seq == 2, f"second append {second!r}")

    page = list_sessions.sync(client=client, limit=1000)
    check(isinstance(page, SessionPage), f"list returned {page!r}")
    listed = [s for s in page.sessions if s.id == session_id]
    check(len(listed) == 1 and listed[0].last_seq == 2, "the session is listed with last_seq 2")

    patched = patch_session.sync(
        session_id, client=client, body=PatchSessionBody(title="Renamed", expected_version=1)
    )
    check(isinstance(patched, SessionBody) and patched.title == "Renamed" and patched.version == 2, f"patch {patched!r}")
    conflict = patch_session.sync_detailed(
        session_id, client=client, body=PatchSessionBody(title="Late", expected_version=1)
    )
    check(conflict.status_code == 409, f"stale patch answered {conflict.status_code}")
    check(isinstance(conflict.parsed, ErrorBody) and conflict.parsed.error == "expected_version_conflict", "conflict body")

    events = list_events.sync(session_id, client=client, cursor=0, limit=10)
    check(isinstance(events, EventPageBody), f"events returned {events!r}")
    check([e.seq for e in events.events] == [1, 2] and events.caught_up, "events page")
    check(events.events[1].payload.additional_properties == {"text": "world"}, "event payload")

    fetched = get_session.sync(session_id, client=client)
    check(fetched.title == "Renamed" and fetched.last_seq == 2, "get after patch")
    print("python client flow: ok")


main()
