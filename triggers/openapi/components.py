"""The shared parts of the OpenAPI document: security schemes, schemas (run
status, error envelope, trigger input), parameters, headers, responses and the
completion callback as a webhook. Values that follow the code (error codes, run
statuses and codes, limits) are read from it when the document is built.
"""

from django.conf import settings

from triggers.callbacks import EVENT_TYPE
from triggers.openapi.answers import error_response, error_specs
from workflows.models import ExecutionStatus
from workflows.selectors import RUN_CODES

SCHEMAS = "#/components/schemas/"
RESPONSES = "#/components/responses/"
PARAMETERS = "#/components/parameters/"
HEADERS = "#/components/headers/"

# Text a database can store: no NUL (unpaired surrogates are refused too, but
# a JSON Schema pattern cannot name them).
STORABLE_TEXT = {"type": "string", "pattern": "^[^\\u0000]*$"}


def json_media(ref: str) -> dict:
    return {"application/json": {"schema": {"$ref": ref}}}


def components(statuses: set[int]) -> dict:
    return {
        "securitySchemes": {
            "token": {
                "type": "apiKey",
                "in": "header",
                "name": "token",
                "description": "The API's token (shown once when generated).",
            },
            "user": {"type": "apiKey", "in": "header", "name": "user"},
            "password": {
                "type": "apiKey",
                "in": "header",
                "name": "password",
                "description": "Sent with `user`: both are required together.",
            },
        },
        "schemas": _schemas(),
        "parameters": _parameters(),
        "headers": {
            "Location": {
                "description": "The run's status URL (for an API without authentication "
                "it carries the run's read key, `?key=`).",
                "required": True,
                "schema": {"type": "string", "format": "uri-reference"},
            },
            "IdempotentReplayed": {
                "description": "`true` when an `Idempotency-Key` named an earlier run: "
                "nothing was started, this is that run.",
                "schema": {"type": "string", "enum": ["true"]},
            },
        },
        "responses": {
            "Accepted": {
                "description": "Accepted: the run is recorded and queued.",
                "headers": {
                    "Location": {"$ref": HEADERS + "Location"},
                    "Idempotent-Replayed": {"$ref": HEADERS + "IdempotentReplayed"},
                },
                "content": json_media(SCHEMAS + "Accepted"),
            },
            "SyncResult": {
                "description": "The run finished within the sync timeout: its result "
                "(a failed run answers its non-zero `code` and `msg`).",
                "headers": {"Idempotent-Replayed": {"$ref": HEADERS + "IdempotentReplayed"}},
                "content": json_media(SCHEMAS + "SyncResult"),
            },
            "Status": {
                "description": "The run's status (its result once final).",
                "content": json_media(SCHEMAS + "StatusResponse"),
            },
            **{f"Error{s}": error_response(s) for s in sorted(statuses) if s >= 400},
        },
    }


def _schemas() -> dict:
    codes = sorted({spec.code for spec in error_specs()})
    run_codes = sorted(set(RUN_CODES.values()))
    nullable_time = {"type": ["string", "null"], "format": "date-time"}
    return {
        # A trigger's input: any JSON object whose text a database can store.
        "TriggerBody": {
            "type": "object",
            "propertyNames": STORABLE_TEXT,
            "additionalProperties": {"$ref": SCHEMAS + "JsonValue"},
        },
        "JsonValue": {
            "anyOf": [
                {"type": ["null", "boolean", "number"]},
                STORABLE_TEXT,
                {"type": "array", "items": {"$ref": SCHEMAS + "JsonValue"}},
                {"$ref": SCHEMAS + "TriggerBody"},
            ]
        },
        "Uid": {
            "type": "string",
            "pattern": "^[0-9]{1,19}$",
            "description": "A run's uid: a 64-bit time-ordered id, always a string.",
            "examples": ["118028532135161857"],
        },
        "Accepted": {
            "type": "object",
            "required": ["response"],
            "properties": {
                "response": {
                    "type": "object",
                    "required": ["uid"],
                    "properties": {"uid": {"$ref": SCHEMAS + "Uid"}},
                }
            },
        },
        "RunCode": {
            "type": "integer",
            "enum": run_codes,
            "description": "0 unless the run ended without succeeding: "
            + ", ".join(f"{code} {status.value}" for status, code in RUN_CODES.items() if code != 0)
            + ".",
        },
        "ExecutionStatus": {
            "type": "object",
            "required": ["uid", "status", "data", "code", "msg", "createdAt"],
            "properties": {
                "uid": {"$ref": SCHEMAS + "Uid"},
                "status": {"type": "string", "enum": [s.value for s in ExecutionStatus]},
                "data": {"description": "The workflow's output once the run is final, else null."},
                "code": {"$ref": SCHEMAS + "RunCode"},
                "msg": {"type": "string", "description": "Why the run did not succeed."},
                "createdAt": {"type": "string", "format": "date-time"},
                "startedAt": nullable_time,
                "finishedAt": nullable_time,
            },
        },
        "StatusResponse": {
            "type": "object",
            "required": ["response"],
            "properties": {"response": {"$ref": SCHEMAS + "ExecutionStatus"}},
        },
        "SyncResult": {
            "type": "object",
            "required": ["response"],
            "properties": {
                "response": {
                    "type": "object",
                    "required": ["data", "code", "msg", "uid"],
                    "properties": {
                        "data": {"description": "The workflow's output."},
                        "code": {"$ref": SCHEMAS + "RunCode"},
                        "msg": {"type": "string"},
                        "uid": {"$ref": SCHEMAS + "Uid"},
                    },
                }
            },
        },
        "ErrorCode": {"type": "string", "enum": codes},
        "Error": {
            "type": "object",
            "required": ["response"],
            "properties": {
                "response": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"$ref": SCHEMAS + "ErrorCode"},
                                "message": {"type": "string"},
                            },
                        }
                    },
                }
            },
        },
        "CallbackPayload": {
            "allOf": [
                {"$ref": SCHEMAS + "ExecutionStatus"},
                {
                    "type": "object",
                    "required": ["type", "api"],
                    "properties": {
                        "type": {"const": EVENT_TYPE},
                        "api": {
                            "type": "object",
                            "required": ["module", "method"],
                            "properties": {
                                "module": {"type": "string"},
                                "method": {"type": "string"},
                            },
                        },
                    },
                },
            ],
        },
    }


def _parameters() -> dict:
    max_wait = settings.IOLINKER_STATUS_MAX_WAIT
    return {
        "IdempotencyKey": {
            "name": "Idempotency-Key",
            "in": "header",
            "description": "Retry safely: the same key with the same request within "
            f"{settings.IOLINKER_IDEMPOTENCY_SECONDS} s answers the first call's run "
            "(`Idempotent-Replayed: true`) and starts nothing; with a different request, "
            "422 `requestError.idempotencyKeyReused`.",
            "required": False,
            # Printable ASCII; servers strip spaces around a header value, so a key
            # neither starts nor ends with one.
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "pattern": "^[!-~]([ -~]*[!-~])?$",
            },
        },
        "Uid": {
            "name": "uid",
            "in": "path",
            "required": True,
            "schema": {"$ref": SCHEMAS + "Uid"},
        },
        "ReadKey": {
            "name": "key",
            "in": "query",
            "required": True,
            "description": "The run's read key, as given in the 202's `Location` "
            "(APIs without authentication only). Once: a repeated `key` is 400.",
            "schema": {"type": "string"},
        },
        "Wait": {
            "name": "wait",
            "in": "query",
            "required": False,
            "description": f"Hold the answer until the run is final or this many seconds "
            f"pass (0 to {max_wait}). Once: a repeated `wait` is 400.",
            "schema": {"type": "number", "minimum": 0, "maximum": max_wait},
        },
    }


def webhook() -> dict:
    def header(name: str, description: str, example: str) -> dict:
        return {
            "name": name,
            "in": "header",
            "required": True,
            "description": description,
            "schema": {"type": "string"},
            "example": example,
        }

    return {
        "post": {
            "summary": "A run finished (completion callback)",
            "description": "POSTed to the API's callback URL when one of its runs finishes, "
            "signed in the Standard Webhooks style (https://www.standardwebhooks.com/). "
            "Any 2xx answer is a delivery; anything else is retried with back-off.",
            "parameters": [
                header(
                    "webhook-id",
                    "The same on every attempt of one run's callback: drop duplicates by it.",
                    "exec_118028532135161857",
                ),
                header("webhook-timestamp", "The attempt's time, unix seconds.", "1795378492"),
                header(
                    "webhook-signature",
                    "`v1,` + base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`, "
                    "keyed with the base64-decoded part of the API's `whsec_` secret.",
                    "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
                ),
            ],
            "requestBody": {"required": True, "content": json_media(SCHEMAS + "CallbackPayload")},
            "responses": {
                "2XX": {"description": "Delivered."},
                "default": {"description": "Not delivered: the attempt is retried later."},
            },
        }
    }
