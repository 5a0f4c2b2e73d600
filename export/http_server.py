"""A bounded HTTP/1.0 JSON server: a fixed worker pool, body-size limits and read timeouts.

`BoundedServer` answers every request with JSON, and a request it cannot take
with an HTTP error rather than a dropped connection:

```none
busy            every worker busy and the queue full      503, at once, from the accept thread
no length       POST without Content-Length                411
bad length      Content-Length not a non-negative integer  400
too large       Content-Length above `max_body_bytes`      413 (the body is not read)
slow client     no byte for `read_timeout` seconds         408 (while reading the body)
not UTF-8/JSON  body that is not UTF-8 JSON, or too deep   400
bug             any other exception of the application    500 with one line, the server stays up
hung up         the client closed before its turn          no work is done (nobody reads it)
```

The application is a function `(method, path, body or None) -> (status, value)`;
the value is sent as strict JSON (`NaN`/`Infinity` are not JSON: a value holding
them is the application's bug and becomes a 500).
"""

import concurrent.futures
import http.server
import json
import select
import socket
import threading

__all__ = ["BoundedServer", "HttpError"]


class HttpError(ValueError):
  """An error answer: HTTP `status` with `{"error": message}`."""

  def __init__(self, message, status=400):
    super().__init__(message)
    self.status = status


def _encode(status, value):
  """The JSON bytes of `value`; a value that is not strict JSON is a 500."""
  try:
    return status, json.dumps(value, allow_nan=False).encode()
  except (TypeError, ValueError) as error:
    return 500, json.dumps({"error": f"Internal error: the answer is not JSON ({error})."}).encode()


class BoundedServer(http.server.HTTPServer):
  """Serves `application` with at most `max_workers` requests in work and `max_pending` queued.

  Args:
    address: `(host, port)`; port 0 picks a free one.
    application: `(method, path, body) -> (status, JSON value)`; `body` is the
      decoded JSON of a POST, `None` for a GET; it raises `HttpError` for an
      error answer.
    max_workers: requests computed at once. Default value: 4.
    max_pending: accepted requests waiting for a worker; more get 503. Default value: 16.
    max_body_bytes: largest accepted body. Default value: 10 MiB.
    read_timeout: seconds a client may stay silent while sending. Default value: 10.
  """

  daemon_threads = True
  allow_reuse_address = True

  def __init__(self, address, application, *, max_workers=4, max_pending=16,
               max_body_bytes=10 * 2**20, read_timeout=10.0):
    for name, value in (("max_workers", max_workers), ("max_body_bytes", max_body_bytes)):
      if value < 1:
        raise ValueError(f"`{name}` must be >= 1; got {value}.")
    if max_pending < 0:
      raise ValueError(f"`max_pending` must be >= 0; got {max_pending}.")
    if not read_timeout > 0:
      raise ValueError(f"`read_timeout` must be > 0; got {read_timeout}.")
    self.application = application
    self.max_body_bytes = max_body_bytes
    self.read_timeout = read_timeout
    self._slots = threading.BoundedSemaphore(max_workers + max_pending)
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers,
                                                       thread_name_prefix="tf_lti_http")
    super().__init__(address, _Handler)

  def process_request(self, request, client_address):
    """Queues the request for a worker, or answers 503 at once when the queue is full."""
    if not self._slots.acquire(blocking=False):
      status, data = _encode(503, {"error": "The server is busy: every worker and queue slot "
                                            "is taken; retry later."})
      try:
        request.settimeout(self.read_timeout)
        request.sendall(_response_bytes(status, data))
      except OSError:
        pass  # The client is gone.
      self.shutdown_request(request)
      return
    self._pool.submit(self._work, request, client_address)

  def _work(self, request, client_address):
    try:
      self.finish_request(request, client_address)
    except Exception:  # pylint: disable=broad-except  (a broken connection: nothing to answer)
      pass
    finally:
      self.shutdown_request(request)
      self._slots.release()

  def server_close(self):
    super().server_close()
    self._pool.shutdown(wait=True)


def _response_bytes(status, data):
  reason = http.server.BaseHTTPRequestHandler.responses.get(status, ("",))[0]
  head = (f"HTTP/1.0 {status} {reason}\r\nContent-Type: application/json\r\n"
          f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n")
  return head.encode("latin-1") + data


class _Handler(http.server.BaseHTTPRequestHandler):
  """GET and POST for `BoundedServer`; every answer is JSON."""

  def setup(self):
    self.timeout = self.server.read_timeout  # The socket timeout of every read.
    super().setup()

  def _reply(self, status, value):
    status, data = _encode(status, value)
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def send_error(self, code, message=None, explain=None):
    """http.server's own errors (a malformed request line or header) as JSON too."""
    del explain
    self.close_connection = True
    self._reply(code, {"error": message or self.responses.get(code, ("Error",))[0]})

  def _client_gone(self):
    """Whether the client closed its connection (it cannot read an answer any more)."""
    try:
      readable, _, _ = select.select([self.connection], [], [], 0)
      return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
      return True

  def _answer(self, body_reader):
    try:
      body = body_reader()
      if self._client_gone():  # It hung up while queued: skip the work nobody will read.
        self.close_connection = True
        return
      self._reply(*self.server.application(self.command, self.path, body))
    except HttpError as error:
      self._reply(error.status, {"error": str(error)})
    except (socket.timeout, ConnectionError):
      self.close_connection = True  # The client went silent or away: nobody to answer.
    except Exception as error:  # pylint: disable=broad-except  (a bug: answer, stay up)
      line = (str(error).strip().splitlines() or [""])[0]
      self._reply(500, {"error": f"Internal error: {type(error).__name__}: {line}"})

  def do_GET(self):  # pylint: disable=invalid-name
    self._answer(lambda: None)

  def do_POST(self):  # pylint: disable=invalid-name
    self._answer(self._read_json)

  def _read_json(self):
    """The request's JSON body, after the length, size, time and encoding checks."""
    length = self.headers.get("Content-Length")
    if length is None:
      raise HttpError("A POST needs a Content-Length header.", status=411)
    if not length.strip().isdigit():
      raise HttpError(f"Content-Length must be a non-negative integer; got {length!r:.40}.")
    length = int(length)
    if length > self.server.max_body_bytes:
      self.close_connection = True
      self._discard(min(length, self.server.max_body_bytes))
      raise HttpError(f"The body of {length} bytes is larger than the limit of "
                      f"{self.server.max_body_bytes} bytes.", status=413)
    try:
      body = self.rfile.read(length)
    except socket.timeout:
      body = None
    if body is None or len(body) < length:
      self.close_connection = True
      raise HttpError(f"The body ended or stalled before its Content-Length of {length} bytes "
                      f"(read timeout {self.server.read_timeout:g} s).", status=408)
    try:
      return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as error:
      raise HttpError(f"The body is not UTF-8: {error.reason} at byte {error.start}.") from None
    except json.JSONDecodeError as error:
      raise HttpError(f"JSON Parse error: {error}") from None
    except RecursionError:
      raise HttpError("JSON Parse error: the body is nested too deeply.") from None

  def _discard(self, length):
    """Reads and drops up to `length` bytes of the body (until the read timeout), so that
    closing the connection does not reset it before the client reads the answer."""
    try:
      while length > 0:
        chunk = self.rfile.read1(min(length, 65536))
        if not chunk:
          return
        length -= len(chunk)
    except (socket.timeout, ConnectionError):
      pass

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    del format, args  # Quiet: no line per request on stderr.
