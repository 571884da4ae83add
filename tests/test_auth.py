"""Authentication across methods, and local mode failing closed."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from litestar.testing import AsyncTestClient

from hubbub.auth import LOCAL_PRINCIPAL
from hubbub.config import Config
from hubbub.contracts import Credentials
from hubbub.errors import AuthenticationError
from hubbub.plugins import load_plugins
from hubbub.runtime import Runtime
from hubbub_server import create_app

KEYS = {"HUBBUB_AUTH__METHODS": '["api_key"]'}  # the tests' base config enables none


def with_keys(make_config: Callable[..., Config], text: str = "") -> Runtime:
    config = make_config(text, env=KEYS)
    return Runtime.from_config(config, plugins=load_plugins(env={}))


async def test_a_runtime_without_a_host_never_serves_anonymous_callers(
    make_config: Callable[..., Config],
) -> None:
    async with with_keys(make_config) as runtime:
        assert not await runtime.auth.is_provisioned()
        with pytest.raises(AuthenticationError, match="authentication required"):
            await runtime.auth.authenticate(Credentials())


async def test_the_server_on_loopback_serves_the_local_user(
    make_config: Callable[..., Config],
) -> None:
    async with with_keys(make_config) as runtime:
        async with AsyncTestClient(create_app(runtime=runtime)) as client:
            assert (await client.get("/api/conversations")).status_code == 200
        assert await runtime.auth.authenticate(Credentials()) == LOCAL_PRINCIPAL


async def test_an_app_bound_elsewhere_refuses_to_start_without_credentials(
    make_config: Callable[..., Config],
) -> None:
    async with with_keys(make_config, '[server]\nhost = "0.0.0.0"\n') as runtime:
        app = create_app(runtime=runtime)
        with pytest.raises(BaseExceptionGroup) as caught:  # Litestar reports startup failures
            async with AsyncTestClient(app):  # in an exception group
                pass
        assert "refusing to serve on 0.0.0.0" in repr(caught.value.exceptions)  # type: ignore[attr-defined]
        assert runtime.auth.allow_local is False
