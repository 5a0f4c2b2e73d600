r"""A local HTTP server speaking TensorFlow Serving's REST predict API for one export.

The TF Serving model server cannot be installed on every machine (it cannot on
this project's, see docs/export.md); this adapter serves an export base with
the same request and response JSON, so that clients and tests are written
against TF Serving's contract:

```none
GET  /v1/models/<name>                                   version status
POST /v1/models/<name>[/versions/<version>]:predict      predict
```

Request bodies, as TF Serving parses them (tensorflow_serving/util/json_tensor.cc):

```none
row:      {"signature_name": s, "instances": [i_1, ..., i_B]}
          each instance holds every input of s for one example -- a bare value
          when s has one input, else {"input": value, ...} -- and each input is
          stacked along a new batch axis: a scalar input (num_steps) becomes
          [B] and fails the signature's shape check, so send those columnar.
columnar: {"signature_name": s, "inputs": value or {"input": value, ...}}
          every input of s as a whole tensor of any shape.
```

String inputs (a text model's `sentences`) are JSON strings, or `{"b64": base64}`
objects for arbitrary bytes; string outputs are JSON strings (UTF-8), or
`{"b64": ...}` objects for outputs whose name ends in `_bytes`, as TF
Serving writes them. `signature_name` defaults to `serving_default`. Responses: row requests get
`{"predictions": [p_1, ..., p_B]}` (per example a value, or `{"output": value}`
for several outputs; every output needs the batch size in its first
dimension), columnar requests get `{"outputs": value or {"output": value}}`.
Errors are HTTP 400 (404 for an unknown model, version or path) with
`{"error": message}`, also for an output that is not finite (JSON has no NaN).
The server (`http_server.BoundedServer`) bounds its work: a fixed worker pool
(503 when it and its queue are full), a body-size limit (413) and read
timeouts (408). A signature call cannot be cancelled once it runs (TF has no
cancellation for a running function), so the export's own request budget
bounds what a client that hangs up can cost. The signatures run in the TF2
runtime (`tf.saved_model.load`), not in TF Serving's TF1 session.

  adapter = rest_adapter.RestAdapter("exports/quickstart", model_name="vae")
  host, port = adapter.start()          # 127.0.0.1 and a free port
  ...                                   # POST http://127.0.0.1:<port>/v1/models/vae:predict
  adapter.stop()
"""

import base64
import binascii
import os
import re
import threading

import numpy as np
import tensorflow as tf

from . import http_server
from . import versions

__all__ = ["RequestError", "RestAdapter"]

_PREDICT_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?:predict$")
_STATUS_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?$")
# Parts of a signature's InvalidArgumentError: a failed `tf.debugging.Assert` (message, data),
# and the failing op.
_ASSERTION = re.compile(r"assertion failed: \[(.*?)\] \[(.*?)\]")
_NODE = re.compile(r"\[\[\{\{node ([^}]+)\}\}\]\]")


# A request TF Serving would reject: HTTP `status` with `{"error": message}`.
RequestError = http_server.HttpError


def _to_bytes(item, name):
  """A JSON string (UTF-8) or `{"b64": ...}` object as bytes; nested lists element by element."""
  if isinstance(item, list):
    return [_to_bytes(element, name) for element in item]
  if isinstance(item, str):
    return item.encode("utf-8")
  if isinstance(item, dict) and list(item) == ["b64"] and isinstance(item["b64"], str):
    try:
      return base64.b64decode(item["b64"], validate=True)
    except binascii.Error as error:
      raise RequestError(f"Input `{name}`: invalid base64 in {item!r:.100}: {error}") from error
  raise RequestError(f"Input `{name}`: JSON value {item!r:.100} is not of expected type string.")


def _to_array(value, spec, name):
  """A JSON value as an array of `spec`'s dtype: integers only for integer inputs, and every
  value representable (no integer overflow, finite floats); strings (or `{"b64": ...}`) for
  string inputs."""
  if spec.dtype == tf.string:
    array = np.array(_to_bytes(value, name), dtype=object)
    if not all(isinstance(element, bytes) for element in array.flat):
      raise RequestError(f"Input `{name}`: JSON value {value!r:.100} is ragged.")
    return array
  try:
    array = np.array(value)
  except ValueError as error:  # Ragged nested lists.
    raise RequestError(f"Input `{name}`: {error}") from error
  dtype = spec.dtype.as_numpy_dtype
  allowed = "iu" if np.issubdtype(dtype, np.integer) else "iuf"
  if array.dtype.kind not in allowed:
    raise RequestError(f"Input `{name}`: JSON value {value!r:.100} is not of expected type "
                       f"{spec.dtype.name}.")
  with np.errstate(over="ignore", invalid="ignore"):
    converted = array.astype(dtype)
  if np.issubdtype(dtype, np.integer):
    bad, problem = array[converted != array], "is out of the range of"
  else:
    bad, problem = array[~np.isfinite(converted)], "is not a finite"
  if bad.size:
    raise RequestError(f"Input `{name}`: JSON value {bad[0]} {problem} {spec.dtype.name}.")
  return converted


def _error_message(error):
  """One line for a signature's `InvalidArgumentError`: its input check's message (exporter's
  `check_<input>` ops), or the reason and the failing op."""
  message = error.message
  assertion = _ASSERTION.search(message)
  if assertion:
    text, data = assertion.groups()
    return f"{text} [{', '.join(data.split())}]" if text.endswith("shape") else f"{text} {data}"
  node = _NODE.search(message)
  lines = message.splitlines()
  reason = next((lines[i - 1].strip() for i, line in enumerate(lines) if "[[{{node" in line and i),
                lines[0].strip())
  if node is None:
    return reason
  checked = re.match(r"check_(\w+)/", node.group(1))
  prefix = f"Input `{checked.group(1)}`: " if checked else ""
  return f"{prefix}{reason} (node {node.group(1)})"


def _json_value(tensor, name):
  """A tensor as JSON: numbers, or strings (UTF-8; `{"b64": ...}` for names ending `_bytes`)."""
  value = tensor.numpy()
  if tensor.dtype != tf.string:
    return value.tolist()

  def convert(data):
    if name.endswith("_bytes"):
      return {"b64": base64.b64encode(data).decode("ascii")}
    return data.decode("utf-8", errors="replace")

  if isinstance(value, bytes):
    return convert(value)
  return np.vectorize(convert, otypes=[object])(value).tolist()


class RestAdapter:
  """Serves the highest version of an export base over TF Serving's REST predict API.

  Args:
    export_base: the directory of integer version directories (TF Serving's
      `--model_base_path`).
    model_name: the `<name>` of the request paths. Default value: `"default"`.

  Raises:
    FileNotFoundError: if `export_base` holds no version.
  """

  def __init__(self, export_base, model_name="default"):
    path = versions.saved_model_dir(export_base)
    if path == export_base:
      raise FileNotFoundError(f"`export_base` {export_base!r} is a version directory; give its "
                              "parent (TF Serving's --model_base_path).")
    self.model_name = model_name
    self.version = int(os.path.basename(path))
    self._loaded = tf.saved_model.load(path)
    self._server = None
    self._thread = None

  def status(self):
    """The body of `GET /v1/models/<name>`."""
    return {"model_version_status": [{"version": str(self.version), "state": "AVAILABLE",
                                      "status": {"error_code": "OK", "error_message": ""}}]}

  def predict(self, request):
    """The response body for a parsed predict request body (a dict).

    Raises:
      RequestError: for a request TF Serving rejects, or an input the model rejects.
    """
    if not isinstance(request, dict):
      raise RequestError("The request body must be a JSON object.")
    name = request.get("signature_name", "serving_default")
    if not isinstance(name, str):
      raise RequestError(f"'signature_name' must be a string; got {name!r:.100}.")
    if name not in self._loaded.signatures:
      raise RequestError(f'Serving signature key "{name}" not found.')
    signature = self._loaded.signatures[name]
    specs = signature.structured_input_signature[1]
    if ("instances" in request) == ("inputs" in request):
      raise RequestError("The request needs exactly one of 'instances' (row format) or 'inputs' "
                         "(columnar format).")
    row_format = "instances" in request
    inputs = (self._row_inputs(request["instances"], specs) if row_format
              else self._columnar_inputs(request["inputs"], specs))
    try:
      outputs = signature(**{key: tf.constant(value) for key, value in inputs.items()})
    except tf.errors.InvalidArgumentError as error:
      raise RequestError(_error_message(error)) from error
    except (ValueError, TypeError) as error:
      raise RequestError(str(error).strip().splitlines()[0]) from error
    for key, value in outputs.items():
      if value.dtype.is_floating and not bool(tf.reduce_all(tf.math.is_finite(value))):
        raise RequestError(f"Output `{key}` is not finite for these inputs: they are outside "
                           "what the model can compute (JSON has no NaN or Infinity).")
    if not row_format:
      if len(outputs) == 1:
        key, value = next(iter(outputs.items()))
        return {"outputs": _json_value(value, key)}
      return {"outputs": {key: _json_value(value, key) for key, value in outputs.items()}}
    batch = len(request["instances"])
    for key, value in outputs.items():
      if value.shape.rank == 0 or value.shape[0] != batch:
        raise RequestError(f"Tensor name: {key} has inconsistent batch size: "
                           f"{value.shape[0] if value.shape.rank else 0} expecting: {batch}")
    rows = {key: _json_value(value, key) for key, value in outputs.items()}
    if len(rows) == 1:
      return {"predictions": next(iter(rows.values()))}
    return {"predictions": [{key: values[b] for key, values in rows.items()}
                            for b in range(batch)]}

  @staticmethod
  def _row_inputs(instances, specs):
    if not isinstance(instances, list) or not instances:
      raise RequestError("'instances' must be a non-empty list.")
    names = sorted(specs)
    # An object is an instance's named inputs, except a {"b64": ...} string value.
    objects = [isinstance(instance, dict) and list(instance) != ["b64"] for instance in instances]
    if all(objects):
      for index, instance in enumerate(instances):
        if sorted(instance) != names:
          raise RequestError(f"Failed to process element: {index} of 'instances' list. JSON "
                             f"object keys must be equal to: {','.join(names)}")
      columns = {name: [instance[name] for instance in instances] for name in names}
    elif len(names) == 1 and not any(objects):
      columns = {names[0]: instances}
    else:
      raise RequestError("instances is a plain list, but expecting list of objects as multiple "
                         f"input tensors required: {','.join(names)}")
    return {name: _to_array(values, specs[name], name) for name, values in columns.items()}

  @staticmethod
  def _columnar_inputs(inputs, specs):
    if not isinstance(inputs, dict):
      if len(specs) != 1:
        raise RequestError("inputs is a plain value/list, but expecting an object as multiple "
                           f"input tensors required: {','.join(sorted(specs))}")
      inputs = {next(iter(specs)): inputs}
    missing = sorted(set(specs) - set(inputs))
    unknown = sorted(set(inputs) - set(specs))
    if missing or unknown:
      raise RequestError(f"'inputs' must name every input of the signature: missing {missing}, "
                         f"unknown {unknown}.")
    return {name: _to_array(value, specs[name], name) for name, value in inputs.items()}

  def start(self, host="127.0.0.1", port=0, **limits):
    """Serves in background threads; returns `(host, port)` (port 0: a free one).

    Args:
      host: the interface. Default value: "127.0.0.1" (this machine only).
      port: the port; 0 picks a free one. Default value: 0.
      **limits: `http_server.BoundedServer`'s `max_workers`, `max_pending`,
        `max_body_bytes` and `read_timeout`.
    """
    if self._server is not None:
      raise RuntimeError("The adapter is already serving; stop() it first.")
    self._server = http_server.BoundedServer((host, port), self.respond, **limits)
    self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
    self._thread.start()
    return self._server.server_address[:2]

  def stop(self):
    """Stops serving, lets requests in work finish, and closes the socket."""
    if self._server is not None:
      self._server.shutdown()
      self._server.server_close()
      self._thread.join()
      self._server = self._thread = None

  def respond(self, method, path, body):
    """`(status, JSON value)` for an HTTP request (`http_server.BoundedServer`'s application).

    Raises:
      RequestError: 404 for an unknown path, model or version; 400 for a bad request.
    """
    match = (_PREDICT_PATH if method == "POST" else _STATUS_PATH).match(path.split("?")[0])
    if match is None:
      raise RequestError(f"Malformed request: {method} {path:.200}", status=404)
    self.check_servable(*match.groups())
    return 200, (self.predict(body) if method == "POST" else self.status())

  def check_servable(self, name, version=None):
    """Raises a 404 `RequestError` unless `name` (and `version`, if given) are served here."""
    if name != self.model_name or (version is not None and int(version) != self.version):
      raise RequestError(f"Servable not found for request: {name} version {version or 'latest'}",
                         status=404)

