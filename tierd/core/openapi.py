"""The OpenAPI 3 document, built from the routes core and plugins declare.

A route's ``requestBody`` is written from the same schema field core validates
the body with (:meth:`tierd.core.schema.Field.json_schema`), plus any
``body_content`` the handler reads itself; a route declared ``body=NO_BODY``
carries ``x-tierd-no-body: true``, so that a reader (and the test that walks
the document) tells "takes no body" from "forgot to declare it". A route
with the :data:`~tierd.core.api.PAGED` parameters answers a page.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tierd import __version__
from tierd.core.api import NO_BODY, PAGE_RESPONSE, PAGED, Route

_ERROR = {"$ref": "#/components/schemas/Error"}


def build_openapi(routes: Iterable[Route]) -> dict:
    paths: dict = {}
    for route in routes:
        op: dict = {
            "summary": route.summary or route.handler.__name__,
            "operationId": f"{route.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', route.path.lower()).strip('_')}",
            "responses": {
                "default": {"description": "error", "content": {"application/json": {"schema": _ERROR}}},
            },
        }
        ok: dict = {"description": "success"}
        response = route.response or (PAGE_RESPONSE if PAGED.keys() <= route.params.keys() else None)
        if response:
            ok["content"] = {"application/json": {"schema": response}}
        for status in route.statuses:
            op["responses"][str(status)] = ok
        if route.tag:
            op["tags"] = [route.tag]
        if route.auth != "public":
            op["security"] = [{"bearer": []}]
        params = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in re.findall(r"{([^}:]+)", route.path)
        ]
        params += [
            {"name": n, "in": "query", "required": False, "description": d, "schema": {"type": "string"}}
            for n, d in route.params.items()
        ]
        if params:
            op["parameters"] = params
        content, required = {}, True
        if route.body is NO_BODY:
            op["x-tierd-no-body"] = True
        elif route.body is not None:
            schema = route.body.json_schema()
            content["application/json"] = {"schema": schema}
            # Core reads an empty body as {}: it may be left out when nothing in it is required.
            required = bool(schema.get("required"))
        content |= {media: {"schema": schema} for media, schema in (route.body_content or {}).items()}
        if content:
            op["requestBody"] = {"required": required or bool(route.body_content), "content": content}
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "tierd control API", "version": __version__},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {}},
                        }
                    },
                }
            },
        },
    }
