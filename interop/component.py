"""An external component (XEP-0114) written with slixmpp's ComponentXMPP connects to corvid
with its secret and serves echo.localhost: it greets a user first, then echoes every message a
user sends to an address at its domain, and answers an IQ; the user finds the component among
the server's disco items. A connection with a wrong secret is refused."""

import argparse
import asyncio
import ssl
import sys

import slixmpp

TIMEOUT = 20
DOMAIN = "echo.localhost"


class Echo(slixmpp.ComponentXMPP):
    def __init__(self, secret, port):
        super().__init__(DOMAIN, secret, "127.0.0.1", port)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199")
        self.ready = asyncio.Event()
        self.refused = asyncio.Event()
        self.add_event_handler("session_start", lambda _: self.ready.set())
        self.add_event_handler("disconnected", lambda _: self.refused.set())
        self.add_event_handler("message", self.echo)

    def echo(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            msg.reply("echo: " + msg["body"]).send()


class User(slixmpp.ClientXMPP):
    def __init__(self, jid, password, cert):
        super().__init__(jid, password)
        self.ssl_context = ssl.create_default_context(cafile=cert)
        self.enable_starttls = True
        self.enable_direct_tls = False
        self.enable_plaintext = False
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199")
        self.online = asyncio.Event()
        self.messages = asyncio.Queue()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", lambda m: self.messages.put_nowait(m))

    async def on_start(self, _event):
        self.send_presence()
        await self.get_roster()
        self.online.set()


async def next_message(client, pred):
    while True:
        msg = await asyncio.wait_for(client.messages.get(), TIMEOUT)
        if pred(msg):
            return msg


async def main(port, component_port, secret, cert):
    intruder = Echo("not-the-secret", component_port)
    intruder.connect()
    await asyncio.wait_for(intruder.refused.wait(), TIMEOUT)
    assert not intruder.ready.is_set(), "a wrong secret was accepted"

    echo = Echo(secret, component_port)
    echo.connect()
    await asyncio.wait_for(echo.ready.wait(), TIMEOUT)

    alice = User("alice@localhost/component", "pw-alice", cert)
    alice.connect(host="127.0.0.1", port=port)
    await asyncio.wait_for(alice.online.wait(), TIMEOUT)

    items = await alice.plugin["xep_0030"].get_items(jid="localhost")
    jids = {item[0] for item in items["disco_items"]["items"]}
    assert DOMAIN in jids, jids

    echo.send_message(mto=str(alice.boundjid), mfrom="greeter@" + DOMAIN,
                      mbody="hello from the component", mtype="chat")
    greeting = await next_message(alice, lambda m: m["body"] == "hello from the component")
    assert str(greeting["from"]) == "greeter@" + DOMAIN, greeting["from"]

    alice.send_message(mto="bot@" + DOMAIN, mbody="ping 1", mtype="chat")
    reply = await next_message(alice, lambda m: m["body"] == "echo: ping 1")
    assert str(reply["from"]).startswith("bot@" + DOMAIN), reply["from"]

    # An IQ to the component is answered by the component (XEP-0199 through the server).
    await asyncio.wait_for(alice.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT), TIMEOUT)

    for client in (alice, echo):
        client.disconnect()
    print("interop: slixmpp XEP-0114 component ok")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--component-port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--cert", required=True)
    args = parser.parse_args()
    try:
        asyncio.run(main(args.port, args.component_port, args.secret, args.cert))
    except Exception as exc:  # report and fail, whatever broke
        print(f"interop: {type(exc).__name__}: {exc!r}", file=sys.stderr)
        sys.exit(1)
