"""The state API: HTTP/1.1 over a root-only Unix socket.

`pycontain top`, `status`, `kill|freeze|thaw`, `adopt` and `release` talk to
a running daemon (or `pycontain run --socket`) here. The socket lives in a
0700 directory and is itself 0600: only root may read state or stop agents.

    GET  /v1/state                      -> NodeState.snapshot()
    POST /v1/agents/<name>/<verb>       verb in kill, freeze, thaw
    POST /v1/adopt    {"cgroup", "name"}
    POST /v1/release  {"name"}
    POST /v1/start    {"name", "labels"} -> {"agent", "cgroup", "privileges", "identity"}   (app/agent_api.py)
    POST /v1/starts   {"name", "labels": [...]} -> {"agents": [...]}
    POST /v1/stop     {"name"}

Every POST body reaches its handler with `_peer_pid` set by the server: the
asking process, from the socket (SO_PEERCRED), never from the client's JSON.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

from ..core.errors import EnvironmentProblem, PycontainError
from .api_workers import Workers
from .state import NodeState

MAX_BODY = 64 * 1024
API_WORKERS = 4              # threads serving requests (api_workers.py)
OVERFLOW_S = 0.2             # a request queued this long gets a thread of its own
ACCEPT_POLL_S = 0.1          # the accept loop's wake-up: rescues run at least this often
IDLE_S = 10.0                # a connection silent this long is closed (keep-alive holds no worker)
# routes whose handler takes only the body (app/daemon.py, app/agent_api.py)
BODY_ROUTES = ("/v1/adopt", "/v1/release", "/v1/start", "/v1/starts", "/v1/stop")
_AGENT_ROUTE = re.compile(r"^/v1/agents/([A-Za-z0-9_.:-]{1,64})/(kill|freeze|thaw)$")


class ApiError(PycontainError):
    exit_code = 1


class _Server(socketserver.UnixStreamServer):
    """Requests are served by a few threads (api_workers.py: why not one per
    connection); the accept loop rescues any that waited too long."""
    allow_reuse_address = True
    request_queue_size = 256     # many agents start at once (rollout workers): default 5 refuses them

    def __init__(self, path: str, handler):
        super().__init__(path, handler)
        self.workers = Workers(self._serve_one, API_WORKERS, OVERFLOW_S)

    def process_request(self, request, client_address) -> None:
        self.workers.submit((request, client_address))

    def service_actions(self) -> None:
        self.workers.rescue()

    def _serve_one(self, item) -> None:
        request, client_address = item
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        for request, _addr in self.workers.close():
            self.shutdown_request(request)


PEER_PID = "_peer_pid"      # set in every POST body by the server: the asking process (0: not visible here)


def peer_pid(conn: socket.socket) -> int:
    """The pid of the process at the other end of a unix socket (SO_PEERCRED,
    in this pid namespace; 0 when it is not visible in it)."""
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return 0
    return struct.unpack("3i", creds)[0]


def _make_handler(state: NodeState, handlers: dict[str, Callable]):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = IDLE_S
        wbufsize = -1       # buffered: status, headers and body leave in one send (the client wakes once)

        def log_message(self, *args):  # keep the daemon's stderr for its own reports
            pass

        def address_string(self):
            return "unix"

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body, ensure_ascii=True, default=str).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/v1/state":
                self._send(200, state.snapshot())
            else:
                self._send(404, {"ok": False, "error": f"no route {self.path}"})

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            if n > MAX_BODY:
                return self._send(413, {"ok": False, "error": "body too large"})
            try:
                body = json.loads(self.rfile.read(n) or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("body must be a JSON object")
            except ValueError as e:
                return self._send(400, {"ok": False, "error": f"bad JSON: {e}"})
            body[PEER_PID] = peer_pid(self.connection)     # the kernel's word; whatever the client put there goes
            m = _AGENT_ROUTE.match(self.path)
            try:
                if m and m.group(2) in handlers:
                    out = handlers[m.group(2)](m.group(1), body)
                elif self.path in BODY_ROUTES and self.path[4:] in handlers:
                    out = handlers[self.path[4:]](body)
                else:
                    return self._send(404, {"ok": False, "error": f"no route {self.path}"})
            except PycontainError as e:
                out = {"ok": False, "error": e.message}
            except Exception as e:  # a handler bug must not kill the server thread silently
                out = {"ok": False, "error": f"internal error: {type(e).__name__}: {e}"}
            self._send(200 if out.get("ok", True) else 409, out)

    return Handler


class StateServer:
    def __init__(self, state: NodeState, socket_path: str, handlers: dict[str, Callable] | None = None):
        self.state = state
        self.socket_path = socket_path
        self.handlers = handlers or {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        d = os.path.dirname(os.path.abspath(self.socket_path))
        os.makedirs(d, mode=0o700, exist_ok=True)
        if d.startswith("/run/pycontain"):
            os.chmod(d, 0o700)
        if os.path.exists(self.socket_path):
            if daemon_answers(self.socket_path):
                raise EnvironmentProblem(f"another pycontain is already serving {self.socket_path}",
                                         "stop it, or pass --socket with another path")
            os.unlink(self.socket_path)
        old = os.umask(0o177)          # the socket is born 0600: no window where others can connect
        try:
            self._server = _Server(self.socket_path, _make_handler(self.state, self.handlers))
        finally:
            os.umask(old)
        os.chmod(self.socket_path, 0o600)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(ACCEPT_POLL_S,), name="state-api",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass


def daemon_answers(path: str, timeout: float = 1.0) -> bool:
    """True when something accepts connections at path within timeout."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 5.0):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class StateClient:
    def __init__(self, socket_path: str = "/run/pycontain/pycontain.sock", timeout: float = 10.0):
        self.socket_path = socket_path
        self.timeout = timeout

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        conn = _UnixConnection(self.socket_path, self.timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
            resp = conn.getresponse()
            out = json.loads(resp.read() or b"{}")
        except (FileNotFoundError, ConnectionRefusedError):
            raise EnvironmentProblem(f"no pycontain daemon listening at {self.socket_path}",
                                     "start `pycontain daemon` (or `pycontain run --socket PATH`)") from None
        except PermissionError:
            raise EnvironmentProblem(f"permission denied on {self.socket_path}", "the state API is root-only") from None
        except (OSError, ValueError) as e:
            raise EnvironmentProblem(f"state API at {self.socket_path} failed: {e}") from None
        finally:
            conn.close()
        if isinstance(out, dict) and out.get("ok") is False:
            raise ApiError(str(out.get("error", "request failed")))
        return out

    def state(self) -> dict:
        return self._request("GET", "/v1/state")

    def post(self, path: str, body: dict) -> dict:
        return self._request("POST", path, body)
