"""``OPTIONS`` answers with every method of its path.

Litestar gives every path an ``OPTIONS`` handler whose ``Allow`` header lists the path's methods,
but when handlers for one path are registered one after another (the handlers of a controller
are), the path keeps the ``OPTIONS`` handler made for the first of them, and ``Allow`` lists
only part of what the path answers. :class:`AllowEveryMethod` sees every route as it is
registered and makes its automatic ``OPTIONS`` handler list the route's methods as they are then.
"""

from __future__ import annotations

from typing import Any

from litestar import Response
from litestar.enums import MediaType
from litestar.plugins import ReceiveRoutePlugin
from litestar.routes import BaseRoute, HTTPRoute
from litestar.status_codes import HTTP_204_NO_CONTENT

__all__ = ["AllowEveryMethod"]

_AUTOMATIC = "HTTPRoute.create_options_handler.<locals>.options_handler"


def _options_handler_for(methods: set[str]) -> Any:
    allow = ", ".join(sorted(methods))

    def options_handler(scope: Any) -> Response[None]:
        """Answer ``OPTIONS`` with every method of the path in ``Allow``."""
        return Response(
            content=None,
            status_code=HTTP_204_NO_CONTENT,
            headers={"Allow": allow},
            media_type=MediaType.TEXT,
        )

    return options_handler


_OURS = _options_handler_for(set()).__qualname__


class AllowEveryMethod(ReceiveRoutePlugin):
    """Makes the automatic ``OPTIONS`` handler of every HTTP route list all its methods.

    Give it to the app's ``plugins``; it leaves ``OPTIONS`` handlers an app defines itself
    alone."""

    def receive_route(self, route: BaseRoute) -> None:
        """Point the route's automatic ``OPTIONS`` handler at the route's methods."""
        if not isinstance(route, HTTPRoute):
            return
        entry = route.route_handler_map.get("OPTIONS")
        if entry is None:
            return
        handler = entry[0]
        if getattr(handler.fn, "__qualname__", None) not in (_AUTOMATIC, _OURS):
            return
        # Same signature as Litestar's own (``scope``), so the handler's parsed signature holds.
        handler._fn = _options_handler_for(set(route.methods))
