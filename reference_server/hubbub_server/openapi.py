"""The OpenAPI document and the API docs pages, honest and offline.

* The document declares the ``bearer`` security scheme, and every operation that needs a caller
  lists it (:class:`BearerSecurity` finds them: handlers that take the ``principal`` dependency,
  and plugin routes guarded by :func:`hubbub_server.security.require_caller` unless declared
  public); public ones list none.
* A request body whose struct refuses unknown fields (``forbid_unknown_fields``) is described
  with ``additionalProperties: false`` (:class:`StrictStructSchemaPlugin`).
* The docs page (Swagger UI, at ``/schema`` and ``/schema/swagger``) loads its scripts, style and
  icon from this server (``/schema/assets/...``, from the ``swagger-ui-bundle`` package): nothing
  comes from a CDN, so it works offline. Viewers that only exist on CDNs are not offered.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from litestar import Request, Router, get
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import Components, SecurityRequirement, SecurityScheme
from litestar.params import FromPath
from litestar.plugins import ReceiveRoutePlugin
from litestar.plugins.base import OpenAPISchemaPlugin
from litestar.response import File
from litestar.routes import BaseRoute, HTTPRoute
from litestar.typing import FieldDefinition

from hubbub_server.security import PUBLIC, require_caller

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.openapi.spec import Schema

__all__ = [
    "ASSETS",
    "BEARER",
    "SCHEMA_PATH",
    "BearerSecurity",
    "StrictStructSchemaPlugin",
    "needs_caller",
    "openapi_config",
    "openapi_plugins",
]

SCHEMA_PATH = "/schema"
"""Where the document (``/schema/openapi.json``, ``.yaml``) and the docs page are served."""
ASSETS_PATH = f"{SCHEMA_PATH}/assets"
"""Where the docs page's scripts, style and icons are served."""
BEARER_SCHEME = "bearer"
"""The name of the security scheme in the document's ``components.securitySchemes``."""
BEARER: list[SecurityRequirement] = [{BEARER_SCHEME: []}]
"""The security requirement of an operation that needs a caller."""

ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
"""The files of the ``swagger-ui-bundle`` package the docs page uses, and their media types
(only these are served)."""


@functools.cache
def _assets_dir() -> Path:
    import swagger_ui_bundle  # type: ignore[import-untyped]

    return Path(swagger_ui_bundle.swagger_ui_path)


@get(
    "/assets/{name:str}",
    include_in_schema=False,
    sync_to_thread=False,
    cache_control=None,
)
def _asset(name: FromPath[str]) -> File:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFoundException(f"no asset {name!r}")
    return File(
        _assets_dir() / name,
        filename=name,
        media_type=media_type,
        content_disposition_type="inline",
        headers={"Cache-Control": "public, max-age=86400"},
    )


class _LocalSwagger(SwaggerRenderPlugin):
    """Swagger UI from this server's assets, without the validator badge (which would call
    validator.swagger.io)."""

    def __init__(self) -> None:
        super().__init__(
            js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            css_url=f"{ASSETS_PATH}/swagger-ui.css",
            standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
            path=["/", "/swagger"],
            favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
        )

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        page = super().render(request, openapi_schema)
        anchor = b"dom_id: '#swagger-container',"
        return page.replace(anchor, anchor + b"\n                  validatorUrl: null,", 1)


class StrictStructSchemaPlugin(StructSchemaPlugin):
    """Describes structs that refuse unknown fields with ``additionalProperties: false``
    (Litestar's own struct plugin says nothing about unknown fields). It must come before
    Litestar's plugin in the app's plugins, as those given to the ``Litestar`` constructor do."""

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        if not super().is_plugin_supported_field(field_definition):
            return False
        config = getattr(field_definition.type_, "__struct_config__", None)
        return bool(config is not None and config.forbid_unknown_fields)

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        schema.additional_properties = False
        return schema


def needs_caller(handler: HTTPRouteHandler) -> bool:
    """Whether ``handler`` answers only an authenticated caller: it takes the ``principal``
    dependency, or it is guarded by :func:`~hubbub_server.security.require_caller` and not
    declared public."""
    if "principal" in handler.parsed_fn_signature.parameters:
        return True
    return require_caller in handler.resolve_guards() and handler.opt.get(PUBLIC) is not True


class BearerSecurity(ReceiveRoutePlugin):
    """Lists the ``bearer`` requirement on every operation that needs a caller, as each route
    is registered (plugin routes included), so the document says what the server enforces."""

    def receive_route(self, route: BaseRoute) -> None:
        """Declare the requirement on the route's handlers that need a caller."""
        if not isinstance(route, HTTPRoute):
            return
        for handler in route.route_handlers:
            declared = list(handler.security or ())
            if needs_caller(handler) and BEARER[0] not in declared:
                handler.security = [*declared, *BEARER]


def openapi_plugins() -> list[OpenAPISchemaPlugin | ReceiveRoutePlugin]:
    """The plugins the app needs for an honest document, to pass before Litestar's own (as the
    ``Litestar`` constructor's ``plugins`` are)."""
    return [StrictStructSchemaPlugin(), BearerSecurity()]


def openapi_config(*, title: str, version: str) -> OpenAPIConfig:
    """The app's OpenAPI configuration: the bearer scheme, and the document and docs page under
    :data:`SCHEMA_PATH`, all served from this server."""
    bearer = SecurityScheme(
        type="http",
        scheme="bearer",
        description="An API key (`hbk_...`, from `hubbub keys create`) or an access token, "
        "as `Authorization: Bearer <token>`.",
    )
    return OpenAPIConfig(
        title=title,
        version=version,
        components=Components(security_schemes={BEARER_SCHEME: bearer}),
        render_plugins=[_LocalSwagger(), JsonRenderPlugin(), YamlRenderPlugin()],
        openapi_router=Router(SCHEMA_PATH, route_handlers=[_asset], include_in_schema=False),
    )
