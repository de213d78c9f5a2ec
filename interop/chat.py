"""Two slixmpp clients log in to corvid over STARTTLS and chat both ways."""

import argparse
import asyncio
import ssl
import sys

import slixmpp

TIMEOUT = 20


class Chatter(slixmpp.ClientXMPP):
    def __init__(self, jid, password, cert):
        super().__init__(jid, password)
        self.received = asyncio.Queue()
        self.online = asyncio.Event()
        # Trust exactly corvid's self-signed certificate; the hostname check stays on.
        self.ssl_context = ssl.create_default_context(cafile=cert)
        # STARTTLS only: no direct TLS, and never fall back to plaintext.
        self.enable_starttls = True
        self.enable_direct_tls = False
        self.enable_plaintext = False
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("failed_auth", lambda _: print(f"{jid}: auth failed", file=sys.stderr))

    async def on_start(self, _event):
        # The roster (RFC 6121 §2) is the next milestone; until then no roster request here.
        self.send_presence()
        self.online.set()

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            self.received.put_nowait((str(msg["from"]), msg["body"]))


async def main(port, cert):
    alice = Chatter("alice@localhost/interop", "pw-alice", cert)
    bob = Chatter("bob@localhost/interop", "pw-bob", cert)
    for client in (alice, bob):
        client.connect(host="127.0.0.1", port=port)
    await asyncio.wait_for(asyncio.gather(alice.online.wait(), bob.online.wait()), TIMEOUT)

    alice.send_message(mto="bob@localhost/interop", mbody="hello bob", mtype="chat")
    sender, body = await asyncio.wait_for(bob.received.get(), TIMEOUT)
    assert (sender, body) == ("alice@localhost/interop", "hello bob"), (sender, body)

    bob.send_message(mto="alice@localhost", mbody="hello alice", mtype="chat")
    sender, body = await asyncio.wait_for(alice.received.get(), TIMEOUT)
    assert (sender, body) == ("bob@localhost/interop", "hello alice"), (sender, body)

    for client in (alice, bob):
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
        print(f"interop: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
