"""The slixmpp side of the BOSH interop: logs in over STARTTLS, waits for Converse's message
and answers it."""

import argparse
import asyncio
import ssl
import sys

import slixmpp

TIMEOUT = 90


class Peer(slixmpp.ClientXMPP):
    def __init__(self, jid, password, cert, expect_from):
        super().__init__(jid, password)
        self.ssl_context = ssl.create_default_context(cafile=cert)
        self.enable_starttls = True
        self.enable_direct_tls = False
        self.enable_plaintext = False
        self.expect_from = expect_from
        self.answered = asyncio.Event()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("failed_auth", lambda _: print("peer: auth failed", file=sys.stderr))

    async def on_start(self, _event):
        self.send_presence()
        print("peer: online", flush=True)

    def on_message(self, msg):
        if str(msg["from"].bare) == self.expect_from and msg["body"] == "hello from converse over bosh":
            print(f"peer: got '{msg['body']}' from {msg['from']}", flush=True)
            self.send_message(mto=msg["from"], mbody="hello from slixmpp", mtype="chat")
            self.answered.set()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--jid", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--expect-from", required=True)
    args = parser.parse_args()
    peer = Peer(args.jid, args.password, args.cert, args.expect_from)
    peer.connect(host="127.0.0.1", port=args.port)
    try:
        await asyncio.wait_for(peer.answered.wait(), TIMEOUT)
        # Time for the answer to leave before the stream closes.
        await asyncio.sleep(2)
    except asyncio.TimeoutError:
        print("peer: no message from Converse in time", file=sys.stderr)
        return 1
    finally:
        peer.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
