"""A zmqloop peer in Python, written from the package doc's "Wire format"
and "Batches" sections alone (no Go source consulted), with pyzmq,
hmac/hashlib and json. TestPeerWrittenFromTheDoc runs it against the Go
implementation: if the doc were not enough to interoperate, it fails.

Usage: peer.py MODE ENDPOINT KEY_ID SECRET
  client  call a Go ReplyLoop at ENDPOINT (echo, echo with a data frame,
          unknown type, stale, replayed, forged, tampered data) and check
          every answer
  server  bind ENDPOINT as a ROUTER, print the bound endpoint, and answer
          requests of type "py" with {"py": <request body>} until stdin
          closes
  push    send 3 single messages, a batch of 2 and a message with a data
          frame to a Go PullLoop
Exit status 0 means every check passed; failures go to stderr.
"""

import hashlib
import hmac
import json
import os
import struct
import sys
import threading
import time

import zmq

WINDOW_MS = 30_000


def now_ms():
    return int(time.time() * 1000)


def new_id():
    # "any token unique per key within the window will do (32 random hex
    # digits, say)"
    return os.urandom(16).hex()


def mac(secret, key_id, payload):
    # HMAC-SHA256(secret, key id || 0x00 || payload)
    return hmac.new(secret, key_id + b"\x00" + payload, hashlib.sha256).digest()


def mac_data(secret, key_id, payload, data):
    # with data: HMAC-SHA256(secret, key id || 0x01 || len(payload) ||
    # len(data) || payload || data), lengths unsigned 64-bit big-endian
    head = b"\x01" + struct.pack(">QQ", len(payload), len(data))
    return hmac.new(secret, key_id + head + payload + data, hashlib.sha256).digest()


def seal(secret, key_id, msg, data=b""):
    payload = json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if data:
        return [key_id, payload, mac_data(secret, key_id, payload, data), data]
    return [key_id, payload, mac(secret, key_id, payload)]


def open_envelope(secret, key_id, frames):
    """Returns the payload object and the data frame (b"" if none)."""
    if len(frames) not in (3, 4):
        raise ValueError("want 3 or 4 envelope frames, got %d" % len(frames))
    kid, payload, tag = frames[:3]
    data = frames[3] if len(frames) == 4 else b""
    if len(frames) == 4 and not data:
        raise ValueError("empty data frame")
    if kid != key_id:
        raise ValueError("unknown key id %r" % kid)
    want = mac_data(secret, key_id, payload, data) if data else mac(secret, key_id, payload)
    if not hmac.compare_digest(tag, want):
        raise ValueError("bad MAC")
    msg = json.loads(payload.decode("utf-8"))
    for member in ("type", "id", "ts"):
        if member not in msg:
            raise ValueError("payload without %r: %r" % (member, msg))
    if not isinstance(msg["ts"], int) or abs(msg["ts"] - now_ms()) > WINDOW_MS:
        raise ValueError("stale or bad ts %r" % msg["ts"])
    return msg, data


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def doc_example():
    # The example in the doc: key id "k1", the ASCII secret below.
    secret = b"0123456789abcdef0123456789abcdef"
    payload = b'{"type":"echo","id":"a1","ts":1800000000000,"body":{"x":1}}'
    got = mac(secret, b"k1", payload).hex()
    want = "23e2b0d3dc5a6064999e4b854a0a86d7223f7d8b72338789cf473be0f3c80a7e"
    check(got == want, "doc example MAC: got %s, want %s" % (got, want))
    got = mac_data(secret, b"k1", payload, b"hi\n").hex()
    want = "bbc8726c46f8d0651e21b391f799a069a147d33b5a889a0a213ca40bfbbe0b6c"
    check(got == want, "doc example MAC with data: got %s, want %s" % (got, want))


def client(endpoint, key_id, secret):
    ctx = zmq.Context.instance()
    # "A client (DEALER) sends an empty frame first, exactly as a REQ socket
    # does". A DEALER, so that a refused request (no answer) does not wedge
    # the socket as it would a REQ.
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)

    reply_data = [b""]  # the last reply's data frame

    def call(msg, frames=None, expect_reply=True):
        s.send_multipart([b""] + (frames or seal(secret, key_id, msg)))
        if not s.poll(5000 if expect_reply else 300):
            check(not expect_reply, "no reply to %r" % (msg,))
            return None
        check(expect_reply, "a reply to a message that should be refused: %r" % (msg,))
        got = s.recv_multipart()
        check(got[0] == b"", "reply without the empty delimiter: %r" % got)
        rep, data = open_envelope(secret, key_id, got[1:])
        reply_data[0] = data
        check(rep.get("re") == msg["id"], "reply's re %r, want %r" % (rep.get("re"), msg["id"]))
        check(rep["type"] == msg["type"], "reply's type %r, want %r" % (rep["type"], msg["type"]))
        check(rep["id"] != msg["id"], "reply reuses the request id")
        return rep

    body = {"x": [1, "\u00e9", None], "y": "z"}
    req = {"type": "echo", "id": new_id(), "ts": now_ms(), "body": body}
    frames = seal(secret, key_id, req)
    rep = call(req, frames)
    check(rep.get("body") == body and "error" not in rep, "echo reply %r" % rep)

    # The same frames again: a replay, refused with an error reply, code
    # "rejected", that carries no body.
    rep = call(req, frames)
    check(rep.get("error", {}).get("code") == "rejected", "replay reply %r" % rep)
    check("body" not in rep, "an error reply carries no body: %r" % rep)

    # A reply is never a request: the error reply sent back is refused
    # without an answer.
    payload = json.dumps(rep, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    call(rep, [key_id, payload, mac(secret, key_id, payload)], expect_reply=False)

    # A type without a handler: an error reply, code "unknown_type".
    req = {"type": "nosuch", "id": new_id(), "ts": now_ms()}
    rep = call(req)
    check(rep.get("error", {}).get("code") == "unknown_type", "unknown type reply %r" % rep)
    check("body" not in rep, "an error reply carries no body: %r" % rep)

    # A timestamp a minute old: an error reply, code "rejected".
    req = {"type": "echo", "id": new_id(), "ts": now_ms() - 60_000, "body": 1}
    rep = call(req)
    check(rep.get("error", {}).get("code") == "rejected", "stale request reply %r" % rep)

    # A forged MAC, and a payload altered after signing: no answer.
    req = {"type": "echo", "id": new_id(), "ts": now_ms(), "body": 2}
    kid, payload, tag = seal(secret, key_id, req)
    call(req, [kid, payload, bytes(32)], expect_reply=False)
    call(req, [kid, payload.replace(b":2}", b":3}"), tag], expect_reply=False)

    # Raw bytes in a data frame: the echo handler answers with the same
    # bytes in its reply's data frame.
    raw = bytes(range(256)) * 3
    req = {"type": "echo", "id": new_id(), "ts": now_ms(), "body": "d"}
    rep = call(req, seal(secret, key_id, req, raw))
    check(rep.get("body") == "d" and reply_data[0] == raw, "echo with data reply %r" % rep)

    # Tampered data, data moved to another message, data stripped: no
    # answer (each fails the MAC).
    req = {"type": "echo", "id": new_id(), "ts": now_ms(), "body": 4}
    kid, payload, tag, data = seal(secret, key_id, req, b"abc")
    call(req, [kid, payload, tag, b"abd"], expect_reply=False)
    call(req, [kid, payload, tag], expect_reply=False)
    other = {"type": "echo", "id": new_id(), "ts": now_ms(), "body": 4}
    okid, opayload, otag, _ = seal(secret, key_id, other, b"xyz")
    call(other, [okid, opayload, otag, data], expect_reply=False)

    # Members in another order, whitespace, and an unknown member (ignored).
    req_id = new_id()
    payload = ('{ "body" : "ok", "future": [1], "ts": %d, "id": "%s", "type": "echo" }' % (now_ms(), req_id)).encode()
    rep = call({"type": "echo", "id": req_id}, [key_id, payload, mac(secret, key_id, payload)])
    check(rep.get("body") == "ok", "reordered payload reply %r" % rep)
    s.close()


def server(endpoint, key_id, secret):
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.ROUTER)
    s.setsockopt(zmq.LINGER, 0)
    s.bind(endpoint)
    print(s.getsockopt(zmq.LAST_ENDPOINT).decode(), flush=True)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    seen = set()
    while not done.is_set():
        if not s.poll(100):
            continue
        frames = s.recv_multipart()
        # "every frame up to and including the first empty one (or, if
        # there is none, the first frame) is routing"
        cut = frames.index(b"") + 1 if b"" in frames else 1
        routing, env = frames[:cut], frames[cut:]
        try:
            req, data = open_envelope(secret, key_id, env)
        except Exception as e:  # refused: no answer
            print("refused: %s" % e, file=sys.stderr, flush=True)
            continue
        if req["id"] in seen:
            continue
        seen.add(req["id"])
        rep = {"type": req["type"], "id": new_id(), "ts": now_ms(), "re": req["id"]}
        if req["type"] == "py":
            rep["body"] = {"py": req.get("body")}
        else:
            rep["error"] = {"code": "unknown_type", "message": "no handler for %s" % req["type"]}
            data = b""
        # The request's data, if any, comes back reversed in the reply's.
        s.send_multipart(routing + seal(secret, key_id, rep, data[::-1]))


def push(endpoint, key_id, secret):
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.LINGER, 5000)
    s.connect(endpoint)
    for i in range(3):
        s.send_multipart(seal(secret, key_id, {"type": "stat", "id": new_id(), "ts": now_ms(), "body": {"n": i}}))
    items = [{"type": "stat", "id": new_id(), "ts": now_ms(), "body": {"n": 3 + i}} for i in range(2)]
    s.send_multipart(seal(secret, key_id, {"type": "zmqloop.batch", "id": new_id(), "ts": now_ms(), "body": items}))
    s.send_multipart(seal(secret, key_id, {"type": "stat", "id": new_id(), "ts": now_ms(), "body": {"n": 5}}, b"\x00\xffraw"))
    s.close()  # lingers until sent


def main():
    mode, endpoint, key_id, secret = sys.argv[1:5]
    key_id, secret = key_id.encode(), secret.encode()
    doc_example()
    {"client": client, "server": server, "push": push}[mode](endpoint, key_id, secret)
    ctx = zmq.Context.instance()
    ctx.term()


if __name__ == "__main__":
    try:
        main()
    except Exception as e:
        print("peer.py: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        sys.exit(1)
