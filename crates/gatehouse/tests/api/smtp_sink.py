#!/usr/bin/env python3
"""A real SMTP server (aiosmtpd) that keeps every mail it accepts as JSON.

Started by tests/api/mail_sink.rs on a free loopback port, so the API tests
can read what gatehouse sent. Needs aiosmtpd (Debian's python3-aiosmtpd,
1.4.3 on Debian 12) and nothing but the standard library otherwise.

    smtp_sink.py --port N --dir DIR [--tls-mode plain|starttls|smtps]
                 [--cert PEM --key PEM] [--auth USER:PASS]

Each accepted message becomes DIR/NNNNNN.json (a counter that continues
after the files already there, so a restart on the same DIR appends),
written as a .tmp file and renamed, so a reader never sees half a file.
"starttls" requires STARTTLS before MAIL (a client that never upgrades is
refused, not silently accepted in the clear); "smtps" is TLS from the first
byte. With --auth, AUTH PLAIN or LOGIN must succeed before MAIL (after
STARTTLS in starttls mode). Prints "ready" on stdout once listening; exits
with status 0 on SIGTERM or SIGINT.
"""

import argparse
import email
import email.policy
import json
import logging
import os
import re
import signal
import ssl
import sys
import threading
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

MAIL_FILE = re.compile(r"^(\d{6})\.json$")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument(
        "--tls-mode", choices=("plain", "starttls", "smtps"), default="plain"
    )
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--auth", metavar="USER:PASS")
    args = parser.parse_args()
    if args.tls_mode != "plain" and not (args.cert and args.key):
        parser.error(f"--tls-mode {args.tls_mode} needs --cert and --key")
    if args.auth is not None and ":" not in args.auth:
        parser.error("--auth takes USER:PASS")
    return args


def decoded_part(message, subtype):
    """The text/SUBTYPE body part as str (transfer encoding and charset
    undone, CRLF line ends as \\n), or None."""
    part = message.get_body(preferencelist=(subtype,))
    if part is None:
        return None
    return part.get_content().replace("\r\n", "\n")


class Sink:
    """The handler: aiosmtpd calls handle_DATA once per accepted message."""

    def __init__(self, directory):
        self.directory = directory
        numbers = [
            int(m.group(1))
            for m in map(MAIL_FILE.match, os.listdir(directory))
            if m is not None
        ]
        self.counter = max(numbers, default=0)

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        message = email.message_from_bytes(raw, policy=email.policy.default)
        # Implicit TLS leaves session.ssl unset (aiosmtpd only fills it in on
        # STARTTLS); the transport knows either way.
        transport = server.transport
        over_tls = (
            transport is not None
            and transport.get_extra_info("ssl_object") is not None
        )
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "subject": str(message.get("Subject", "")),
            "from": str(message.get("From", "")),
            "to": str(message.get("To", "")),
            "text": decoded_part(message, "plain") or "",
            "html": decoded_part(message, "html"),
            "headers": [[name, str(value)] for name, value in message.items()],
            "tls": over_tls,
            "auth_user": session.auth_data if session.authenticated else None,
            "raw": raw.decode("utf-8", "replace"),
        }
        self.counter += 1
        final = os.path.join(self.directory, f"{self.counter:06d}.json")
        tmp = final + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=False)
        os.rename(tmp, final)
        return "250 Message accepted for delivery"


def authenticator_for(user, password):
    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        if ok:
            # Becomes session.auth_data: the user the mail records.
            return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)

    return authenticate


def main():
    args = parse_args()
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    # aiosmtpd warns that AUTH without TLS is insecure; in plain mode that is
    # what the test asks for.
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")

    os.makedirs(args.dir, exist_ok=True)
    tls_context = None
    if args.tls_mode != "plain":
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(args.cert, args.key)

    smtp_kwargs = {
        # The name in the banner and EHLO reply; the certificate's name.
        "server_hostname": "localhost",
    }
    if args.tls_mode == "starttls":
        smtp_kwargs["tls_context"] = tls_context
        smtp_kwargs["require_starttls"] = True
    if args.auth is not None:
        user, password = args.auth.split(":", 1)
        smtp_kwargs["auth_required"] = True
        smtp_kwargs["authenticator"] = authenticator_for(user, password)
        # aiosmtpd 1.4.3 counts only STARTTLS as TLS: with auth_require_tls it
        # refuses AUTH on implicit TLS (smtps) too. STARTTLS mode keeps it,
        # so AUTH is refused until the upgrade.
        smtp_kwargs["auth_require_tls"] = args.tls_mode == "starttls"

    controller = Controller(
        Sink(args.dir),
        hostname="127.0.0.1",
        port=args.port,
        ssl_context=tls_context if args.tls_mode == "smtps" else None,
        **smtp_kwargs,
    )

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # Binds, then connects once itself so aiosmtpd builds its SMTP object
    # (errors in the parameters surface here, not on the first client).
    controller.start()
    print("ready", flush=True)

    while not stop.wait(0.2):
        pass

    # Controller.stop() joins the server's thread; never let a stuck
    # connection keep the process (and its port) alive.
    stopper = threading.Thread(target=controller.stop, daemon=True)
    stopper.start()
    stopper.join(5)
    logging.getLogger("smtp_sink").info("stopped")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
