"""validate: the LLM's answer must parse and validate against the taxonomy-generated model, or be re-asked."""

from __future__ import annotations

import json
import re

from langgraph.runtime import Runtime
from pydantic import ValidationError

from agent.state import TriageContext, TriageState
from agent.taxonomy import answer_model

_FENCED_JSON = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL)


def extract_json(text: str) -> object:
    """The first JSON object in a reply, tolerating code fences and chatter around it."""
    match = _FENCED_JSON.search(text)
    candidate = match.group(1) if match else text
    start = candidate.find("{")
    if start < 0:
        raise ValueError("the answer contains no JSON object")
    # strict=False: llama.cpp's JSON grammar lets raw newlines and tabs into strings, which are harmless here
    decoder = json.JSONDecoder(strict=False)
    body = candidate[start:]
    try:
        return decoder.raw_decode(body)[0]
    except RecursionError:  # a thousand nested brackets: garbage, but the parser's RecursionError is no ValueError
        raise ValueError("the answer's JSON is nested too deeply") from None
    except json.JSONDecodeError:
        # an answer cut by max_tokens ends inside the rationale (the schema puts it last): close it and let the
        # answer model decide whether what came before is a valid answer
        for closing in ('"}', "}"):
            try:
                return decoder.raw_decode(body.rstrip() + closing)[0]
            except (json.JSONDecodeError, RecursionError):
                continue
        raise


def validate(state: TriageState, runtime: Runtime[TriageContext]) -> TriageState:
    model = answer_model(runtime.context.taxonomy, with_channel=state["ticket"].channel is None)
    attempts = state.get("attempts", 0) + 1
    try:
        answer = model.model_validate(extract_json(state.get("llm_reply", "")))
    except (ValueError, ValidationError) as exc:
        error = _short_error(exc)
        result: TriageState = {"attempts": attempts, "validation_error": error, "llm_answer": None}
        if attempts > runtime.context.settings.llm_max_reasks:
            result["warnings"] = [f"LLM answer invalid after {attempts} tries ({error}); labels come from the proposal"]
        return result
    return {"attempts": attempts, "validation_error": None, "llm_answer": answer.model_dump()}


def _short_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}" for e in exc.errors())[:500]
    return str(exc)[:500]


def route_after_validate(state: TriageState, runtime: Runtime[TriageContext]) -> str:
    if state.get("llm_answer") is not None:
        return "decide"
    return "classify" if state.get("attempts", 0) <= runtime.context.settings.llm_max_reasks else "decide"
