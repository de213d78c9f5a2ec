"""The slixmpp side of the BOSH interop: logs in over STARTTLS, waits for Converse's message
and answers it, then waits for the file Converse shares (XEP-0363: its GET URL in the body and
in jabber:x:oob), downloads it and says so once the bytes are the expected ones."""

import argparse
import asyncio
import ssl
import sys
import urllib.request

import slixmpp

TIMEOUT = 90


class Peer(slixmpp.ClientXMPP):
    def __init__(self, jid, password, cert, expect_from, content):
        super().__init__(jid, password)
        self.register_plugin("xep_0066")
        self.content = content
        self.downloaded = asyncio.Event()
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
            return
        url = msg["oob"]["url"]
        if str(msg["from"].bare) == self.expect_from and url:
            asyncio.ensure_future(self.download(msg["from"], url))

    async def download(self, sender, url):
        try:
            data = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=20).read())
        except OSError as e:
            print(f"peer: GET {url} failed: {e}", file=sys.stderr)
            return
        if data.decode() != self.content:
            print(f"peer: {url} holds {data!r}, not the shared content", file=sys.stderr)
            return
        print(f"peer: downloaded {len(data)} bytes from {url}", flush=True)
        self.send_message(mto=sender, mbody="downloaded the file", mtype="chat")
        self.downloaded.set()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--jid", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--expect-from", required=True)
    parser.add_argument("--content", required=True)
    args = parser.parse_args()
    peer = Peer(args.jid, args.password, args.cert, args.expect_from, args.content)
    peer.connect(host="127.0.0.1", port=args.port)
    try:
        await asyncio.wait_for(peer.answered.wait(), TIMEOUT)
        await asyncio.wait_for(peer.downloaded.wait(), TIMEOUT)
        # Time for the last message to leave before the stream closes.
        await asyncio.sleep(2)
    except asyncio.TimeoutError:
        what = "the shared file" if peer.answered.is_set() else "a message"
        print(f"peer: no {what} from Converse in time", file=sys.stderr)
        return 1
    finally:
        peer.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
