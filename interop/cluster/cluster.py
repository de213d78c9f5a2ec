"""slixmpp clients logged in to three different nodes of one corvid cluster: Alice on node 1
and Bob on node 2 subscribe to each other and see each other's presence, chat both ways, a
second resource of Alice's on node 3 sees carbons of both directions (XEP-0280), and all three
meet in one MUC room (XEP-0045) whose messages reach every node."""

import argparse
import asyncio
import ssl
import sys

import slixmpp

TIMEOUT = 20
ALICE = "alice@localhost"
BOB = "bob@localhost"
ROOM = "lobby@conference.localhost"


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, cert):
        super().__init__(jid, password)
        self.ssl_context = ssl.create_default_context(cafile=cert)
        self.enable_starttls = True
        self.enable_direct_tls = False
        self.enable_plaintext = False
        self.auto_authorize = None
        self.auto_subscribe = False
        for plugin in ("xep_0030", "xep_0045", "xep_0280"):
            self.register_plugin(plugin)
        self.online = asyncio.Event()
        self.received = asyncio.Queue()
        self.presence_events = asyncio.Queue()
        self.subscribe_requests = asyncio.Queue()
        self.groupchat = asyncio.Queue()
        self.carbons_received = asyncio.Queue()
        self.carbons_sent = asyncio.Queue()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("groupchat_message", lambda m: self.groupchat.put_nowait((str(m["from"]), m["body"])))
        self.add_event_handler("carbon_received", lambda m: self.carbons_received.put_nowait(m["carbon_received"]["body"]))
        self.add_event_handler("carbon_sent", lambda m: self.carbons_sent.put_nowait(m["carbon_sent"]["body"]))
        self.add_event_handler("presence_subscribe", lambda p: self.subscribe_requests.put_nowait(str(p["from"].bare)))
        self.add_event_handler("presence_available", lambda p: self.presence_events.put_nowait(("available", str(p["from"]))))
        self.add_event_handler("presence_unavailable", lambda p: self.presence_events.put_nowait(("unavailable", str(p["from"]))))

    async def on_start(self, _event):
        await self.get_roster()
        self.send_presence()
        self.online.set()

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            self.received.put_nowait((str(msg["from"]), msg["body"]))

    async def presence(self, kind, sender):
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


async def login(jid, password, cert, host, port):
    client = Client(jid, password, cert)
    client.connect(host=host, port=port)
    await asyncio.wait_for(client.online.wait(), TIMEOUT)
    return client


async def main(args):
    hosts, port = args.hosts, args.port
    alice = await login(ALICE + "/one", "pw-alice", args.cert, hosts[0], port)
    bob = await login(BOB + "/two", "pw-bob", args.cert, hosts[1], port)
    # Directory entries travel through Redis: give the bind a moment to be everywhere.
    await asyncio.sleep(0.5)

    alice.send_presence(pto=BOB, ptype="subscribe")
    assert await asyncio.wait_for(bob.subscribe_requests.get(), TIMEOUT) == ALICE
    bob.send_presence(pto=ALICE, ptype="subscribed")
    bob.send_presence(pto=ALICE, ptype="subscribe")
    assert await asyncio.wait_for(alice.subscribe_requests.get(), TIMEOUT) == BOB
    alice.send_presence(pto=BOB, ptype="subscribed")
    await alice.wait_subscription(BOB, "both")
    await bob.wait_subscription(ALICE, "both")
    await alice.presence("available", BOB + "/two")
    await bob.presence("available", ALICE + "/one")
    print("cluster interop: subscription and presence across nodes ok")

    bob.disconnect()
    await alice.presence("unavailable", BOB + "/two")
    bob = await login(BOB + "/two", "pw-bob", args.cert, hosts[1], port)
    await alice.presence("available", BOB + "/two")
    # The new session learns Alice's presence from a probe answered by node 1.
    await bob.presence("available", ALICE + "/one")
    print("cluster interop: presence probe answered across nodes ok")

    alice.send_message(mto=BOB + "/two", mbody="hello bob", mtype="chat")
    assert await asyncio.wait_for(bob.received.get(), TIMEOUT) == (ALICE + "/one", "hello bob")
    bob.send_message(mto=ALICE, mbody="hello alice", mtype="chat")
    assert await asyncio.wait_for(alice.received.get(), TIMEOUT) == (BOB + "/two", "hello alice")
    print("cluster interop: chat both ways across nodes ok")

    alice3 = await login(ALICE + "/three", "pw-alice", args.cert, hosts[2], port)
    await alice3.plugin["xep_0280"].enable()
    await asyncio.sleep(0.5)
    alice.send_message(mto=BOB + "/two", mbody="sent from one", mtype="chat")
    assert await asyncio.wait_for(alice3.carbons_sent.get(), TIMEOUT) == "sent from one"
    bob.send_message(mto=ALICE + "/one", mbody="to one only", mtype="chat")
    assert await asyncio.wait_for(alice3.carbons_received.get(), TIMEOUT) == "to one only"
    print("cluster interop: carbons to a resource on a third node ok")

    occupants = [(alice, "Alice"), (bob, "Bob"), (alice3, "Alice3")]
    # Alice creates the room on node 1 and unlocks it with its configuration form
    # (XEP-0045 §10.1: until then nobody else may enter).
    muc = alice.plugin["xep_0045"]
    await muc.join_muc_wait(ROOM, "Alice", maxstanzas=0, timeout=TIMEOUT)
    form = await muc.get_room_config(ROOM)
    form.set_values({"muc#roomconfig_roomname": "Cluster lobby"})
    await muc.set_room_config(ROOM, form)
    for client, nick in occupants[1:]:
        await client.plugin["xep_0045"].join_muc_wait(ROOM, nick, maxstanzas=0, timeout=TIMEOUT)
    bob.send_message(mto=ROOM, mbody="hello room", mtype="groupchat")
    for client, _nick in occupants:
        while True:
            sender, body = await asyncio.wait_for(client.groupchat.get(), TIMEOUT)
            if body == "hello room":
                assert sender == ROOM + "/Bob", sender
                break
    print("cluster interop: one room with occupants on three nodes ok")

    for client in (alice, bob, alice3):
        client.disconnect()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", nargs=3, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    try:
        asyncio.run(asyncio.wait_for(main(parser.parse_args()), TIMEOUT * 8))
    except Exception as e:  # noqa: BLE001 - any failure fails the run, with its reason
        print(f"cluster interop: FAILED: {e!r}", file=sys.stderr)
        sys.exit(1)
