"""The LLM step: one chat completion from an OpenAI-compatible endpoint, through
the guarded outbound client."""

import json

import httpx

from workflows.outbound import OutboundRefused, outbound_client
from workflows.steps.base import StepError, StepType, register
from workflows.steps.http import shown_url

DEFAULT_TIMEOUT_S = 60
MAX_TIMEOUT_S = 600
_MESSAGE = {
    "type": "object",
    "properties": {"role": {"enum": ["system", "user", "assistant"]}, "content": {}},
    "required": ["role", "content"],
    "additionalProperties": False,
}


@register
class Llm(StepType):
    """A chat completion against an OpenAI-compatible endpoint, using a stored
    credential (base URL, key, default model) named by ``credential``.

    Either ``messages`` (role/content list) or ``prompt`` (with an optional
    ``system``). ``json: true`` asks for a JSON object and parses it. Output:
    ``{"content", "json"?, "model", "finishReason", "usage"}``. The key is sent
    as a bearer token and never appears in the step's record.
    """

    name = "llm"
    label = "LLM (chat completion, OpenAI-compatible)"
    schema = {
        "type": "object",
        "properties": {
            "credential": {"type": "string", "minLength": 1},
            "model": {"type": "string"},
            "messages": {"type": ["array", "string"], "items": _MESSAGE},
            "prompt": {},
            "system": {},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "max_tokens": {"type": "integer", "minimum": 1},
            "json": {"type": "boolean"},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_S},
        },
        "required": ["credential"],
        "oneOf": [{"required": ["messages"]}, {"required": ["prompt"]}],
        "additionalProperties": False,
    }

    def run(self, resolved, ctx):
        from workflows.credentials import CredentialError, credential_resolve

        try:
            credential = credential_resolve(name=resolved["credential"], kind="openai")
        except CredentialError as exc:
            raise StepError(str(exc)) from None
        messages = resolved.get("messages")
        if messages is None:
            messages = [{"role": "user", "content": _text(resolved["prompt"])}]
            if resolved.get("system"):
                messages.insert(0, {"role": "system", "content": _text(resolved["system"])})
        if not isinstance(messages, list) or not messages:
            raise StepError("messages must be a non-empty list of {role, content}")
        model = resolved.get("model") or credential.model
        if not model:
            raise StepError("no model: set one on the step or on the credential")
        body = {"model": model, "messages": messages}
        for option in ("temperature", "max_tokens"):
            if option in resolved:
                body[option] = resolved[option]
        if resolved.get("json"):
            body["response_format"] = {"type": "json_object"}
        url = credential.base_url.rstrip("/") + "/chat/completions"
        timeout = ctx.time_left(resolved.get("timeout", DEFAULT_TIMEOUT_S))
        headers = {"Authorization": f"Bearer {credential.secret}"} if credential.secret else {}
        try:
            with outbound_client(timeout=timeout, follow_redirects=False) as client:
                response = client.post(url, json=body, headers=headers)
        except OutboundRefused as exc:
            raise StepError(f"LLM endpoint {shown_url(url)} refused: {exc}") from None
        except httpx.TimeoutException:
            raise StepError(
                f"LLM endpoint {shown_url(url)} timed out after {timeout:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise StepError(f"LLM endpoint {shown_url(url)} failed: {exc}") from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.is_error or not isinstance(answer, dict):
            detail = answer if answer is not None else response.text[:2000]
            raise StepError(
                f"LLM endpoint answered {response.status_code}",
                output={"status": response.status_code, "body": detail},
            )
        try:
            choice = answer["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise StepError("LLM answer has no choices[0].message.content", output=answer) from None
        output = {
            "content": content,
            "model": answer.get("model", model),
            "finishReason": choice.get("finish_reason"),
            "usage": answer.get("usage"),
        }
        if resolved.get("json"):
            try:
                output["json"] = json.loads(content)
            except (TypeError, ValueError):
                raise StepError("LLM answer is not the JSON asked for", output=output) from None
        return output


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)
