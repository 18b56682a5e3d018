"""Request bodies parsed by the routes themselves, and answers serialized without a
response-model round trip: the hot path of `/predict` and `/predict/batch`.

The API key is checked here too (no dependency to solve per request). A valid body is parsed
and validated in one pass (`model_validate_json`). Anything else goes
through the path FastAPI itself takes for a declared body parameter (content type check,
`json.loads`, validation of the Python value with `from_attributes`), so every 422 names the
same fields with the same messages as before.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from crimes import contract
from crimes.gateway.routes.deps import API_KEY_PARAMETER, check_api_key
from crimes.gateway.schemas import BatchRequest, batch_columns

Model = TypeVar("Model", bound=BaseModel)


def _is_json(content_type: str | None) -> bool:
    # FastAPI's rule (strict content type): no header means not JSON.
    if not content_type:
        return False
    if content_type == "application/json":
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


async def parse(request: Request, model: type[Model]) -> Model:
    """The body as `model`, in FastAPI's order: a JSON syntax error (422), then the API key
    (401), then the validation problems (422)."""
    body = await request.body()
    is_json = _is_json(request.headers.get("content-type"))
    if body and is_json:
        try:
            parsed = model.model_validate_json(body)
        except ValidationError:
            pass  # named below exactly as FastAPI would
        else:
            check_api_key(request, request.headers.get("x-api-key"))
            return parsed
    value = _python_value(body, is_json)
    check_api_key(request, request.headers.get("x-api-key"))
    raise _problems(value, model)


async def parse_batch(request: Request) -> tuple[Mapping[str, Sequence[Any]], int]:
    """A `BatchRequest`'s records as validated columns (`schemas.batch_columns`) and their
    count; any body that fails goes through `parse`, so the 422s, and their order with the
    401, are the models' own."""
    body = await request.body()
    if body and _is_json(request.headers.get("content-type")):
        batch = batch_columns(body)
        if batch is not None:
            check_api_key(request, request.headers.get("x-api-key"))
            return batch
    parsed = await parse(request, BatchRequest)  # raises, but for a parser disagreement
    rows = parsed.model_dump()["features"]
    return contract.feature_columns(rows), len(rows)


def _python_value(body: bytes, is_json: bool) -> Any:
    if not body:
        return None
    if not is_json:
        return body
    try:
        return json.loads(body)
    except json.JSONDecodeError as error:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", error.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": error.msg},
                }
            ],
            body=error.doc,
        ) from error
    except Exception as error:
        raise HTTPException(
            status_code=400, detail="There was an error parsing the body"
        ) from error


def _problems(value: Any, model: type[BaseModel]) -> Exception:
    if value is None:
        return RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}],
            body=None,
        )
    try:
        model.model_validate(value, from_attributes=True)
    except ValidationError as error:
        return RequestValidationError(
            [{**item, "loc": ("body", *item["loc"])} for item in error.errors()], body=value
        )
    # Valid as Python but not as JSON (only a JSON parser difference could get here).
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body",), "msg": "invalid body", "input": None}],
        body=value,
    )


def json_response(
    content: Any, headers: dict[str, str] | None = None, status_code: int = 200
) -> Response:
    """What FastAPI's JSONResponse would send, without validating a response model first."""
    return Response(
        status_code=status_code,
        content=json.dumps(
            content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
        ).encode(),
        media_type="application/json",
        headers=headers,
    )


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` documenting a body the route parses itself (its schema is added to the
    components by the app's OpenAPI builder), and the API key header it checks."""
    return {
        "parameters": [API_KEY_PARAMETER],
        "requestBody": {
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
            "required": True,
        },
        # What FastAPI documents for a route with parameters (these have none it can see).
        "responses": {
            "422": {
                "description": "Validation Error",
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/HTTPValidationError"}
                    }
                },
            }
        },
    }
