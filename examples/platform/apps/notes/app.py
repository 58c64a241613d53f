"""notes: counts its visits in its writable data directory, and shows that
its code directory is read-only."""
import fcntl
import os

DATA = os.environ.get("PAASKIT_DATA", "/data")


def app(environ, start_response):
    path = os.path.join(DATA, "visits")
    with open(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        visits = int(f.read() or "0") + 1
        f.seek(0)
        f.truncate()
        f.write(str(visits))
    try:
        with open(os.path.join(os.path.dirname(__file__), "scribble"), "w") as f:
            f.write("x")
        code_dir = "writable (isolation is off)"
    except OSError as e:
        code_dir = "read-only ({})".format(e.strerror)
    body = "visit {} (kept in {}); the code directory is {}\n".format(visits, path, code_dir).encode()
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]
