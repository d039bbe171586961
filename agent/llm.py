"""The one place that talks to an LLM: any OpenAI-compatible endpoint through the `openai` client.

Transport failures (connection, timeout, rate limit, 5xx) are retried with tenacity, bounded; auth and
bad-request errors are not retried. Whatever still fails becomes `LLMUnavailable`, which the graph turns
into a fallback label and `needs_review`, never a crash.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import openai
from openai import OpenAI
from pydantic import BaseModel
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from agent.contracts import Usage

log = logging.getLogger(__name__)

StructuredMode = Literal["json_schema", "json_object", "none"]
_TRANSIENT = (
    openai.APIConnectionError,  # includes APITimeoutError
    openai.RateLimitError,
    openai.InternalServerError,
)


class LLMUnavailable(RuntimeError):
    """The LLM could not answer (down, slow, rate-limited beyond retries, or refused the request)."""


class LLMReply(BaseModel):
    text: str
    usage: Usage
    model: str


class LLMClient:
    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str = "not-needed",
        timeout_s: float = 60.0,
        max_attempts: int = 3,
        structured: StructuredMode = "json_schema",
        client: OpenAI | None = None,
    ) -> None:
        self.base_url = base_url
        self.model = model
        self.structured = structured
        self.max_attempts = max_attempts
        self._client = client or OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        schema: dict[str, Any] | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
    ) -> LLMReply:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if schema is not None and self.structured != "none":
            kwargs["response_format"] = self._response_format(schema)
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(self.max_attempts),
                wait=wait_exponential_jitter(multiplier=0.5, max=8.0),
                retry=retry_if_exception_type(_TRANSIENT),
                reraise=False,
            ):
                with attempt:
                    response = self._client.chat.completions.create(**kwargs)
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            raise LLMUnavailable(f"LLM at {self.base_url} unreachable after {self.max_attempts} attempts: {cause}") from cause
        except openai.APIStatusError as exc:  # 4xx other than 429: retrying will not help
            raise LLMUnavailable(f"LLM at {self.base_url} refused the request ({exc.status_code}): {exc.message}") from exc
        choice = response.choices[0] if response.choices else None
        text = (choice.message.content or "") if choice else ""
        usage = Usage(
            prompt_tokens=getattr(response.usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(response.usage, "completion_tokens", 0) or 0,
        )
        return LLMReply(text=text, usage=usage, model=response.model or self.model)

    def _response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self.structured == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": False}}
        return {"type": "json_object", "schema": schema}  # llama.cpp's grammar-constrained form
