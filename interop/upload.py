"""HTTP File Upload (XEP-0363) from slixmpp's own plugin: Alice's client finds the upload
service through disco (reading its max-file-size form), asks for a slot and PUTs a file with
aiohttp; Bob downloads the GET URL with Python's urllib and gets the same bytes. A file over
the limit is refused by the plugin from the advertised size, and by the server when asked
anyway (not-acceptable)."""

import argparse
import asyncio
import os
import ssl
import sys
import urllib.request

import slixmpp
from slixmpp.exceptions import IqError

TIMEOUT = 20
MAX_SIZE = 1048576


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, cert):
        super().__init__(jid, password)
        self.ssl_context = ssl.create_default_context(cafile=cert)
        self.enable_starttls = True
        self.enable_direct_tls = False
        self.enable_plaintext = False
        for plugin in ("xep_0030", "xep_0004", "xep_0363"):
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


def download(url):
    with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
        assert answer.status == 200, answer.status
        assert answer.headers.get("X-Content-Type-Options") == "nosniff"
        return answer.read(), answer.headers.get("Content-Type")


async def main(port, cert):
    alice = await login("alice@localhost/upload", "pw-alice", cert, port)
    bob = await login("bob@localhost/upload", "pw-bob", cert, port)
    upload = alice.plugin["xep_0363"]

    content = os.urandom(200_000)
    url = await asyncio.wait_for(
        upload.upload_file("holiday photo.jpg", size=len(content), content_type="image/jpeg",
                           input_file=content, domain="localhost"),
        TIMEOUT)
    assert str(upload.upload_service) == "upload.localhost", upload.upload_service
    assert upload.max_file_size == MAX_SIZE, upload.max_file_size
    assert url.endswith("/holiday%20photo.jpg"), url

    # Bob only has the URL (it would reach him in a message); no credentials are needed.
    body, content_type = await asyncio.get_running_loop().run_in_executor(None, download, url)
    assert body == content, "downloaded bytes differ"
    assert content_type == "image/jpeg", content_type

    # The plugin refuses from the advertised limit; the server refuses a direct request too.
    try:
        await upload.upload_file("big.bin", size=MAX_SIZE + 1, input_file=b"",
                                 domain="localhost")
        raise AssertionError("an oversized upload was attempted")
    except slixmpp.plugins.xep_0363.http_upload.FileTooBig:
        pass
    try:
        await upload.request_slot(upload.upload_service, "big.bin", MAX_SIZE + 1, "x/y")
        raise AssertionError("an oversized slot was given")
    except IqError as err:
        assert err.condition == "not-acceptable", err.condition

    for client in (alice, bob):
        client.disconnect()
    print("upload: slixmpp uploaded, urllib downloaded the same bytes, limits enforced")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    args = parser.parse_args()
    try:
        asyncio.run(asyncio.wait_for(main(args.port, args.cert), 90))
    except Exception as exc:  # noqa: BLE001
        print(f"upload: FAILED: {exc!r}", file=sys.stderr)
        sys.exit(1)
