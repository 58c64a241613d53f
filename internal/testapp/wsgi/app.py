"""The WSGI app of runner's benchmarks: the realistic workload (a Python
app under Debian's gunicorn, as ep.io and PythonAnywhere ran them). It
answers "hello <app>" like the Go test app, with a small HTML page's worth
of work: a template filled from the request's environ.

Serve it inside a sandbox with the image directory holding this file:

    /usr/bin/gunicorn --workers 2 --worker-class gthread --threads 4 \\
        --bind unix:$PAASKIT_SOCKET app:app
"""
import os

APP = os.environ.get("PAASKIT_APP", "?")

PAGE = """<!doctype html>
<html><head><title>{app}</title></head>
<body><h1>hello {app}</h1>
<p>you asked for {path} on {host} with {agent}</p>
</body></html>
"""


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/plain":
        body = ("hello " + APP + "\n").encode()
        ctype = "text/plain; charset=utf-8"
    else:
        body = PAGE.format(
            app=APP,
            path=environ.get("PATH_INFO", "/"),
            host=environ.get("HTTP_HOST", "?"),
            agent=environ.get("HTTP_USER_AGENT", "?"),
        ).encode()
        ctype = "text/html; charset=utf-8"
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]
