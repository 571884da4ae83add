"""The ``oidc`` and ``entra`` auth methods against real identity providers over real HTTP.

The whole redirect flow runs as the server and a browser would run it: ``login_url`` → the
provider's sign-in page (oidc-provider-mock's HTML form, submitted as a user) → the redirect
back → ``complete_login`` → the principal. Forged ID tokens come from a provider of our own
(:class:`oidc_support.FakeProvider`), which also plays Entra ID's multi-tenant endpoints: the
mock names itself after its host, so its issuer cannot hold ``{tenantid}``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jwt
import msgspec
import pytest
from oidc_support import (
    REDIRECT_URI,
    FakeProvider,
    MockProvider,
    attempt_for,
    follow,
    rsa_key,
    sign_in,
    silent_port,
)
from redis_support import free_port

from hubbub.auth import check_user_name
from hubbub.config import decode_settings
from hubbub.contracts import Credentials, RedirectAuthMethod
from hubbub.errors import AuthenticationError, ConfigError, NotFoundError
from hubbub.kinds import kinds_by_name
from hubbub.registry import Registration, check_component
from hubbub.testing import config_for, context_for, runtime_for
from hubbub_plugins.oidc_auth import (
    IdentityProviderUnavailableError,
    LoginRefusedError,
    OidcAuthSettings,
    build_entra,
    build_oidc,
)
from hubbub_plugins.oidc_auth.errors import GENERIC_MESSAGE
from hubbub_plugins.oidc_auth.identity import principal_id
from hubbub_plugins.oidc_auth.method import OidcMethod

LOGGER = "hubbub.plugins.oidc_auth"
TENANT_A = "3f1c8a52-0b6e-4d7a-9c21-5e8f7a6b4d10"
TENANT_B = "a9e4d2c7-61f0-4b3e-8d5a-2c7b9e1f0a34"
DISCOVERY = "/.well-known/openid-configuration"

MethodFactory = Callable[..., Awaitable[OidcMethod]]


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockProvider]:
    """One oidc-provider-mock process for the module (restarted by the rotation tests)."""
    provider = MockProvider(tmp_path_factory.mktemp("oidc-mock"))
    provider.set_user(
        "alice",
        email="alice@example.com",
        email_verified=True,
        preferred_username="alice.smith",
        groups=["hubbub-admins", "staff"],
    )
    provider.set_user("bob", email="bob@other.org", email_verified=True, groups=["staff"])
    provider.set_user("carol", email="carol@example.com", email_verified=False)
    provider.start()
    yield provider
    provider.stop()


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


@pytest.fixture
async def make_method(tmp_path: Path) -> AsyncIterator[MethodFactory]:
    """``await make_method(toml, method="oidc")``: the method the plugin's factory builds from
    ``[plugins.oidc_auth]`` TOML (decoded as at startup), started; closed after the test."""
    built: list[Any] = []

    async def make(
        toml: str, method: str = "oidc", env: dict[str, str] | None = None
    ) -> OidcMethod:
        config = config_for(tmp_path / "home", toml, env=env)
        settings = decode_settings(config, "oidc_auth", OidcAuthSettings)
        context = context_for(
            config, kind="auth", name=method, plugin="oidc_auth", settings=settings
        )
        component = (build_oidc if method == "oidc" else build_entra)(context)
        built.append((component, context))
        await component.start()
        return component

    yield make
    for component, context in built:
        await component.aclose()
        await context.tasks.aclose()
        await context.resources.release_all()


def mock_toml(mock: MockProvider, name: str = "corp", extra: str = "") -> str:
    return f"""
[[plugins.oidc_auth.providers]]
name = "{name}"
issuer = "{mock.url}"
client_id = "hubbub"
client_secret = "mock-accepts-any-secret"
roles_claim = "groups"
role_map = {{ "hubbub-admins" = "admin" }}
{extra}
"""


def fake_toml(fake: FakeProvider, name: str = "fake", extra: str = "") -> str:
    return f"""
[[plugins.oidc_auth.providers]]
name = "{name}"
issuer = "{fake.url}"
client_id = "hubbub"
client_secret = "s3cret"
{extra}
"""


def entra_toml(
    fake: FakeProvider,
    tenant: str = "organizations",
    extra: str = "",
    role_map: str = '{ "Hubbub.Admin" = "admin" }',
) -> str:
    return f"""
[[plugins.oidc_auth.entra]]
name = "contoso"
tenant = "{tenant}"
authority = "{fake.url}"
client_id = "hubbub-app"
client_secret = "s3cret"
role_map = {role_map}
{extra}
"""


def satisfies_the_redirect_contract(method: object) -> None:
    """The runtime's own check, with the RedirectAuthMethod variant's members required."""
    spec = kinds_by_name()["auth"]
    assert RedirectAuthMethod in spec.variants
    registration = Registration(kind="auth", name="oidc", factory=build_oidc, plugin="oidc_auth")
    check_component(spec, registration, method)  # raises naming what is missing
    assert callable(getattr(method, "login_url", None))
    assert callable(getattr(method, "complete_login", None))


async def mock_login(method: OidcMethod, sub: str, **changes: str) -> Any:
    attempt = attempt_for(method.method, **changes)
    params = await sign_in(await method.login_url(attempt), sub)
    return await method.complete_login(attempt, params)


async def fake_login(method: OidcMethod, **changes: str) -> Any:
    attempt = attempt_for(method.method, **changes)
    params = await follow(await method.login_url(attempt))
    return await method.complete_login(attempt, params)


async def refused(login: Awaitable[Any]) -> LoginRefusedError:
    with pytest.raises(LoginRefusedError) as caught:
        await login
    error = caught.value
    assert isinstance(error, AuthenticationError)
    assert error.status == 401
    assert str(error) == GENERIC_MESSAGE  # the client learns nothing of the reason
    return error


# -- the whole flow against oidc-provider-mock ---------------------------------------------------


async def test_a_login_through_the_real_provider_yields_a_principal_with_mapped_roles(
    mock: MockProvider, make_method: MethodFactory, caplog: pytest.LogCaptureFixture
) -> None:
    method = await make_method(mock_toml(mock))
    satisfies_the_redirect_contract(method)
    discovery_reads = mock.requests_for(DISCOVERY)
    attempt = attempt_for()
    url = await method.login_url(attempt)
    query = dict(parse_qsl(urlsplit(url).query))
    assert url.startswith(f"{mock.url}/oauth2/authorize?")
    challenge = base64.urlsafe_b64encode(hashlib.sha256(attempt.code_verifier.encode()).digest())
    assert query == {
        "response_type": "code",
        "client_id": "hubbub",
        "redirect_uri": REDIRECT_URI,
        "scope": "openid email profile",
        "state": attempt.state,
        "nonce": attempt.nonce,
        "code_challenge": challenge.rstrip(b"=").decode(),
        "code_challenge_method": "S256",
    }
    params = await sign_in(url, "alice")
    assert params["state"] == attempt.state
    with caplog.at_level(logging.INFO, LOGGER):
        alice = await method.complete_login(attempt, params)
    assert alice.id == principal_id("corp", mock.url, "alice")
    assert re.fullmatch(r"corp-[0-9a-f]{24}", alice.id)
    assert check_user_name(alice.id)
    assert (alice.name, alice.auth_method) == ("alice.smith", "oidc")
    assert alice.roles == {"admin", "user"}
    assert params["code"] not in caplog.text

    again = await mock_login(method, "alice")
    assert again.id == alice.id  # stable per (issuer, subject)
    bob = await mock_login(method, "bob")
    assert bob.id != alice.id
    assert (bob.name, bob.roles) == ("bob@other.org", frozenset({"user"}))
    # The discovery document was read once, for three logins.
    assert mock.wait_for_requests(DISCOVERY, discovery_reads + 1) == discovery_reads + 1
    assert "discovery ok" in (await method.health()).detail


async def test_a_wrong_nonce_is_refused(
    mock: MockProvider, make_method: MethodFactory, caplog: pytest.LogCaptureFixture
) -> None:
    method = await make_method(mock_toml(mock))
    attempt = attempt_for()
    params = await sign_in(await method.login_url(attempt), "alice")
    replayed = msgspec.structs.replace(attempt, nonce="another-login's-nonce")
    with caplog.at_level(logging.WARNING, LOGGER):
        error = await refused(method.complete_login(replayed, params))
    assert error.reason == "ID token nonce does not match the login's"
    assert error.reason in caplog.text
    assert params["code"] not in caplog.text


async def test_the_provider_saying_access_denied_is_a_refusal_with_its_code_in_the_log(
    mock: MockProvider, make_method: MethodFactory, caplog: pytest.LogCaptureFixture
) -> None:
    method = await make_method(mock_toml(mock))
    attempt = attempt_for()
    params = await sign_in(await method.login_url(attempt), None, deny=True)
    assert params["error"] == "access_denied"
    assert "code" not in params
    with caplog.at_level(logging.WARNING, LOGGER):
        error = await refused(method.complete_login(attempt, params))
    assert "access_denied" in error.reason
    assert "access_denied" in caplog.text


async def test_allowed_domains_admit_only_verified_addresses_of_those_domains(
    mock: MockProvider, make_method: MethodFactory
) -> None:
    method = await make_method(mock_toml(mock, extra='allowed_domains = ["Example.com"]'))
    assert (await mock_login(method, "alice")).roles == {"admin", "user"}
    assert "'other.org' is not allowed" in (await refused(mock_login(method, "bob"))).reason
    assert (await refused(mock_login(method, "carol"))).reason == "e-mail address not verified"


async def test_a_restarted_provider_with_a_new_key_is_followed_by_one_key_reread(
    mock: MockProvider, make_method: MethodFactory
) -> None:
    method = await make_method(mock_toml(mock))
    before = mock.requests_for("/jwks")
    await mock_login(method, "alice")
    old_keys = mock.jwks()
    mock.restart()  # same port, same issuer, a new signing key (its tokens name no kid)
    assert mock.jwks() != old_keys
    # The method's read, and the two of the test itself.
    reads = mock.wait_for_requests("/jwks", before + 3)
    assert reads == before + 3
    # The cached key no longer verifies the new tokens: one re-read of the keys, then success.
    assert (await mock_login(method, "alice")).roles == {"admin", "user"}
    assert mock.wait_for_requests("/jwks", reads + 1) == reads + 1
    await mock_login(method, "bob")
    assert mock.wait_for_requests("/jwks", reads + 2, timeout=1) == reads + 1  # no more reads


async def test_a_provider_that_goes_down_during_a_login_gives_503_naming_it(
    mock: MockProvider, make_method: MethodFactory
) -> None:
    method = await make_method(mock_toml(mock))
    attempt = attempt_for()
    params = await sign_in(await method.login_url(attempt), "alice")
    mock.stop()
    try:
        with pytest.raises(IdentityProviderUnavailableError) as caught:
            await method.complete_login(attempt, params)
    finally:
        mock.start()
    error = caught.value
    assert (error.status, error.code, error.provider) == (
        503,
        "identity_provider_unavailable",
        "corp",
    )
    assert str(error).startswith(
        "identity provider 'corp' is unavailable: cannot reach its token endpoint"
    )
    assert "Traceback" not in str(error)
    assert error.reported
    health = await method.health()
    assert health.status == "degraded"
    assert "corp: unavailable" in health.detail


async def test_an_unreachable_provider_gives_503_at_login(make_method: MethodFactory) -> None:
    port = free_port()
    method = await make_method(
        f"""
[[plugins.oidc_auth.providers]]
name = "down"
issuer = "http://127.0.0.1:{port}"
client_id = "hubbub"
"""
    )
    assert (await method.health()).detail == "down: not contacted yet"
    with pytest.raises(IdentityProviderUnavailableError) as caught:
        await method.login_url(attempt_for())
    assert caught.value.status == 503
    assert str(caught.value).startswith(
        "identity provider 'down' is unavailable: cannot read its discovery document (ConnectError"
    )
    assert (await method.health()).status == "degraded"


async def test_a_provider_that_never_answers_times_out(make_method: MethodFactory) -> None:
    with silent_port() as port:
        method = await make_method(
            f"""
[[plugins.oidc_auth.providers]]
name = "hung"
issuer = "http://127.0.0.1:{port}"
client_id = "hubbub"
timeout = 0.3
"""
        )
        with pytest.raises(IdentityProviderUnavailableError) as caught:
            await method.login_url(attempt_for())
    assert str(caught.value) == (
        "identity provider 'hung' is unavailable: its discovery document did not answer "
        "within 0.3 s"
    )


# -- several providers --------------------------------------------------------------------------


async def test_providers_are_chosen_by_name_and_an_unknown_name_is_404(
    mock: MockProvider, fake: FakeProvider, make_method: MethodFactory
) -> None:
    method = await make_method(mock_toml(mock) + fake_toml(fake, name="partner"))
    first = await mock_login(method, "alice")  # provider "" is the first one
    assert first.id.startswith("corp-")
    partner = await fake_login(method, provider="partner")
    assert partner.id == principal_id("partner", fake.url, "user-1")
    assert partner.roles == {"user"}
    with pytest.raises(NotFoundError, match=r"no identity provider 'nope'.*known: corp, partner"):
        await method.login_url(attempt_for(provider="nope"))
    with pytest.raises(NotFoundError):
        await method.complete_login(attempt_for(provider="nope"), {"code": "x"})


async def test_without_providers_the_method_is_not_provisioned(make_method: MethodFactory) -> None:
    method = await make_method("")
    assert not await method.is_provisioned()
    assert (await method.health()).detail == "no identity provider configured"
    with pytest.raises(NotFoundError, match="none is configured"):
        await method.login_url(attempt_for())


async def test_requests_are_never_authenticated_with_provider_tokens(
    fake: FakeProvider, make_method: MethodFactory
) -> None:
    method = await make_method(fake_toml(fake))
    assert await method.is_provisioned()
    token = fake.sign({"iss": fake.url, "sub": "user-1", "aud": "hubbub"})
    assert await method.authenticate(Credentials(bearer=token)) is None
    assert await method.authenticate(Credentials()) is None


# -- forged and broken ID tokens ---------------------------------------------------------------


def _resign_other_key(claims: dict[str, Any], fake: FakeProvider) -> str:
    return jwt.encode(claims, rsa_key(5), algorithm="RS256", headers={"kid": fake.signing[0]})


def _tamper(claims: dict[str, Any], fake: FakeProvider) -> str:
    header, _payload, signature = fake.sign(claims).split(".")
    forged = {**claims, "sub": "admin"}
    body = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    return f"{header}.{body}.{signature}"


def _unsigned(claims: dict[str, Any], fake: FakeProvider) -> str:
    return jwt.encode(claims, None, algorithm="none")


def _hmac_with_public_key(claims: dict[str, Any], fake: FakeProvider) -> str:
    jwk = json.dumps(jwt.algorithms.RSAAlgorithm.to_jwk(fake.signing[1].public_key()))
    header = {"alg": "HS256", "typ": "JWT", "kid": fake.signing[0]}
    encode = lambda data: base64.urlsafe_b64encode(data).rstrip(b"=")  # noqa: E731
    signing_input = encode(json.dumps(header).encode()) + b"." + encode(json.dumps(claims).encode())
    import hmac as hmac_module

    signature = hmac_module.new(jwk.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + encode(signature)).decode()


def _with(**changes: Any) -> Callable[[dict[str, Any], FakeProvider], str]:
    def shape(claims: dict[str, Any], fake: FakeProvider) -> str:
        merged = {**claims, **changes}
        return fake.sign({k: v for k, v in merged.items() if v is not None})

    return shape


NOW = int(time.time())

FORGERIES = {
    "tampered payload": (_tamper, "bad signature: no published key verifies it"),
    "signed by another key with the provider's kid": (
        _resign_other_key,
        "bad signature: no published key verifies it",
    ),
    "alg none": (_unsigned, "ID token algorithm 'none' is not allowed"),
    "HS256 with the public key as secret": (
        _hmac_with_public_key,
        "ID token algorithm 'HS256' is not allowed",
    ),
    "wrong audience": (_with(aud="another-client"), "ID token for another audience"),
    "wrong issuer": (_with(iss="http://127.0.0.1:1"), "ID token from another issuer"),
    "expired": (_with(iat=NOW - 7200, exp=NOW - 3600), "ID token expired"),
    "issued in the future": (
        _with(iat=NOW + 3600, exp=NOW + 7200),
        "ID token not valid yet (iat or nbf in the future)",
    ),
    "without exp": (_with(exp=None), "ID token without 'exp'"),
    "without nonce": (_with(nonce=None), "ID token without nonce"),
    "authorized for another party": (
        _with(azp="another-client"),
        "ID token authorized for another party (azp)",
    ),
    "several audiences without azp": (
        _with(aud=["hubbub", "another-client"]),
        "ID token for several audiences without azp",
    ),
    "not a JWT": (lambda claims, fake: "not-a-jwt", "malformed ID token"),
}


@pytest.mark.parametrize("case", sorted(FORGERIES))
async def test_a_forged_or_invalid_id_token_is_refused(
    case: str, fake: FakeProvider, make_method: MethodFactory, caplog: pytest.LogCaptureFixture
) -> None:
    shape, reason = FORGERIES[case]
    method = await make_method(fake_toml(fake))
    await fake_login(method)  # a genuine token passes
    fake.shape = shape
    with caplog.at_level(logging.WARNING, LOGGER):
        error = await refused(fake_login(method))
    assert error.reason.startswith(reason)
    assert reason in caplog.text


async def test_a_small_clock_difference_is_tolerated(
    fake: FakeProvider, make_method: MethodFactory
) -> None:
    method = await make_method(fake_toml(fake))
    fake.shape = _with(iat=int(time.time()) + 10)  # leeway 30 s
    await fake_login(method)


async def test_an_unknown_kid_rereads_the_keys_once_then_refuses(
    fake: FakeProvider, make_method: MethodFactory
) -> None:
    method = await make_method(fake_toml(fake))
    await fake_login(method)
    assert fake.hits["/jwks"] == 1
    fake.shape = lambda claims, fake: jwt.encode(
        claims, rsa_key(5), algorithm="RS256", headers={"kid": "forged"}
    )
    error = await refused(fake_login(method))
    assert error.reason.startswith("no published key fits the token's kid and algorithm")
    assert "also after re-reading the keys" in error.reason
    assert fake.hits["/jwks"] == 2
    # More forged kids within jwks_refetch_interval: no more reads of the provider's keys.
    for _ in range(3):
        error = await refused(fake_login(method))
        assert "keys re-read less than 60 s ago" in error.reason
    assert fake.hits["/jwks"] == 2


async def test_a_rotated_key_is_found_after_one_reread(
    fake: FakeProvider, make_method: MethodFactory
) -> None:
    method = await make_method(fake_toml(fake))
    await fake_login(method)
    fake.rotate("k2", 1)  # the provider now signs with k2 and publishes only k2
    assert (await fake_login(method)).id == principal_id("fake", fake.url, "user-1")
    assert fake.hits["/jwks"] == 2
    await fake_login(method)
    assert fake.hits["/jwks"] == 2


async def test_the_code_exchange_proves_the_pkce_verifier(
    fake: FakeProvider, make_method: MethodFactory
) -> None:
    method = await make_method(fake_toml(fake))
    attempt = attempt_for()
    params = await follow(await method.login_url(attempt))
    forged = msgspec.structs.replace(attempt, code_verifier="x" * 64)
    error = await refused(method.complete_login(forged, params))
    assert error.reason == "the token endpoint refused the code: invalid_grant"
    assert fake.token_requests[-1]["auth"] == "basic"
    assert fake.token_requests[-1]["code_verifier"] == "x" * 64


async def test_the_client_secret_is_posted_when_the_provider_takes_only_that(
    fake: FakeProvider, make_method: MethodFactory
) -> None:
    fake.discovery = {"token_endpoint_auth_methods_supported": ["client_secret_post"]}
    method = await make_method(fake_toml(fake))
    await fake_login(method)
    request = fake.token_requests[-1]
    assert (request["auth"], request["client_secret"]) == ("post", "s3cret")


async def test_a_public_client_signs_in_with_pkce_alone(
    fake: FakeProvider, make_method: MethodFactory
) -> None:
    fake.client_secret = None
    method = await make_method(
        f"""
[[plugins.oidc_auth.providers]]
name = "public"
issuer = "{fake.url}"
client_id = "hubbub"
"""
    )
    assert (await fake_login(method)).id.startswith("public-")
    request = fake.token_requests[-1]
    assert request["auth"] == "none"
    assert request["client_id"] == "hubbub"
    assert "client_secret" not in request


async def test_a_discovery_document_for_another_issuer_is_refused(
    fake: FakeProvider, make_method: MethodFactory
) -> None:
    fake.discovery = {"issuer": "https://evil.example"}
    method = await make_method(fake_toml(fake))
    with pytest.raises(
        IdentityProviderUnavailableError, match=r"names issuer 'https://evil\.example'"
    ):
        await method.login_url(attempt_for())


async def test_a_provider_offering_only_symmetric_algorithms_is_refused(
    fake: FakeProvider, make_method: MethodFactory
) -> None:
    fake.discovery = {"id_token_signing_alg_values_supported": ["HS256", "none"]}
    method = await make_method(fake_toml(fake))
    with pytest.raises(IdentityProviderUnavailableError, match="no public-key algorithm"):
        await method.login_url(attempt_for())


async def test_a_callback_from_another_issuer_is_refused(
    fake: FakeProvider, make_method: MethodFactory
) -> None:
    method = await make_method(fake_toml(fake))
    attempt = attempt_for()
    params = await follow(await method.login_url(attempt))
    error = await refused(method.complete_login(attempt, {**params, "iss": "https://evil.example"}))
    assert error.reason.startswith("the callback comes from issuer")
    assert fake.token_requests == []  # the code was never sent anywhere


# -- Entra ID ----------------------------------------------------------------------------------


async def test_entra_multi_tenant_checks_the_issuer_of_the_tokens_tenant(
    fake: FakeProvider, make_method: MethodFactory
) -> None:
    method = await make_method(
        entra_toml(fake, extra=f'allowed_tenants = ["{TENANT_A}"]'), method="entra"
    )
    fake.claims = {
        "sub": "entra-user",
        "tid": TENANT_A,
        "roles": ["Hubbub.Admin"],
        "preferred_username": "ada@contoso.example",
    }
    attempt = attempt_for("entra")
    url = await method.login_url(attempt)
    assert url.startswith(f"{fake.url}/organizations/oauth2/v2.0/authorize?")
    ada = await method.complete_login(attempt, await follow(url))
    assert ada.id == principal_id("contoso", f"{fake.url}/{TENANT_A}/v2.0", "entra-user")
    assert (ada.name, ada.auth_method, ada.roles) == (
        "ada@contoso.example",
        "entra",
        frozenset({"admin", "user"}),
    )
    # A tenant that is not allowed, with a token valid for its own issuer.
    fake.claims = {"sub": "other", "tid": TENANT_B}
    error = await refused(fake_login(method))
    assert error.reason == f"tenant {TENANT_B!r} is not allowed"
    # The issuer of one tenant with the tid of another.
    fake.claims = {"sub": "other", "tid": TENANT_A, "iss": f"{fake.url}/{TENANT_B}/v2.0"}
    assert (await refused(fake_login(method))).reason == "ID token from another issuer"
    # No tid: no issuer to expect.
    fake.claims = {"sub": "other", "iss": f"{fake.url}/{TENANT_A}/v2.0"}
    error = await refused(fake_login(method))
    assert error.reason == "ID token without a valid tid for a multi-tenant issuer"
    fake.claims = {"sub": "other", "tid": "../evil", "iss": f"{fake.url}/../evil/v2.0"}
    error = await refused(fake_login(method))
    assert error.reason == "ID token without a valid tid for a multi-tenant issuer"


async def test_entra_without_allowed_tenants_admits_every_tenant_and_warns(
    fake: FakeProvider, make_method: MethodFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, LOGGER):
        method = await make_method(entra_toml(fake, tenant="common"), method="entra")
    assert "admits people of every tenant" in caplog.text
    fake.claims = {"sub": "someone", "tid": TENANT_B}
    person = await fake_login(method)
    assert person.id == principal_id("contoso", f"{fake.url}/{TENANT_B}/v2.0", "someone")
    assert person.roles == {"user"}


async def test_entra_single_tenant_and_group_roles(
    fake: FakeProvider, make_method: MethodFactory, caplog: pytest.LogCaptureFixture
) -> None:
    group = "6d0a4c1e-2b3f-4e5a-9c8d-7f1e0a2b3c4d"
    method = await make_method(
        entra_toml(
            fake,
            tenant=TENANT_A,
            extra='roles_claim = "groups"',
            role_map=f'{{ "{group}" = "admin" }}',
        ),
        method="entra",
    )
    fake.claims = {"sub": "grace", "tid": TENANT_A, "groups": [group], "name": "Grace"}
    grace = await fake_login(method)
    assert (grace.name, grace.roles) == ("Grace", frozenset({"admin", "user"}))
    # Too many groups: Entra ID sends a pointer instead of the claim.
    fake.claims = {"sub": "grace", "tid": TENANT_A, "_claim_names": {"groups": "src1"}}
    with caplog.at_level(logging.WARNING, LOGGER):
        assert (await fake_login(method)).roles == {"user"}
    assert "groups overage" in caplog.text
    # The single-tenant issuer is fixed: another tenant's token does not pass.
    fake.claims = {"sub": "x", "tid": TENANT_B, "iss": f"{fake.url}/{TENANT_B}/v2.0"}
    assert (await refused(fake_login(method))).reason == "ID token from another issuer"


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "path", "message"),
    [
        (
            '[[plugins.oidc_auth.providers]]\nname = "a"\nissuer = "http://idp.example"\n'
            'client_id = "c"',
            "plugins.oidc_auth.providers[0]",
            "issuer must use https://",
        ),
        (
            '[[plugins.oidc_auth.providers]]\nname = "a"\nissuer = "https://idp.example"\n'
            'client_id = "c"\n[[plugins.oidc_auth.entra]]\nname = "a"\ntenant = "common"\n'
            'client_id = "c"',
            "plugins.oidc_auth",
            "two identity providers are named 'a'",
        ),
        (
            '[[plugins.oidc_auth.providers]]\nname = "a"\nissuer = "https://idp.example"\n'
            'client_id = "c"\nscopes = ["email"]',
            "plugins.oidc_auth.providers[0]",
            "scopes must include 'openid'",
        ),
        (
            '[[plugins.oidc_auth.providers]]\nname = "a"\nissuer = "https://idp.example"\n'
            'client_id = "c"\nauthorize_params = { nonce = "fixed" }',
            "plugins.oidc_auth.providers[0]",
            "authorize_params may not set nonce",
        ),
        (
            '[[plugins.oidc_auth.providers]]\nname = "a b"\nissuer = "https://idp.example"\n'
            'client_id = "c"',
            "plugins.oidc_auth.providers[0].name",
            "expected 'str' matching regex",
        ),
        (
            '[[plugins.oidc_auth.entra]]\nname = "e"\ntenant = "not a tenant"\nclient_id = "c"',
            "plugins.oidc_auth.entra[0]",
            "tenant must be a tenant id (GUID), a domain",
        ),
        (
            '[[plugins.oidc_auth.entra]]\nname = "e"\ntenant = "common"\nclient_id = "c"\n'
            'allowed_tenants = ["contoso.com"]',
            "plugins.oidc_auth.entra[0]",
            "allowed_tenants must be tenant ids (GUIDs)",
        ),
        (
            '[[plugins.oidc_auth.providers]]\nname = "a"\nissuer = "https://idp.example"\n'
            'client_id = "c"\nrole_mapp = {}',
            "plugins.oidc_auth.providers[0].role_mapp",
            "unknown key",
        ),
    ],
)
def test_bad_settings_stop_startup_with_their_path(
    tmp_path: Path, toml: str, path: str, message: str
) -> None:
    config = config_for(tmp_path, toml)
    with pytest.raises(ConfigError) as caught:
        decode_settings(config, "oidc_auth", OidcAuthSettings)
    (issue,) = caught.value.issues
    assert issue.path == path
    assert message in issue.message


def test_a_loopback_http_issuer_and_a_secret_from_the_environment_are_accepted(
    tmp_path: Path,
) -> None:
    config = config_for(
        tmp_path,
        '[[plugins.oidc_auth.providers]]\nname = "local"\nissuer = "http://localhost:9400/"\n'
        'client_id = "c"\nclient_secret = { env = "IDP_SECRET" }',
        env={"IDP_SECRET": "hush"},
    )
    settings = decode_settings(config, "oidc_auth", OidcAuthSettings)
    secret = settings.providers[0].client_secret
    assert secret is not None
    assert secret.reveal() == "hush"
    assert "hush" not in repr(settings)


def test_every_toml_example_of_the_docs_page_decodes(tmp_path: Path) -> None:
    page = (Path(__file__).parent.parent / "docs" / "auth-oidc.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", page, re.S)
    assert len(blocks) >= 4
    env = {"CORP_OIDC_SECRET": "s", "ENTRA_SECRET": "s", "GOOGLE_SECRET": "s"}
    for block in blocks:
        config = config_for(tmp_path, block, env=env)
        decode_settings(config, "oidc_auth", OidcAuthSettings)


# -- in a runtime --------------------------------------------------------------------------------


async def test_the_runtime_builds_both_methods_from_the_configuration(
    tmp_path: Path, mock: MockProvider, fake: FakeProvider
) -> None:
    config = config_for(
        tmp_path / "home",
        '[auth]\nmethods = ["oidc", "entra"]\n' + mock_toml(mock) + entra_toml(fake),
    )
    async with runtime_for(config) as runtime:
        methods = runtime.auth_methods
        assert list(methods) == ["oidc", "entra"]
        for method in methods.values():
            satisfies_the_redirect_contract(method)
        assert await runtime.auth.is_provisioned()
        oidc = methods["oidc"]
        assert isinstance(oidc, OidcMethod)
        assert (await mock_login(oidc, "alice")).auth_method == "oidc"
        health = await runtime.health()
        assert health.status == "ok"
