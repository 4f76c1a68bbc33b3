"""Tests for the dev model server (llm/local/server.py), over real HTTP to a server
subprocess running the real model (SmolLM2-135M-Instruct, one thread). Answers are kept
short (num_predict ≤ 48) so the whole file takes seconds, not minutes."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time

import pytest

SERVER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "server.py")
MODEL = "smollm2:135m"
SCHEMA = {
    "type": "object",
    "properties": {"greeting": {"type": "string"}, "mood": {"type": "string", "enum": ["calm", "busy"]}},
    "required": ["greeting", "mood"],
    "additionalProperties": False,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ollama, openai = free_port(), free_port()
    log_path = tmp_path_factory.mktemp("model") / "server.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, SERVER, "--ollama-port", str(ollama), "--openai-port", str(openai), "--threads", "1", "--ctx", "2048"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            if request(ollama, "GET", "/")[0] == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the model server did not start: {log_path.read_text()[-2000:]}")
        time.sleep(0.2)
    yield {"ollama": ollama, "openai": openai}
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def request(port: int, method: str, path: str, body=None, timeout: float = 120):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    answer = conn.getresponse()
    raw = answer.read()
    conn.close()
    return answer.status, raw


def as_json(raw: bytes):
    return json.loads(raw)


def chat_body(**extra):
    body = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You answer with JSON only."},
            {"role": "user", "content": "Greet the operators of a lead service."},
        ],
        "stream": False,
        "format": SCHEMA,
        "options": {"temperature": 0, "seed": 42, "num_ctx": 2048, "num_predict": 48},
    }
    body.update(extra)
    return body


def test_root_version_and_tags(server):
    status, raw = request(server["ollama"], "GET", "/")
    assert (status, raw) == (200, b"Ollama is running")
    status, raw = request(server["ollama"], "GET", "/api/version")
    assert status == 200 and as_json(raw)["version"]
    status, raw = request(server["ollama"], "GET", "/api/tags")
    models = as_json(raw)["models"]
    assert [m["name"] for m in models] == [MODEL]
    assert models[0]["details"]["parameter_size"] == "135M"


def test_show_reports_the_models_real_context_length(server):
    status, raw = request(server["ollama"], "POST", "/api/show", {"model": MODEL})
    assert status == 200
    info = as_json(raw)["model_info"]
    assert info["general.architecture"] == "llama"
    assert info["llama.context_length"] == 8192


def test_an_unknown_model_gets_ollamas_404(server):
    for path in ("/api/show", "/api/chat"):
        status, raw = request(server["ollama"], "POST", path, chat_body(model="llama3.1:8b"))
        assert status == 404
        assert as_json(raw) == {"error": 'model "llama3.1:8b" not found, try pulling it first'}


def test_bad_requests_get_ollamas_error_shape(server):
    status, raw = request(server["ollama"], "POST", "/api/chat", b"{not json")
    assert status == 400 and "error" in as_json(raw)
    status, raw = request(server["ollama"], "GET", "/api/nothing")
    assert status == 404


def test_chat_follows_the_schema_and_counts_real_tokens(server):
    status, raw = request(server["ollama"], "POST", "/api/chat", chat_body())
    assert status == 200, raw
    answer = as_json(raw)
    assert answer["done"] is True and answer["done_reason"] in ("stop", "length")
    assert answer["model"] == MODEL
    assert answer["prompt_eval_count"] > 10
    assert 0 < answer["eval_count"] <= 48
    if answer["done_reason"] == "stop":
        content = json.loads(answer["message"]["content"])
        assert set(content) == {"greeting", "mood"}
        assert content["mood"] in ("calm", "busy")


def test_the_same_seed_gives_the_same_words_and_streaming_gives_them_too(server):
    first = as_json(request(server["ollama"], "POST", "/api/chat", chat_body())[1])
    second = as_json(request(server["ollama"], "POST", "/api/chat", chat_body())[1])
    assert first["message"]["content"] == second["message"]["content"]
    status, raw = request(server["ollama"], "POST", "/api/chat", chat_body(stream=True))
    assert status == 200
    lines = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
    assert all(not line["done"] for line in lines[:-1]) and lines[-1]["done"] is True
    assert "".join(line["message"]["content"] for line in lines) == first["message"]["content"]
    assert lines[-1]["eval_count"] == first["eval_count"]


def test_a_prompt_over_num_ctx_is_refused_without_truncate(server):
    body = chat_body(truncate=False)
    body["messages"][1]["content"] = "lead " * 400
    body["options"]["num_ctx"] = 256
    status, raw = request(server["ollama"], "POST", "/api/chat", body)
    assert status == 400
    assert "exceeds the context length (256 tokens)" in as_json(raw)["error"]


def test_num_predict_is_capped_by_the_room_left_in_num_ctx(server):
    body = chat_body(format=None)
    body["messages"][1]["content"] = "Write a long story about a lead form, at least 500 words."
    body["options"].update(num_ctx=64, num_predict=500)
    answer = as_json(request(server["ollama"], "POST", "/api/chat", body)[1])
    assert answer["prompt_eval_count"] + answer["eval_count"] <= 64
    assert answer["done_reason"] == "length"


def test_the_openai_api_is_llama_cpps_own(server):
    status, raw = request(server["openai"], "GET", "/v1/models")
    assert status == 200
    entry = as_json(raw)["data"][0]
    assert entry["id"] == MODEL and entry["meta"]["n_ctx"] == 2048
    body = {
        "model": MODEL,
        "messages": chat_body()["messages"],
        "temperature": 0,
        "seed": 42,
        "max_tokens": 48,
        "response_format": {"type": "json_schema", "json_schema": {"name": "greeting", "schema": SCHEMA}},
    }
    status, raw = request(server["openai"], "POST", "/v1/chat/completions", body)
    assert status == 200, raw
    answer = as_json(raw)
    assert answer["usage"]["prompt_tokens"] > 10 and answer["usage"]["completion_tokens"] > 0
    assert answer["choices"][0]["finish_reason"] in ("stop", "length")
