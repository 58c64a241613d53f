# A hostile tenant for the runner's isolation tests: an HTTP server on
# $PAASKIT_SOCKET (or 127.0.0.1:$PORT) whose endpoints each try one escape
# and answer what happened. Every answer closes its connection, so the
# front must connect again for the next request.
import ctypes
import errno
import os
import socket
import sys
import threading
import time
import urllib.parse

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
kept = []  # sockets kept open (listeners)

# x86_64 and aarch64 numbers of the calls the seccomp filter refuses.
ARCH = os.uname().machine
NR = {
    "x86_64": {"unshare": 272, "mount": 165, "keyctl": 250, "ptrace": 101, "bpf": 321,
               "add_key": 248, "setns": 308, "perf_event_open": 298, "kexec_load": 246,
               "open_by_handle_at": 304, "userfaultfd": 323, "pivot_root": 155,
               "getpid": 39},
    "aarch64": {"unshare": 97, "mount": 40, "keyctl": 219, "ptrace": 117, "bpf": 280,
                "add_key": 217, "setns": 268, "perf_event_open": 241, "kexec_load": 104,
                "open_by_handle_at": 265, "userfaultfd": 282, "pivot_root": 41,
                "getpid": 172},
}[ARCH]


def sys_call(name):
    args = {"unshare": (0x10000000 | 0x00020000,),  # CLONE_NEWUSER|CLONE_NEWNS
            "mount": (b"none", b"/tmp", b"tmpfs", 0, 0),
            "ptrace": (16, 1, 0, 0)}.get(name, (0, 0, 0, 0))
    cargs = [ctypes.c_char_p(a) if isinstance(a, bytes) else ctypes.c_long(a) for a in args]
    r = libc.syscall(ctypes.c_long(NR[name]), *cargs)
    e = ctypes.get_errno()
    if r == -1:
        return "errno %s" % errno.errorcode.get(e, e)
    return "ok %d" % r


def greet(listener):
    while True:
        c, _ = listener.accept()
        try:
            # Read the request first: closing before the client has sent
            # it would fail its send, and it would never read the answer.
            c.settimeout(10)
            c.recv(1024)
            c.sendall(b"HTTP/1.0 200 abstract\r\n\r\n")
        except OSError:
            pass
        c.close()


def connect(addr):
    # 10 s: every refusal the runner makes is active (a TCP reset or an
    # ICMP error), so only a connection that should succeed can wait this
    # long, and a loaded suite has made an allowed one take over 2 s.
    try:
        if addr.startswith("unix:"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(addr[5:])
        elif addr.startswith("abstract:"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect("\0" + addr[9:])
        else:
            host, port = addr.rsplit(":", 1)
            s = socket.create_connection((host, int(port)), timeout=10)
        try:
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            data = s.recv(200)
        except OSError:
            data = b""
        s.close()
        return "connected " + data.decode("latin-1").split("\r\n")[0]
    except OSError as e:
        return "refused %s" % (errno.errorcode.get(e.errno, e.errno) if e.errno else type(e).__name__)


def handle(path, q):
    if path == "/":
        return "hostile %d\n" % os.getuid()
    if path == "/swap":
        # Replace our own socket with a symlink to a socket of the host.
        sock = os.environ["PAASKIT_SOCKET"]
        tmp = sock + ".new"
        os.symlink(q["target"], tmp)
        os.rename(tmp, sock)
        return "swapped\n"
    if path == "/status":
        return open("/proc/self/status").read()
    if path == "/initstatus":
        try:
            return open("/proc/1/status").read()
        except OSError as e:
            return "error %s\n" % e
    if path == "/syscall":
        return sys_call(q["name"]) + "\n"
    if path == "/connect":
        return connect(q["addr"]) + "\n"
    if path == "/listen":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", int(q["port"])))
        s.listen(16)
        kept.append(s)
        return "listening\n"
    if path == "/abstract":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind("\0" + q["name"])
        s.listen(16)
        kept.append(s)
        # Answer whoever connects, so a connection that should succeed
        # says so at once instead of waiting out connect()'s read.
        threading.Thread(target=greet, args=(s,), daemon=True).start()
        return "listening\n"
    if path == "/myip":
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.connect((q.get("to", "192.0.2.1"), 9))
            return u.getsockname()[0] + "\n"
        except OSError as e:
            return "none %s\n" % errno.errorcode.get(e.errno, e.errno)
    if path == "/addrs":
        return open("/proc/net/dev").read()
    return None


def serve(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk
    line = data.split(b"\r\n", 1)[0].decode()
    target = line.split(" ")[1]
    u = urllib.parse.urlsplit(target)
    q = dict(urllib.parse.parse_qsl(u.query))
    try:
        body = handle(u.path, q)
        status = "200 OK" if body is not None else "404 Not Found"
        body = body or "no such endpoint\n"
    except Exception as e:  # report, keep serving
        status, body = "500 Internal Server Error", "error %r\n" % e
    b = body.encode()
    extra = ""
    if u.path == "/forge":
        extra = "X-Paaskit-Miss: 1\r\nX-Paaskit-Other: yes\r\n"
    if q.get("forge"):
        extra = "X-Paaskit-Miss: 1\r\nx-paaskit-instance: 99\r\n"
    conn.sendall(("HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%sConnection: close\r\n\r\n" % (status, len(b), extra)).encode() + b)


def main():
    if os.environ.get("PORT"):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", int(os.environ["PORT"])))
    else:
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if len(sys.argv) > 1 and sys.argv[1] == "symlink-first":
            # Never bind: point the socket path at the host's socket.
            os.symlink(os.environ["HOSTILE_TARGET"], os.environ["PAASKIT_SOCKET"])
            while True:
                time.sleep(3600)
        ls.bind(os.environ["PAASKIT_SOCKET"])
    ls.listen(64)
    while True:
        conn, _ = ls.accept()
        try:
            serve(conn)
        except OSError:
            pass
        finally:
            conn.close()


main()
