"""The demo a fresh install ships: POST /v1/api/demo/hello/async {"name": "x"}."""

from django.db import transaction

from triggers.models import ApiDefinition, AuthMode, HttpMethod
from workflows.models import Workflow
from workflows.services import workflow_create

DEMO_WORKFLOW = "demo-hello"
DEMO_STEPS = [
    (
        "prepare",
        "transform",
        {"value": {"name": "{{ body.name | default('world') }}", "via": "{{ method }}"}},
    ),
    (
        "greeting",
        "code",
        {
            "input": "{{ steps.prepare }}",
            "code": 'name = str(data["name"])\n'
            'return {"message": f"Hello, {name}!", "letters": len(name)}',
        },
    ),
    (
        "result",
        "output",
        {
            "value": {
                "greeting": "{{ steps.greeting.message }}",
                "letters": "{{ steps.greeting.letters }}",
            }
        },
    ),
]


@transaction.atomic
def demo_load() -> bool:
    """Create the demo workflow and API unless present; True when created."""
    if ApiDefinition.objects.filter(module="demo", method="hello").exists():
        return False
    workflow = Workflow.objects.filter(name=DEMO_WORKFLOW).first() or workflow_create(
        name=DEMO_WORKFLOW,
        steps=DEMO_STEPS,
        description="Greets the `name` from the request body (transform → code).",
    )
    ApiDefinition.objects.create(
        module="demo",
        method="hello",
        http_method=HttpMethod.POST,
        auth_mode=AuthMode.NONE,
        workflow=workflow,
        enabled=True,
        sync_enabled=True,
        debug_payload={"name": "iolinker"},
        publish_example=True,  # a demo: its payload is the example of the document
        description='Demo: curl -d \'{"name":"x"}\' localhost:8000/v1/api/demo/hello/async',
    )
    return True
