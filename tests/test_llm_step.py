"""The llm step against a local OpenAI-compatible fake server (never the internet)."""

import json
from http.server import BaseHTTPRequestHandler

import pytest

from tests.conftest import execution_start
from tests.support.queue import drain_queue
from tests.support.servers import LocalHttpServer
from workflows.credentials import credential_resolve, credential_set_secret
from workflows.models import Credential, Execution, ExecutionStatus, StepRun, Workflow
from workflows.services import workflow_create

pytestmark = pytest.mark.django_db
KEY = "sk-test-0123456789"


class FakeLlm(LocalHttpServer):
    """Answers POST /v1/chat/completions like an OpenAI-compatible server."""

    def __init__(self, *, status: int = 200, content: str = "Hello there"):
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(
                    {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
                )
                if status != 200:
                    answer = {"error": {"message": "rate limited"}}
                else:
                    answer = {
                        "id": "chatcmpl-1",
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
                    }
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.serve(Handler, "/v1")
        self.base_url = self.url


def credential(base_url: str) -> Credential:
    cred = Credential.objects.create(name="openai", kind="openai", base_url=base_url, model="gpt-x")
    credential_set_secret(credential=cred, secret=KEY)
    return cred


def run_llm(config: dict, body=None) -> Execution:
    workflow = workflow_create(
        name=f"llm-{Workflow.objects.count()}",
        steps=[{"key": "ask", "type": "llm", "config": config}],
    )
    execution = execution_start(workflow=workflow, trigger_input={"body": body or {}})
    drain_queue()
    execution.refresh_from_db()
    return execution


def test_the_llm_step_sends_a_chat_completion_with_the_stored_key():
    with FakeLlm() as llm:
        credential(llm.base_url)
        execution = run_llm(
            {"credential": "openai", "system": "Be brief.", "prompt": "Greet {{ body.name }}"},
            body={"name": "Ada"},
        )
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    assert execution.output["content"] == "Hello there"
    assert execution.output["usage"]["total_tokens"] == 7 and execution.output["model"] == "gpt-x"
    [request] = llm.requests
    assert request["path"] == "/v1/chat/completions" and request["auth"] == f"Bearer {KEY}"
    assert request["body"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Greet Ada"},
    ]
    step = StepRun.objects.get(execution=execution)
    assert KEY not in json.dumps([step.input, step.output, step.logs, execution.output])


def test_the_llm_step_parses_a_json_answer_when_asked():
    with FakeLlm(content='{"sentiment": "positive"}') as llm:
        credential(llm.base_url)
        execution = run_llm(
            {
                "credential": "openai",
                "model": "other-model",
                "messages": [{"role": "user", "content": "Classify: great"}],
                "json": True,
            }
        )
    assert execution.output["json"] == {"sentiment": "positive"}
    assert llm.requests[0]["body"]["response_format"] == {"type": "json_object"}
    assert llm.requests[0]["body"]["model"] == "other-model"


def test_an_error_answer_fails_the_step_with_its_status():
    with FakeLlm(status=429) as llm:
        credential(llm.base_url)
        execution = run_llm({"credential": "openai", "prompt": "hi"})
    assert execution.status == ExecutionStatus.FAILED and "answered 429" in execution.error
    assert StepRun.objects.get(execution=execution).output["status"] == 429


def test_an_unknown_credential_is_a_clear_step_error():
    execution = run_llm({"credential": "missing", "prompt": "hi"})
    assert execution.status == ExecutionStatus.FAILED and "no credential named 'missing'" in (
        execution.error
    )


def test_credential_secrets_are_encrypted_at_rest():
    cred = credential("http://127.0.0.1:9/v1")
    cred.refresh_from_db()
    assert KEY not in cred.secret_encrypted and cred.secret_encrypted
    assert credential_resolve(name="openai", kind="openai").secret == KEY
