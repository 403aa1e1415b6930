# A Python server on the socket procward holds for it:
#   procward --listen 0.0.0.0:3000 -i 2 -- python3 examples/listen-fds/server.py
# procward binds once and passes the socket as fd 3 with LISTEN_FDS=1,
# LISTEN_FDNAMES and LISTEN_PID (this process's pid), as systemd does.
import http.server
import os
import socket

if os.environ.get("LISTEN_FDS") != "1" or os.environ.get("LISTEN_PID") != str(os.getpid()):
    raise SystemExit("run me under procward --listen ADDR")
sock = socket.fromfd(3, socket.AF_INET, socket.SOCK_STREAM)
os.close(3)


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from {os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


server = http.server.HTTPServer(("", 0), Hello, bind_and_activate=False)
server.socket.close()
server.socket = sock
server.serve_forever()
