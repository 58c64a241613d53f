"""sandbox: shows what an app sees of the machine from inside its sandbox."""
import os
import resource


def limit(res):
    soft, _ = resource.getrlimit(res)
    return "unlimited" if soft == resource.RLIM_INFINITY else str(soft)


def app(environ, start_response):
    lines = [
        "What app {} sees:".format(os.environ.get("PAASKIT_APP", "?")),
        "  uid {} gid {}, pid {}".format(os.getuid(), os.getgid(), os.getpid()),
        "  / holds: {}".format(" ".join(sorted(os.listdir("/")))),
        "  /app (read-only): {}".format(" ".join(sorted(os.listdir("/app"))) if os.path.isdir("/app") else "-"),
        "  processes visible: {}".format(len([p for p in os.listdir("/proc") if p.isdigit()])),
        "  open files limit {}, processes limit {}".format(limit(resource.RLIMIT_NOFILE), limit(resource.RLIMIT_NPROC)),
    ]
    body = ("\n".join(lines) + "\n").encode()
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]
