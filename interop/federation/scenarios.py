"""Federation scenarios between two accounts on two XMPP servers (slixmpp clients, one per
server, each logged in over STARTTLS to its own server with the certificate verified).

Every check runs in both directions, A -> B and B -> A:
  message       a chat message to the other's bare JID arrives from the sender's full JID
  subscription  A asks B, B approves and asks back, A approves: both rosters reach 'both'
                and each side sees the other's available presence
  muc           the remote user joins a room on the other server's MUC service (created
                there by its local user as an instant room) and both exchange groupchat
  pep-avatar    one publishes XEP-0084 avatar data and metadata through PEP; the contact
                (urn:xmpp:avatar:metadata+notify in its entity capabilities) is notified of
                the metadata item and fetches the data item from the publisher's server

One line per check: "PASS <label> <step>" or "FAIL <label> <step>: <reason>". Exit status is
the number of failures (0 when all pass)."""

import argparse
import asyncio
import hashlib
import os
import ssl
import sys
import time

import slixmpp
from slixmpp.xmlstream import ET

TIMEOUT = int(os.environ.get("FEDERATION_STEP_TIMEOUT", "20"))
MUC_OWNER = "http://jabber.org/protocol/muc#owner"


class StepFailed(Exception):
    pass


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, cafile):
        super().__init__(jid, password)
        # Trust the test CA (or the servers' self-signed certificates); hostname check stays on.
        self.ssl_context = ssl.create_default_context(cafile=cafile)
        self.enable_starttls = True
        self.enable_direct_tls = False
        self.enable_plaintext = False
        # Subscription requests are answered by the scenario itself.
        self.auto_authorize = None
        self.auto_subscribe = False
        # Entity capabilities (XEP-0115) carry the +notify interests PEP filters by.
        for plugin in ("xep_0030", "xep_0115", "xep_0163", "xep_0084", "xep_0045", "xep_0199"):
            self.register_plugin(plugin)
        self.online = asyncio.Event()
        self.problems = []
        self.messages = asyncio.Queue()
        self.groupchat = asyncio.Queue()
        self.avatars = asyncio.Queue()
        self.subscribe_requests = asyncio.Queue()
        self.available = set()
        self.presence_changed = asyncio.Event()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("groupchat_message", lambda m: self.groupchat.put_nowait(m))
        self.add_event_handler("avatar_metadata_publish", lambda m: self.avatars.put_nowait(m))
        self.add_event_handler("presence_subscribe",
                               lambda p: self.subscribe_requests.put_nowait(str(p["from"].bare)))
        self.add_event_handler("presence_available", self.on_available)
        self.add_event_handler("failed_auth", lambda _: self.problems.append("authentication failed"))
        self.add_event_handler("connection_failed", lambda e: self.problems.append(f"connection failed: {e}"))
        self.add_event_handler("ssl_invalid_chain", lambda e: self.problems.append(f"certificate rejected: {e}"))

    async def on_start(self, _event):
        await self.get_roster()
        self.send_presence()
        self.online.set()

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            self.messages.put_nowait((str(msg["from"]), msg["body"]))

    def on_available(self, pres):
        self.available.add(str(pres["from"]))
        self.presence_changed.set()

    @property
    def me(self):
        return str(self.boundjid.bare)


async def until(what, predicate, timeout=TIMEOUT):
    """Polls predicate() until it is true, or fails naming `what`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise StepFailed(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


async def next_matching(queue, what, predicate, timeout=TIMEOUT):
    """Takes items from queue until one satisfies predicate, or fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise StepFailed(f"timed out after {timeout}s waiting for {what}")
        try:
            item = await asyncio.wait_for(queue.get(), left)
        except asyncio.TimeoutError:
            raise StepFailed(f"timed out after {timeout}s waiting for {what}") from None
        if predicate(item):
            return item


async def login(jid, password, cafile, address):
    host, port = address.rsplit(":", 1)
    client = Client(jid, password, cafile)
    client.connect(host=host, port=int(port))
    try:
        await asyncio.wait_for(client.online.wait(), TIMEOUT)
    except asyncio.TimeoutError:
        why = "; ".join(client.problems) or "no session"
        raise StepFailed(f"{jid} could not log in at {address} within {TIMEOUT}s ({why})") from None
    return client


# --- the checks; each takes (sender, receiver) or both clients and raises StepFailed ---

async def message(a, b, tag):
    body = f"hello {b.me} from {a.me} ({tag})"
    a.send_message(mto=b.me, mbody=body, mtype="chat")
    sender, _ = await next_matching(b.messages, f"{b.me} to receive the chat message from {a.me}",
                                    lambda m: m[1] == body)
    if sender != str(a.boundjid):
        raise StepFailed(f"message arrived from {sender!r}, expected {a.boundjid}")


async def subscription(a, b):
    a.send_presence(pto=b.me, ptype="subscribe")
    await next_matching(b.subscribe_requests, f"the subscription request of {a.me} at {b.me}",
                        lambda who: who == a.me)
    b.send_presence(pto=a.me, ptype="subscribed")
    b.send_presence(pto=a.me, ptype="subscribe")
    await next_matching(a.subscribe_requests, f"the subscription request of {b.me} at {a.me}",
                        lambda who: who == b.me)
    a.send_presence(pto=b.me, ptype="subscribed")
    for owner, contact in ((a, b), (b, a)):
        roster = owner.client_roster
        await until(f"{contact.me} to be 'both' in the roster of {owner.me}",
                    lambda: contact.me in roster and roster[contact.me]["subscription"] == "both")
    for owner, contact in ((a, b), (b, a)):
        await until(f"{owner.me} to see the available presence of {contact.boundjid}",
                    lambda: str(contact.boundjid) in owner.available)


async def muc(local, remote, room):
    """`local` creates `room` on its own server's MUC service, `remote` joins from the other
    server, and they exchange a groupchat message each way."""
    muc_l, muc_r = local.plugin["xep_0045"], remote.plugin["xep_0045"]
    try:
        pres, *_ = await muc_l.join_muc_wait(room, "local", maxstanzas=0, timeout=TIMEOUT)
    except Exception as exc:
        raise StepFailed(f"{local.me} could not create {room}: {exc!r}") from None
    codes = {int(c) for c in pres["muc"]["status_codes"]}
    if 201 in codes:  # new and locked: accept the default configuration (instant room)
        instant = local.make_iq_set(ito=room)
        instant.append(ET.fromstring(f"<query xmlns='{MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'/></query>"))
        try:
            await instant.send(timeout=TIMEOUT)
        except Exception as exc:
            raise StepFailed(f"{local.me} could not unlock {room} as an instant room: {exc!r}") from None
    try:
        await muc_r.join_muc_wait(room, "remote", maxstanzas=0, timeout=TIMEOUT)
    except Exception as exc:
        raise StepFailed(f"{remote.me} could not join {room} from its server: {exc!r}") from None

    def from_room(nick, body):
        return lambda m: str(m["from"]) == f"{room}/{nick}" and m["body"] == body

    body = f"hello from {remote.me}"
    remote.send_message(mto=room, mbody=body, mtype="groupchat")
    await next_matching(local.groupchat, f"{local.me} to receive the groupchat of {remote.me} in {room}",
                        from_room("remote", body))
    body = f"hello from {local.me}"
    local.send_message(mto=room, mbody=body, mtype="groupchat")
    await next_matching(remote.groupchat, f"{remote.me} to receive the groupchat of {local.me} in {room}",
                        from_room("local", body))
    muc_r.leave_muc(room, "remote")
    muc_l.leave_muc(room, "local")


async def pep_avatar(publisher, contact, tag):
    data = f"\x89PNG\r\n\x1a\n federation avatar of {publisher.me} ({tag})".encode()
    avatar_id = hashlib.sha1(data).hexdigest()
    xep_0084 = publisher.plugin["xep_0084"]
    try:
        await xep_0084.publish_avatar(data, timeout=TIMEOUT)
        await xep_0084.publish_avatar_metadata(
            items=[{"id": avatar_id, "type": "image/png", "bytes": len(data)}], timeout=TIMEOUT)
    except Exception as exc:
        raise StepFailed(f"{publisher.me} could not publish its avatar: {exc!r}") from None

    def is_ours(msg):
        return (str(msg["from"].bare) == publisher.me
                and msg["pubsub_event"]["items"]["item"]["id"] == avatar_id)

    await next_matching(contact.avatars,
                        f"{contact.me} to be notified of the avatar metadata of {publisher.me}", is_ours)
    try:
        fetched = await contact.plugin["xep_0084"].retrieve_avatar(publisher.me, avatar_id, timeout=TIMEOUT)
    except Exception as exc:
        raise StepFailed(f"{contact.me} was notified but could not fetch the avatar data: {exc!r}") from None
    value = fetched["pubsub"]["items"]["item"]["avatar_data"]["value"]
    if value != data:
        raise StepFailed(f"{contact.me} fetched avatar data {value!r}, expected {data!r}")


async def run(args):
    label = args.label
    results = []

    def report(step, error=None):
        results.append(error is None)
        if error is None:
            print(f"PASS {label} {step}", flush=True)
        else:
            print(f"FAIL {label} {step}: {error}", flush=True)

    a_dom, b_dom = args.a_jid.split("@")[1], args.b_jid.split("@")[1]
    ab, ba = f"{a_dom}->{b_dom}", f"{b_dom}->{a_dom}"
    steps = [
        (f"message {ab}", lambda: message(a, b, label)),
        (f"message {ba}", lambda: message(b, a, label)),
        (f"subscription both {a_dom}<->{b_dom}", lambda: subscription(a, b)),
        (f"muc {a_dom}-user-in-room@conference.{b_dom}",
         lambda: muc(b, a, f"{args.room}@conference.{b_dom}")),
        (f"muc {b_dom}-user-in-room@conference.{a_dom}",
         lambda: muc(a, b, f"{args.room}@conference.{a_dom}")),
        (f"pep-avatar {ab}", lambda: pep_avatar(a, b, label)),
        (f"pep-avatar {ba}", lambda: pep_avatar(b, a, label)),
    ]
    a = b = None
    try:
        a, b = await asyncio.gather(login(args.a_jid + "/fed", args.a_password, args.cafile, args.a_addr),
                                    login(args.b_jid + "/fed", args.b_password, args.cafile, args.b_addr))
    except Exception as exc:
        report("login", str(exc))
        for step, _ in steps:
            report(step, "not run: login failed")
        return results
    report("login")

    # The message steps always run; when neither direction carries a message, s2s is down and
    # the later steps would only time out one after the other.
    crossed = []
    for step, check in steps:
        if not step.startswith("message") and not any(crossed):
            report(step, "not run: no message crossed between the servers in either direction")
            continue
        try:
            await check()
        except StepFailed as exc:
            report(step, str(exc))
        except Exception as exc:  # a slixmpp error, an unexpected stanza: report, go on
            report(step, f"{type(exc).__name__}: {exc!r}")
        else:
            report(step)
        if step.startswith("message"):
            crossed.append(results[-1])
    for client in (a, b):
        client.disconnect()
    await asyncio.sleep(0.2)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", required=True, help="prefix of every result line")
    parser.add_argument("--a-jid", required=True)
    parser.add_argument("--a-password", required=True)
    parser.add_argument("--a-addr", required=True, help="c2s host:port of A's server")
    parser.add_argument("--b-jid", required=True)
    parser.add_argument("--b-password", required=True)
    parser.add_argument("--b-addr", required=True, help="c2s host:port of B's server")
    parser.add_argument("--cafile", required=True, help="PEM bundle the clients trust")
    parser.add_argument("--room", default="federation", help="local part of the MUC rooms")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    sys.exit(results.count(False))


if __name__ == "__main__":
    main()
