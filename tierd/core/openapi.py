"""The OpenAPI 3 document, built from the routes core and plugins declare."""

from __future__ import annotations

import re

from tierd import __version__

_ERROR = {"$ref": "#/components/schemas/Error"}


def build_openapi(routes) -> dict:
    paths: dict = {}
    for route in routes:
        op: dict = {
            "summary": route.summary or route.handler.__name__,
            "operationId": f"{route.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', route.path.lower()).strip('_')}",
            "responses": {
                "default": {"description": "error", "content": {"application/json": {"schema": _ERROR}}},
            },
        }
        ok = {"description": "success"}
        if route.response:
            ok["content"] = {"application/json": {"schema": route.response}}
        for status in route.statuses:
            op["responses"][str(status)] = ok
        if route.tag:
            op["tags"] = [route.tag]
        if route.auth != "public":
            op["security"] = [{"bearer": []}]
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                  for n in re.findall(r"{([^}:]+)", route.path)]
        params += [{"name": n, "in": "query", "required": False, "description": d, "schema": {"type": "string"}}
                   for n, d in route.params.items()]
        if params:
            op["parameters"] = params
        content = {"application/json": {"schema": route.body}} if route.body else {}
        content |= {media: {"schema": schema} for media, schema in (route.body_content or {}).items()}
        if content:
            op["requestBody"] = {"required": True, "content": content}
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "tierd control API", "version": __version__},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"}, "details": {}}}}}},
        },
    }
