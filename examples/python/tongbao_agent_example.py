#!/usr/bin/env python3
"""Exchange through two Tongbao agents with the Python standard library only.

A departmental system that cannot link the Rust library talks to its own
party's agent (`tongbao agent`) over HTTP/JSON on 127.0.0.1. The agent signs
what it sends and verifies everything it hands out; this script only holds
the agent's bearer token.

Commands:

  exchange   send a message through one agent, receive it from another
             agent's inbox (long poll), acknowledge it there
  webhook    receive webhook deliveries, checking each HMAC signature
  check-signature
             check one webhook signature (exit 0 if valid, 1 if not)

Example:

  python3 tongbao_agent_example.py exchange \
      --sender http://127.0.0.1:7480 --sender-token-file units/tax/agent-token \
      --receiver http://127.0.0.1:7481 --receiver-token-file units/civil-affairs/agent-token \
      --to civil-affairs
"""

import argparse
import hashlib
import hmac
import http.server
import json
import sys
import time
import urllib.error
import urllib.request

# How far a webhook timestamp may be from this machine's clock (seconds).
MAX_SKEW_SECS = 300


class AgentError(Exception):
    """A refusal of the agent: HTTP status plus its {"error", "code"}."""

    def __init__(self, status, code, message):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class Agent:
    """One agent's API, authorised with its token."""

    def __init__(self, url, token_file):
        self.url = url.rstrip("/")
        with open(token_file, encoding="utf-8") as f:
            self.token = f.read().strip()

    def call(self, method, path, body=None, timeout=60):
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", "Bearer " + self.token)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as e:
            try:
                refusal = json.load(e)
            except ValueError:
                refusal = {"error": e.reason, "code": "http"}
            raise AgentError(e.code, refusal.get("code"), refusal.get("error")) from None

    def send(self, to, subject, body):
        return self.call("POST", "/v1/messages", {
            "kind": "notification",
            "audience": {"units": [to]},
            "subject": subject,
            "body": body,
        })

    def inbox(self, after, limit=100, wait_ms=0):
        return self.call("GET", f"/v1/inbox?after={after}&limit={limit}&wait_ms={wait_ms}")

    def acknowledge(self, entries):
        refs = [{"channel": e["channel"], "seq": e["seq"]} for e in entries]
        return self.call("POST", "/v1/acknowledge", {"entries": refs})


def verify_signature(key, timestamp, signature, body, now=None):
    """The receiver's check of a webhook delivery (docs/agent.md).

    signature is "v1=" + hex(HMAC-SHA256(key, timestamp + "." + body)),
    timestamp the Tongbao-Timestamp header's digits as sent (unix seconds),
    body the exact request bytes, key the webhook secret file's text,
    trimmed. Any malformed header is a refusal, never an exception.
    """
    now = int(time.time()) if now is None else now
    timestamp, signature = timestamp.strip(), signature.strip()
    # Plain ASCII digits only: the text signed is the text sent.
    if not (timestamp.isascii() and timestamp.isdigit()) or not signature.isascii():
        return False
    if abs(now - int(timestamp)) > MAX_SKEW_SECS:
        return False
    expected = "v1=" + hmac.new(
        key, timestamp.encode("ascii") + b"." + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii"))


def exchange(args):
    sender = Agent(args.sender, args.sender_token_file)
    receiver = Agent(args.receiver, args.receiver_token_file)
    # Start after what the receiver already has.
    after = receiver.inbox(0, limit=1)["head"]
    sent = sender.send(args.to, args.subject, args.body)
    deadline = time.monotonic() + args.within
    while True:
        page = receiver.inbox(after, wait_ms=2000)
        found = [e for e in page["entries"]
                 if e["channel"] == sent["channel"] and e["seq"] == sent["seq"]]
        if found:
            break
        after = page["next_after"]
        if time.monotonic() > deadline:
            raise SystemExit(f"{sent['channel']}:{sent['seq']} did not arrive within {args.within} s")
    entry = found[0]
    # The agent verified it; check it is what was sent.
    if entry["leaf_hash"] != sent["leaf_hash"] or not entry["verified"]:
        raise SystemExit("the received entry is not the one sent")
    acked = receiver.acknowledge([entry])
    print(json.dumps({
        "sent": sent,
        "received": {k: entry[k] for k in ("channel", "seq", "subject", "body", "sender")},
        "acknowledged": acked,
    }))


def webhook(args):
    with open(args.secret_file, "rb") as f:
        key = f.read().strip()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            length = self.headers.get("Content-Length", "").strip()
            # Digits only: int() would also take "-1" (read to the end)
            # or "+1_0".
            if not (length.isascii() and length.isdigit()):
                self.send_error(400, "Content-Length must be a number of bytes")
                return
            if int(length) > 4 * 1024 * 1024:
                self.send_error(413)
                return
            body = self.rfile.read(int(length))
            timestamp = self.headers.get("Tongbao-Timestamp", "")
            signature = self.headers.get("Tongbao-Signature", "")
            if not (timestamp.isascii() and signature.isascii()):
                self.send_error(400, "malformed signature headers")
                return
            if not verify_signature(key, timestamp, signature, body):
                self.send_error(401, "bad signature")
                return
            try:
                entry = json.loads(body)["entry"]
                channel, seq, subject = entry["channel"], entry["seq"], entry["subject"]
            except (ValueError, KeyError, TypeError):
                self.send_error(400, "not a delivery")
                return
            # Deduplicate by the signed body's entry.channel and entry.seq
            # (unique per entry): a delivery interrupted before its answer
            # is sent again. The Tongbao-Delivery header is not signed.
            print(f"{channel}:{seq}", subject, flush=True)
            self.send_response(204)
            self.end_headers()

    server = http.server.HTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening on http://127.0.0.1:{server.server_port}/", flush=True)
    server.serve_forever()


def check_signature(args):
    with open(args.body_file, "rb") as f:
        body = f.read()
    ok = verify_signature(args.key.encode("utf-8"), args.timestamp, args.signature, body)
    print("valid" if ok else "invalid")
    return 0 if ok else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("exchange")
    ex.add_argument("--sender", required=True)
    ex.add_argument("--sender-token-file", required=True)
    ex.add_argument("--receiver", required=True)
    ex.add_argument("--receiver-token-file", required=True)
    ex.add_argument("--to", required=True, help="the receiving unit's id")
    ex.add_argument("--subject", default="Sent from Python")
    ex.add_argument("--body", default="Hello through the agent")
    ex.add_argument("--within", type=float, default=60, help="seconds to wait for delivery")
    wh = sub.add_parser("webhook")
    wh.add_argument("--secret-file", required=True)
    wh.add_argument("--port", type=int, default=0)
    cs = sub.add_parser("check-signature")
    cs.add_argument("--key", required=True)
    cs.add_argument("--timestamp", required=True)
    cs.add_argument("--signature", required=True)
    cs.add_argument("--body-file", required=True)
    args = parser.parse_args()
    try:
        if args.command == "exchange":
            exchange(args)
        elif args.command == "webhook":
            webhook(args)
        else:
            return check_signature(args)
    except AgentError as e:
        print(f"refused: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
