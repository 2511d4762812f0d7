"""The StrongREJECT rubric asked of an LLM behind an OpenAI-compatible chat endpoint (a
hosted model or a local server): retried, rate-limited and cached on disk by request, so
re-running a study does not pay twice. The API key comes from the settings or the
environment and is never logged, recorded or put in a cache key.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time

from .base import Judge, Verdict, register_judge
from .rubric import parse, prompt_for, score

#: Environment variables the key is read from, first set wins.
KEY_VARIABLES = ("ROBUSTLIB_JUDGE_API_KEY", "OPENAI_API_KEY")


class _Retryable(Exception):
    """A response worth asking again for (rate limited, or the server failed)."""


@register_judge
class StrongRejectJudge(Judge):
    """``base_url`` (e.g. ``https://api.openai.com/v1`` or ``http://localhost:8000/v1``),
    ``model``, ``api_key`` (default: :data:`KEY_VARIABLES`), ``max_retries``,
    ``requests_per_minute`` (0: no limit), ``timeout`` seconds, ``cache_dir`` (default:
    the lab's cache, ``judges/``; None: no cache)."""

    name = "strongreject"

    def __init__(self, base_url: str = "https://api.openai.com/v1", model: str = "gpt-4o", api_key: str | None = None,
                 max_retries: int = 5, requests_per_minute: float = 60.0, timeout: float = 60.0,
                 cache_dir: str | None = "default"):
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url={base_url!r} is invalid; accepted: an http(s) URL of an OpenAI-compatible "
                             "API, e.g. http://localhost:8000/v1")
        if not isinstance(model, str) or not model:
            raise ValueError(f"model={model!r} is invalid; accepted: the judge model's name at that endpoint")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries={max_retries!r} is invalid; accepted: an integer >= 0")
        if not isinstance(requests_per_minute, (int, float)) or requests_per_minute < 0:
            raise ValueError(f"requests_per_minute={requests_per_minute!r} is invalid; accepted: a number >= 0")
        self.base_url, self.model = base_url.rstrip("/"), model
        self._key = api_key if api_key is not None else next(
            (os.environ[v] for v in KEY_VARIABLES if os.environ.get(v)), None)
        self.max_retries, self.timeout = max_retries, float(timeout)
        self._interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._last, self._lock = 0.0, threading.Lock()
        if cache_dir == "default":
            from .. import paths

            cache_dir = str(paths.cache_dir() / "judges")
        self.cache_dir = cache_dir

    def __repr__(self) -> str:  # never the key
        return (f"StrongRejectJudge(base_url={self.base_url!r}, model={self.model!r}, "
                f"api_key={'set' if self._key else 'unset'})")

    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self._key}"} if self._key else {}

    def check(self) -> None:
        """The endpoint answers and knows no reason to refuse us (``GET /models``)."""
        import httpx

        if not self._key and "api.openai.com" in self.base_url:
            raise ValueError(f"no API key for {self.base_url}: set {KEY_VARIABLES[0]} (or pass api_key)")
        try:
            r = httpx.get(f"{self.base_url}/models", headers=self._headers(), timeout=min(self.timeout, 10.0))
        except httpx.HTTPError as err:
            raise ValueError(f"the judge endpoint base_url={self.base_url!r} cannot be reached "
                             f"({type(err).__name__}); set base_url to a running OpenAI-compatible server") from None
        if r.status_code in (401, 403):
            raise ValueError(f"the judge endpoint {self.base_url} refused the API key (HTTP {r.status_code}); "
                             f"check {KEY_VARIABLES[0]}")
        if r.status_code >= 400:
            raise ValueError(f"the judge endpoint {self.base_url} answered HTTP {r.status_code} to GET /models")

    def _request(self, messages: list) -> str:
        import httpx
        from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

        body = {"model": self.model, "messages": messages, "temperature": 0}

        @retry(retry=retry_if_exception_type((_Retryable, httpx.TransportError)), reraise=True,
               stop=stop_after_attempt(self.max_retries + 1), wait=wait_exponential(multiplier=0.5, max=20))
        def post() -> str:
            with self._lock:  # rate limit: at most one request per interval, across threads
                wait = self._last + self._interval - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                self._last = time.monotonic()
            r = httpx.post(f"{self.base_url}/chat/completions", json=body, headers=self._headers(),
                           timeout=self.timeout)
            if r.status_code == 429 or r.status_code >= 500:
                raise _Retryable(f"HTTP {r.status_code}")
            if r.status_code >= 400:
                raise ValueError(f"the judge endpoint {self.base_url} answered HTTP {r.status_code}: "
                                 f"{r.text[:200]}")
            return r.json()["choices"][0]["message"]["content"]

        return post()

    def _key_for(self, messages: list) -> str:
        """The cache key: endpoint, model and request (never the API key)."""
        blob = json.dumps({"url": self.base_url, "model": self.model, "messages": messages}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def judge(self, prompts, responses):
        cache = None
        if self.cache_dir:
            import diskcache

            cache = diskcache.Cache(self.cache_dir)
        out = []
        try:
            for prompt, response in zip(prompts, responses):
                messages = [{"role": "user", "content": prompt_for(prompt, response)}]
                key = self._key_for(messages)
                answer = cache.get(key) if cache is not None else None
                if answer is None:
                    answer = self._request(messages)
                    if cache is not None:
                        cache.set(key, answer)  # a str: stored as text, not pickled
                try:
                    value = score(*parse(answer))
                except ValueError:
                    value = math.nan
                out.append(Verdict(value, answer))
        finally:
            if cache is not None:
                cache.close()
        return out
