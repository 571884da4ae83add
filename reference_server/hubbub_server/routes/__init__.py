"""Route handlers, one module per area of the public surface."""

from typing import Any

from hubbub_server.routes.admin import AdminController
from hubbub_server.routes.auth import AuthController, jwks
from hubbub_server.routes.conversations import ConversationsController
from hubbub_server.routes.events import EventsController
from hubbub_server.routes.health import HealthController
from hubbub_server.routes.keys import KeysController
from hubbub_server.routes.memory import MemoryController
from hubbub_server.routes.metrics import metrics_endpoint
from hubbub_server.routes.openai import OpenAIController
from hubbub_server.routes.tools import list_tools
from hubbub_server.routes.usage import get_usage

ROUTES: list[Any] = [
    HealthController,
    OpenAIController,
    AuthController,
    AdminController,
    jwks,
    ConversationsController,
    EventsController,
    MemoryController,
    KeysController,
    list_tools,
    get_usage,
    metrics_endpoint,
]

__all__ = ["ROUTES"]
