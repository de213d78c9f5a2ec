"""slixmpp clients against corvid over STARTTLS: they add each other to their rosters and
approve (RFC 6121 subscriptions), see each other's presence go available and unavailable,
chat both ways, see carbons on a second resource, page through the archive, one publishes an
avatar the other is notified of, they create, use and read the history of a MUC room, and a
cut connection is resumed with stream management."""

import argparse
import asyncio
import hashlib
import ssl
import sys

import slixmpp

TIMEOUT = 20
ALICE = "alice@localhost"
BOB = "bob@localhost"


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, cert):
        super().__init__(jid, password)
        self.received = asyncio.Queue()
        self.presence_events = asyncio.Queue()
        self.online = asyncio.Event()
        # Trust exactly corvid's self-signed certificate; the hostname check stays on.
        self.ssl_context = ssl.create_default_context(cafile=cert)
        # STARTTLS only: no direct TLS, and never fall back to plaintext.
        self.enable_starttls = True
        self.enable_direct_tls = False
        self.enable_plaintext = False
        # Subscription requests are answered by the test itself, not automatically.
        self.auto_authorize = None
        self.auto_subscribe = False
        self.subscribe_requests = asyncio.Queue()
        # Entity capabilities carry the +notify interests that PEP filters notifications by.
        for plugin in ("xep_0030", "xep_0115", "xep_0163", "xep_0084", "xep_0045", "xep_0280",
                       "xep_0059", "xep_0313", "xep_0198"):
            self.register_plugin(plugin)
        self.avatars = asyncio.Queue()
        self.groupchat = asyncio.Queue()
        self.add_event_handler("groupchat_message", lambda m: self.groupchat.put_nowait(m))
        self.add_event_handler("avatar_metadata_publish", lambda m: self.avatars.put_nowait(m))
        self.carbons_received = asyncio.Queue()
        self.carbons_sent = asyncio.Queue()
        self.add_event_handler("carbon_received", lambda m: self.carbons_received.put_nowait(m))
        self.add_event_handler("carbon_sent", lambda m: self.carbons_sent.put_nowait(m))
        self.resumed = asyncio.Event()
        self.dropped = asyncio.Event()
        self.add_event_handler("session_resumed", lambda _: self.resumed.set())
        self.add_event_handler("disconnected", lambda _: self.dropped.set())
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("presence_subscribe", lambda p: self.subscribe_requests.put_nowait(str(p["from"].bare)))
        self.add_event_handler("presence_available", lambda p: self.presence_events.put_nowait(("available", str(p["from"]))))
        self.add_event_handler("presence_unavailable", lambda p: self.presence_events.put_nowait(("unavailable", str(p["from"]))))
        self.add_event_handler("failed_auth", lambda _: print(f"{jid}: auth failed", file=sys.stderr))

    async def on_start(self, _event):
        await self.get_roster()
        self.send_presence()
        self.online.set()

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            self.received.put_nowait((str(msg["from"]), msg["body"]))

    async def presence(self, kind, sender):
        """Waits for `kind` presence from the full JID `sender`, skipping others."""
        while True:
            got = await asyncio.wait_for(self.presence_events.get(), TIMEOUT)
            if got == (kind, sender):
                return

    async def wait_subscription(self, contact, state):
        for _ in range(TIMEOUT * 10):
            if contact in self.client_roster and self.client_roster[contact]["subscription"] == state:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.boundjid.bare}: {contact} never reached '{state}'")


async def login(jid, password, cert, port):
    client = Client(jid, password, cert)
    client.connect(host="127.0.0.1", port=port)
    await asyncio.wait_for(client.online.wait(), TIMEOUT)
    return client


async def subscribe_both_ways(alice, bob):
    alice.send_presence(pto=BOB, ptype="subscribe")
    assert await asyncio.wait_for(bob.subscribe_requests.get(), TIMEOUT) == ALICE
    bob.send_presence(pto=ALICE, ptype="subscribed")
    bob.send_presence(pto=ALICE, ptype="subscribe")
    assert await asyncio.wait_for(alice.subscribe_requests.get(), TIMEOUT) == BOB
    alice.send_presence(pto=BOB, ptype="subscribed")
    await alice.wait_subscription(BOB, "both")
    await bob.wait_subscription(ALICE, "both")
    # Each approval shows the approver's presence to the other at once (RFC 6121 §3.1.5).
    await alice.presence("available", BOB + "/interop")
    await bob.presence("available", ALICE + "/interop")
    print("interop: roster subscription both ways ok")


async def presence_comes_and_goes(alice, bob, cert, port):
    bob.disconnect()
    await alice.presence("unavailable", BOB + "/interop")
    bob = await login(BOB + "/interop", "pw-bob", cert, port)
    await alice.presence("available", BOB + "/interop")
    # The new session learns Alice's presence from the server's probe.
    await bob.presence("available", ALICE + "/interop")
    print("interop: presence available/unavailable ok")
    return bob


async def chat(alice, bob):
    alice.send_message(mto=BOB + "/interop", mbody="hello bob", mtype="chat")
    sender, body = await asyncio.wait_for(bob.received.get(), TIMEOUT)
    assert (sender, body) == (ALICE + "/interop", "hello bob"), (sender, body)
    bob.send_message(mto=ALICE, mbody="hello alice", mtype="chat")
    sender, body = await asyncio.wait_for(alice.received.get(), TIMEOUT)
    assert (sender, body) == (BOB + "/interop", "hello alice"), (sender, body)
    print("interop: chat both ways ok")


async def avatar(alice, bob):
    """XEP-0084 through PEP: Alice publishes data and metadata; Bob, subscribed and with
    avatar_metadata+notify in his caps, is notified and fetches the data."""
    data = b"\x89PNG\r\n\x1a\n corvid interop avatar"
    avatar_id = hashlib.sha1(data).hexdigest()
    await alice.plugin["xep_0084"].publish_avatar(data)
    await alice.plugin["xep_0084"].publish_avatar_metadata(
        items=[{"id": avatar_id, "type": "image/png", "bytes": len(data)}]
    )
    while True:
        msg = await asyncio.wait_for(bob.avatars.get(), TIMEOUT)
        if str(msg["from"].bare) == ALICE and msg["pubsub_event"]["items"]["item"]["id"] == avatar_id:
            break
    fetched = await bob.plugin["xep_0084"].retrieve_avatar(ALICE, avatar_id)
    value = fetched["pubsub"]["items"]["item"]["avatar_data"]["value"]
    assert value == data, value
    print("interop: avatar published and notified ok")


async def carbons(alice, bob, cert, port):
    """XEP-0280: a second resource of Alice's, with carbons enabled on both, sees what her
    first resource receives and sends."""
    laptop = await login(ALICE + "/laptop", "pw-alice", cert, port)
    await alice.plugin["xep_0280"].enable()
    await laptop.plugin["xep_0280"].enable()
    bob.send_message(mto=ALICE + "/interop", mbody="carbon in", mtype="chat")
    copy = (await asyncio.wait_for(laptop.carbons_received.get(), TIMEOUT))["carbon_received"]
    assert (str(copy["from"]), copy["body"]) == (BOB + "/interop", "carbon in"), copy
    sender, body = await asyncio.wait_for(alice.received.get(), TIMEOUT)
    assert body == "carbon in", body
    alice.send_message(mto=BOB, mbody="carbon out", mtype="chat")
    copy = (await asyncio.wait_for(laptop.carbons_sent.get(), TIMEOUT))["carbon_sent"]
    assert (str(copy["to"]), copy["body"]) == (BOB, "carbon out"), copy
    _sender, body = await asyncio.wait_for(bob.received.get(), TIMEOUT)
    assert body == "carbon out", body
    print("interop: carbons sent and received ok")
    return laptop


async def archive(bob):
    """XEP-0313: Bob pages through his archive of the conversation with Alice, two messages a
    page (XEP-0059), and finds it all in order."""
    bodies = []
    async for msg in bob.plugin["xep_0313"].iterate(with_jid=slixmpp.JID(ALICE), rsm={"max": 2}):
        bodies.append(msg["mam_result"]["forwarded"]["stanza"]["body"])
    assert bodies == ["hello bob", "hello alice", "carbon in", "carbon out"], bodies
    # Backwards from the newest, one message a page: slixmpp's iterator reads the RSM
    # <first index=''/> as if paging forwards, so it must keep going to the oldest.
    newest_first = []
    async for msg in bob.plugin["xep_0313"].iterate(
        with_jid=slixmpp.JID(ALICE), reverse=True, rsm={"max": 1}
    ):
        newest_first.append(msg["mam_result"]["forwarded"]["stanza"]["body"])
    assert newest_first == list(reversed(bodies)), newest_first
    print("interop: MAM query with paging ok, forwards and backwards")


async def stream_management(alice, bob, port):
    """XEP-0198: Bob's connection is cut without a goodbye; Alice writes meanwhile; slixmpp
    reconnects, resumes the session, and gets the message."""
    assert bob.plugin["xep_0198"].sm_id, "stream management enabled with resumption"
    bob.dropped.clear()
    bob.transport.abort()
    await asyncio.wait_for(bob.dropped.wait(), TIMEOUT)
    alice.send_message(mto=BOB + "/interop", mbody="while you were away", mtype="chat")
    bob.connect(host="127.0.0.1", port=port)
    await asyncio.wait_for(bob.resumed.wait(), TIMEOUT)
    _sender, body = await asyncio.wait_for(bob.received.get(), TIMEOUT)
    assert body == "while you were away", body
    print("interop: stream management resumption ok")


ROOM = "interop@conference.localhost"


async def room_message(client, sender, body):
    while True:
        msg = await asyncio.wait_for(client.groupchat.get(), TIMEOUT)
        if str(msg["from"]) == f"{ROOM}/{sender}" and msg["body"] == body:
            return msg


async def group_chat(alice, bob):
    """XEP-0045: Alice creates a room through the configuration form, Bob joins, they chat,
    and Bob, rejoining, reads the room's history."""
    muc_a = alice.plugin["xep_0045"]
    muc_b = bob.plugin["xep_0045"]
    pres, _subject, _occupants, _history = await muc_a.join_muc_wait(ROOM, "Alice", maxstanzas=0, timeout=TIMEOUT)
    codes = {int(c) for c in pres["muc"]["status_codes"]}
    assert {110, 201} <= codes, codes
    form = await muc_a.get_room_config(ROOM)
    form["type"] = "submit"
    form.set_values({"muc#roomconfig_roomname": "Interop room"})
    await muc_a.set_room_config(ROOM, form)
    await muc_b.join_muc_wait(ROOM, "Bob", maxstanzas=0, timeout=TIMEOUT)

    alice.send_message(mto=ROOM, mbody="hello room", mtype="groupchat")
    await room_message(bob, "Alice", "hello room")
    bob.send_message(mto=ROOM, mbody="hi alice", mtype="groupchat")
    await room_message(alice, "Bob", "hi alice")

    muc_b.leave_muc(ROOM, "Bob")
    await asyncio.sleep(0.5)
    _pres, _subject, _occupants, history = await muc_b.join_muc_wait(ROOM, "Bob", maxstanzas=10, timeout=TIMEOUT)
    bodies = [m["body"] for m in history]
    assert bodies == ["hello room", "hi alice"], bodies
    print("interop: MUC room created, chat and history ok")


async def main(port, cert):
    alice = await login(ALICE + "/interop", "pw-alice", cert, port)
    bob = await login(BOB + "/interop", "pw-bob", cert, port)
    await subscribe_both_ways(alice, bob)
    bob = await presence_comes_and_goes(alice, bob, cert, port)
    await chat(alice, bob)
    laptop = await carbons(alice, bob, cert, port)
    await archive(bob)
    await avatar(alice, bob)
    await group_chat(alice, bob)
    await stream_management(alice, bob, port)
    for client in (alice, bob, laptop):
        client.disconnect()
    print("interop: slixmpp alice <-> bob over STARTTLS ok")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    args = parser.parse_args()
    try:
        asyncio.run(main(args.port, args.cert))
    except Exception as exc:  # report and fail, whatever broke
        print(f"interop: {type(exc).__name__}: {exc!r}", file=sys.stderr)
        sys.exit(1)
