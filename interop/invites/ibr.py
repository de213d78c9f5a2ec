"""XEP-0077 in-band registration with slixmpp's xep_0077 plugin against corvid in "open"
mode: the client registers before authenticating, then logs in as the new account; a second
registration of the same name is refused with <conflict/>."""

import argparse
import asyncio
import ssl
import sys

import slixmpp
from slixmpp.exceptions import IqError

TIMEOUT = 20


class Registrant(slixmpp.ClientXMPP):
    def __init__(self, jid, password, cert):
        super().__init__(jid, password)
        self.ssl_context = ssl.create_default_context(cafile=cert)
        self.enable_starttls = True
        self.enable_direct_tls = False
        self.enable_plaintext = False
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0077")
        self.plugin["xep_0077"].force_registration = True
        self.outcome = asyncio.get_event_loop().create_future()
        self.started = asyncio.Event()
        self.add_event_handler("register", self.on_register)
        self.add_event_handler("session_start", lambda _: self.started.set())
        self.add_event_handler("failed_auth", lambda _: print(f"{jid}: auth failed", file=sys.stderr))

    async def on_register(self, _form):
        iq = self.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = self.boundjid.user
        iq["register"]["password"] = self.password
        try:
            await iq.send()
            self.outcome.set_result("registered")
        except IqError as e:
            self.outcome.set_result(e.iq["error"]["condition"])
            self.disconnect()


async def register(port, cert, jid, password):
    client = Registrant(jid, password, cert)
    client.connect(host="127.0.0.1", port=port)
    outcome = await asyncio.wait_for(client.outcome, TIMEOUT)
    if outcome == "registered":
        await asyncio.wait_for(client.started.wait(), TIMEOUT)
        client.disconnect()
    return outcome


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    args = parser.parse_args()
    first = await register(args.port, args.cert, "newbie@localhost", "pw-newbie")
    if first != "registered":
        raise AssertionError(f"registration refused: {first}")
    print("newbie@localhost registered in-band and logged in")
    second = await register(args.port, args.cert, "newbie@localhost", "other-password")
    if second != "conflict":
        raise AssertionError(f"a second registration of the name answered {second}")
    print("registering the name again: conflict")


if __name__ == "__main__":
    asyncio.run(main())
