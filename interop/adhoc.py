"""An admin runs XEP-0133 commands from slixmpp's XEP-0050 plugin: adds a user (who then logs
in), lists the online users, and sends an announcement that another client receives; a user
who is not an admin does not see the admin commands and is refused when running one."""

import argparse
import asyncio
import ssl
import sys

import slixmpp
from slixmpp.exceptions import IqError

TIMEOUT = 20
ADMIN = "http://jabber.org/protocol/admin#"


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, cert):
        super().__init__(jid, password)
        self.ssl_context = ssl.create_default_context(cafile=cert)
        self.enable_starttls = True
        self.enable_direct_tls = False
        self.enable_plaintext = False
        for plugin in ("xep_0030", "xep_0004", "xep_0050"):
            self.register_plugin(plugin)
        self.online = asyncio.Event()
        self.messages = asyncio.Queue()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", lambda m: self.messages.put_nowait(m))

    async def on_start(self, _event):
        self.send_presence()
        self.online.set()

    async def run(self, command, fields):
        """Executes `command`, then completes its form with `fields`; the final answer."""
        adhoc = self.plugin["xep_0050"]
        first = await adhoc.send_command("localhost", ADMIN + command, action="execute")
        if first["command"]["status"] == "completed":
            return first
        form = self.plugin["xep_0004"].make_form(ftype="submit")
        form.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/admin")
        for var, value in fields.items():
            form.add_field(var=var, value=value)
        return await adhoc.send_command(
            "localhost", ADMIN + command, action="complete", payload=form,
            sessionid=first["command"]["sessionid"])


async def login(jid, password, cert, port):
    client = Client(jid, password, cert)
    client.connect(host="127.0.0.1", port=port)
    await asyncio.wait_for(client.online.wait(), TIMEOUT)
    return client


def values(answer, var):
    return answer["command"]["form"].get_fields()[var].get_value()


async def main(port, cert):
    admin = await login("admin@localhost/console", "pw-admin", cert, port)
    alice = await login("alice@localhost/interop", "pw-alice", cert, port)

    items = await admin.plugin["xep_0050"].get_commands("localhost")
    nodes = {item[1] for item in items["disco_items"]["items"]}
    assert ADMIN + "add-user" in nodes, nodes
    seen_by_alice = await alice.plugin["xep_0050"].get_commands("localhost")
    assert not any(i[1].startswith(ADMIN) for i in seen_by_alice["disco_items"]["items"])
    try:
        await alice.plugin["xep_0050"].send_command("localhost", ADMIN + "add-user")
        raise AssertionError("a user ran an admin command")
    except IqError as err:
        assert err.condition == "forbidden", err.condition

    added = await admin.run("add-user", {
        "accountjid": "carol@localhost", "password": "pw-carol", "password-verify": "pw-carol"})
    assert added["command"]["status"] == "completed"
    carol = await login("carol@localhost/new", "pw-carol", cert, port)

    online = await admin.run("get-online-users-list", {"max_items": "100"})
    users = set(values(online, "onlineuserjids"))
    assert {"admin@localhost", "alice@localhost", "carol@localhost"} <= users, users

    await admin.run("announce", {"announcement": "maintenance at noon"})
    for client in (alice, carol):
        while True:
            msg = await asyncio.wait_for(client.messages.get(), TIMEOUT)
            if msg["body"] == "maintenance at noon":
                assert str(msg["from"]) == "localhost", msg["from"]
                break
    for client in (admin, alice, carol):
        client.disconnect()
    print("interop: slixmpp XEP-0050/XEP-0133 admin commands ok")


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
