"""Bookmarks across protocols: one slixmpp client publishes a room with XEP-0402 (a PEP item
with the publish-options the XEP asks for), another resource of the same account reads it as
XEP-0048 bookmarks through XEP-0049 Private XML Storage, adds a second room there, and the
first client finds both rooms in its XEP-0402 node; removing a room on the XEP-0049 side
retracts it from the XEP-0402 node."""

import argparse
import asyncio
import ssl
import sys

import slixmpp
from slixmpp.plugins.xep_0048.stanza import Bookmarks
from slixmpp.plugins.xep_0402.stanza import Conference

TIMEOUT = 20
NATIVE = "urn:xmpp:bookmarks:1"


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, cert):
        super().__init__(jid, password)
        self.ssl_context = ssl.create_default_context(cafile=cert)
        self.enable_starttls = True
        self.enable_direct_tls = False
        self.enable_plaintext = False
        for plugin in ("xep_0030", "xep_0004", "xep_0060", "xep_0049", "xep_0048", "xep_0402"):
            self.register_plugin(plugin)
        self.online = asyncio.Event()
        self.add_event_handler("session_start", self.on_start)

    async def on_start(self, _event):
        self.send_presence()
        self.online.set()


async def login(jid, password, cert, port):
    client = Client(jid, password, cert)
    client.connect(host="127.0.0.1", port=port)
    await asyncio.wait_for(client.online.wait(), TIMEOUT)
    return client


def publish_options(client):
    form = client.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden",
                   value="http://jabber.org/protocol/pubsub#publish-options")
    for var, value in (("pubsub#persist_items", "true"), ("pubsub#max_items", "max"),
                       ("pubsub#send_last_published_item", "never"),
                       ("pubsub#access_model", "whitelist")):
        form.add_field(var=var, value=value)
    return form


async def native_rooms(client):
    items = await client.plugin["xep_0060"].get_items("alice@localhost", NATIVE, timeout=TIMEOUT)
    rooms = {}
    for item in items["pubsub"]["items"]:
        rooms[item["id"]] = item["conference"]
    return rooms


async def legacy_rooms(client):
    answer = await client.plugin["xep_0048"].get_bookmarks(method="xep_0049", timeout=TIMEOUT)
    return {str(c["jid"]): c for c in answer["private"]["bookmarks"]["conferences"]}


async def main(port, cert):
    native = await login("alice@localhost/native", "pw-alice", cert, port)
    legacy = await login("alice@localhost/legacy", "pw-alice", cert, port)

    conference = Conference()
    conference["name"] = "Interop room"
    conference["autojoin"] = True
    conference["nick"] = "alice"
    await native.plugin["xep_0060"].publish(
        "alice@localhost", NATIVE, id="interop@conference.localhost", payload=conference,
        options=publish_options(native), timeout=TIMEOUT)

    rooms = await legacy_rooms(legacy)
    assert set(rooms) == {"interop@conference.localhost"}, rooms
    room = rooms["interop@conference.localhost"]
    assert room["name"] == "Interop room" and room["nick"] == "alice", room
    assert room["autojoin"], room

    bookmarks = Bookmarks()
    bookmarks.add_conference("interop@conference.localhost", "alice", name="Interop room",
                             autojoin=True)
    bookmarks.add_conference("legacy@conference.localhost", "al", name="From XEP-0048")
    await legacy.plugin["xep_0048"].set_bookmarks(bookmarks, method="xep_0049", timeout=TIMEOUT)

    rooms = await native_rooms(native)
    assert set(rooms) == {"interop@conference.localhost", "legacy@conference.localhost"}, rooms
    added = rooms["legacy@conference.localhost"]
    assert added["name"] == "From XEP-0048" and added["nick"] == "al", added
    assert not added["autojoin"], added

    only_legacy = Bookmarks()
    only_legacy.add_conference("legacy@conference.localhost", "al", name="From XEP-0048")
    await legacy.plugin["xep_0048"].set_bookmarks(only_legacy, method="xep_0049",
                                                  timeout=TIMEOUT)
    rooms = await native_rooms(native)
    assert set(rooms) == {"legacy@conference.localhost"}, rooms

    for client in (native, legacy):
        client.disconnect()
    print("interop: slixmpp XEP-0402 <-> XEP-0048/XEP-0049 bookmarks ok")


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
