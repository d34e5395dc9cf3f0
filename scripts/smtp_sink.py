"""The project's SMTP sink for tests: captures every mail behind a small HTTP API and refuses
chosen recipients, so that tests can drive retries (451) and compensation (550).

SMTP on 127.0.0.1:--smtp-port. HTTP on 127.0.0.1:--http-port:
  GET    /health                      200 "ok"
  GET    /messages[?to=ADDR][&domain=D]  the captured mails, oldest first (JSON); `to`: sent
                                      to ADDR, `domain`: to an address @D
  DELETE /messages                    forget them
  PUT    /rules  {"permanent": RE, "transient": RE}
                                      recipients matching `permanent` get 550, `transient` 451
Defaults: permanent ^refuse-, transient ^later-.
"""

import argparse
import email
import email.policy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from aiosmtpd.controller import Controller

LOCK = threading.Lock()
MESSAGES = []
RULES = {"permanent": r"^refuse-", "transient": r"^later-"}


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with LOCK:
            permanent, transient = RULES["permanent"], RULES["transient"]
        if permanent and re.search(permanent, address):
            return "550 5.1.1 recipient rejected"
        if transient and re.search(transient, address):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.content.decode("utf-8", errors="replace")
        parsed = email.message_from_string(raw, policy=email.policy.default)
        body = parsed.get_body(preferencelist=("plain",))
        with LOCK:
            MESSAGES.append({
                "from": envelope.mail_from,
                "to": list(envelope.rcpt_tos),
                "headers": {k: str(v) for k, v in parsed.items()},
                "subject": str(parsed.get("Subject", "")),
                "body": body.get_content() if body is not None else "",
            })
        return "250 Message accepted"


class Api(BaseHTTPRequestHandler):
    def _send(self, code, payload):
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/health":
            return self._send(200, "ok")
        if url.path == "/messages":
            query = parse_qs(url.query)
            to = query.get("to", [None])[0]
            domain = query.get("domain", [None])[0]
            with LOCK:
                items = [
                    m for m in MESSAGES
                    if (to is None or to in m["to"])
                    and (domain is None or any(r.endswith("@" + domain) for r in m["to"]))
                ]
            return self._send(200, items)
        self._send(404, {"error": "no such route"})

    def do_DELETE(self):
        if urlparse(self.path).path == "/messages":
            with LOCK:
                MESSAGES.clear()
            return self._send(200, {"cleared": True})
        self._send(404, {"error": "no such route"})

    def do_PUT(self):
        if urlparse(self.path).path != "/rules":
            return self._send(404, {"error": "no such route"})
        try:
            rules = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            for key in ("permanent", "transient"):
                if key in rules and rules[key]:
                    re.compile(rules[key])
        except (ValueError, re.error) as e:
            return self._send(400, {"error": str(e)})
        with LOCK:
            RULES.update({k: v for k, v in rules.items() if k in RULES})
            current = dict(RULES)
        self._send(200, current)

    def log_message(self, fmt, *args):
        pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--smtp-port", type=int, default=2525)
    p.add_argument("--http-port", type=int, default=8025)
    args = p.parse_args()
    controller = Controller(Handler(), hostname="127.0.0.1", port=args.smtp_port)
    controller.start()
    ThreadingHTTPServer(("127.0.0.1", args.http_port), Api).serve_forever()


if __name__ == "__main__":
    main()
