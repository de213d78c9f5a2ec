"""Logs in with slixmpp as the account the invite page created and checks that the inviter
is on its roster with a mutual subscription (XEP-0379 pre-approval)."""

import argparse
import asyncio
import ssl
import sys

import slixmpp

TIMEOUT = 20


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, cert):
        super().__init__(jid, password)
        self.ssl_context = ssl.create_default_context(cafile=cert)
        self.enable_starttls = True
        self.enable_direct_tls = False
        self.enable_plaintext = False
        self.ready = asyncio.Event()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("failed_auth", lambda _: print(f"{jid}: auth failed", file=sys.stderr))

    async def on_start(self, _event):
        await self.get_roster()
        self.send_presence()
        self.ready.set()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--jid", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--inviter", required=True)
    args = parser.parse_args()
    client = Client(args.jid, args.password, args.cert)
    client.connect(host="127.0.0.1", port=args.port)
    await asyncio.wait_for(client.ready.wait(), TIMEOUT)
    roster = client.client_roster
    if args.inviter not in roster:
        raise AssertionError(f"{args.inviter} not on {args.jid}'s roster: {list(roster.keys())}")
    subscription = roster[args.inviter]["subscription"]
    if subscription != "both":
        raise AssertionError(f"{args.inviter}: subscription {subscription}, expected both")
    print(f"{args.jid} has {args.inviter} on its roster (subscription both)")
    client.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
