"""The OpenAI-compatible wire format: a request body for a task's prompt, the answer's text."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["answer_of", "error_message", "request_for"]

_OPTIONS = ("temperature", "max_tokens", "top_p", "top_k")


def request_for(api: str, endpoint: str, model: str | None, task: dict,
                prompt: str) -> tuple[str, dict]:
    """The URL and JSON body that ask ``endpoint`` for ``prompt`` with ``task``'s sampling.

    ``api`` is ``"chat"`` (a system and a user message) or ``"completions"`` (the system
    prompt, a blank line, the prompt).
    """
    body: dict[str, Any] = {"model": task.get("model") or model}
    system = task.get("system_prompt")
    if api == "chat":
        body["messages"] = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}]
        url = f"{endpoint}/chat/completions"
    else:
        body["prompt"] = f"{system}\n\n{prompt}" if system else prompt
        url = f"{endpoint}/completions"
    for key in _OPTIONS:
        value = task.get(key)
        if value is not None:
            body[key] = value
    if task.get("stop_sequences"):
        body["stop"] = list(task["stop_sequences"])
    return url, body


def answer_of(api: str, raw: bytes) -> tuple[str, dict]:
    """The first choice's text and the usage counts of an HTTP 200 answer.

    Raises ``ValueError`` (or ``KeyError``, ``IndexError``, ``TypeError``) when ``raw`` is
    not an OpenAI-compatible answer.
    """
    data = json.loads(raw)
    choice = data["choices"][0]
    text = choice["message"]["content"] if api == "chat" else choice["text"]
    return text if text is not None else "", data.get("usage") or {}


def error_message(raw: bytes) -> str:
    """The server's own words from an error answer, at most 500 characters."""
    try:
        data = json.loads(raw)
        err = data.get("error", data)
        if isinstance(err, dict):
            return str(err.get("message") or err)[:500]
        return str(err)[:500]
    except (ValueError, AttributeError):
        return raw[:500].decode(errors="replace")
