"""slixmpp clients of two domains hosted by one corvid: each verifies its own domain's
certificate (hostname check on), they chat both ways, the second domain lists its own MUC
service, and both meet in a room there."""

import argparse
import asyncio
import ssl
import sys

import slixmpp
from slixmpp.xmlstream import ET

TIMEOUT = 20
ROOM = "lobby@conference.b.example"


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, cert):
        super().__init__(jid, password)
        self.ssl_context = ssl.create_default_context(cafile=cert)
        self.enable_starttls = True
        self.enable_direct_tls = False
        self.enable_plaintext = False
        self.received = asyncio.Queue()
        self.online = asyncio.Event()
        for plugin in ("xep_0030", "xep_0045"):
            self.register_plugin(plugin)
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", lambda m: self.received.put_nowait((str(m["from"]), m["body"])))
        self.add_event_handler("groupchat_message", lambda m: self.received.put_nowait((str(m["from"]), m["body"])))
        self.add_event_handler("failed_auth", lambda _: print(f"{jid}: auth failed", file=sys.stderr))

    async def on_start(self, _event):
        await self.get_roster()
        self.send_presence()
        self.online.set()

    async def expect(self, body):
        while True:
            sender, text = await asyncio.wait_for(self.received.get(), TIMEOUT)
            if text == body:
                return sender


async def run(port, certs):
    alice = Client("alice@localhost/sx", "pw-alice", f"{certs}/localhost.crt")
    bob = Client("bob@b.example/sx", "pw-bob", f"{certs}/b.example.crt")
    for client in (alice, bob):
        client.connect(host="127.0.0.1", port=port)
    await asyncio.wait_for(asyncio.gather(alice.online.wait(), bob.online.wait()), TIMEOUT)

    alice.send_message(mto="bob@b.example", mbody="hello b", mtype="chat")
    assert await bob.expect("hello b") == "alice@localhost/sx"
    bob.send_message(mto="alice@localhost", mbody="hello localhost", mtype="chat")
    assert await alice.expect("hello localhost") == "bob@b.example/sx"

    items = await bob.plugin["xep_0030"].get_items(jid="b.example", timeout=TIMEOUT)
    listed = [item[0] for item in items["disco_items"]["items"]]
    # The domain's own services: its MUC and its upload service (XEP-0363), not localhost's.
    assert sorted(listed) == ["conference.b.example", "upload.b.example"], listed

    await alice.plugin["xep_0045"].join_muc_wait(ROOM, "alice", timeout=TIMEOUT)
    instant = alice.make_iq_set(ito=ROOM)
    instant.append(ET.fromstring(
        "<query xmlns='http://jabber.org/protocol/muc#owner'>"
        "<x xmlns='jabber:x:data' type='submit'/></query>"))
    await instant.send(timeout=TIMEOUT)
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", timeout=TIMEOUT)
    bob.send_message(mto=ROOM, mbody="hello room", mtype="groupchat")
    assert await alice.expect("hello room") == f"{ROOM}/bob"

    for client in (alice, bob):
        client.disconnect()
    print("virtual hosts: chat across two hosted domains, MUC service per domain: ok")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--certs", required=True, help="folder with <domain>.crt files")
    args = parser.parse_args()
    asyncio.run(run(args.port, args.certs))


if __name__ == "__main__":
    main()
