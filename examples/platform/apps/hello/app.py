"""hello: the smallest WSGI app, served by gunicorn inside a paaskit sandbox."""
import os
import socket


def app(environ, start_response):
    body = (
        "Hello from {app}, instance {inst}!\n"
        "  pid {pid} (a new PID namespace), uid {uid} (the app's own), host name {host}\n"
        "  you asked for {path} on {vhost}\n"
    ).format(
        app=os.environ.get("PAASKIT_APP", "?"),
        inst=os.environ.get("PAASKIT_INSTANCE", "?"),
        pid=os.getpid(),
        uid=os.getuid(),
        host=socket.gethostname(),
        path=environ.get("PATH_INFO", "/"),
        vhost=environ.get("HTTP_HOST", "?"),
    ).encode()
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]
