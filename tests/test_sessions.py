"""Sessions through the runtime: local logins, access tokens checked against their session,
refresh rotation with reuse detection, revocation reaching another process, limits on
sessions and on failed logins, idle expiry, cleanup, keyring rotation, local accounts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from hubbub import hookimpl
from hubbub.auth.keyfiles import KeyringSource, write_keyring
from hubbub.auth.sessions import SessionManager, StoredSession
from hubbub.auth.tokens import Keyring, TokenError
from hubbub.contracts import Credentials
from hubbub.errors import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    TooManyRequestsError,
)
from hubbub.registry import ComponentContext, Registrar
from hubbub.runtime import Runtime
from hubbub.testing import config_for, runtime_for
from hubbub_plugins.sqlite_accounts import SQLiteAccountStore

FAST = """
[passwords]
time_cost = 1
memory_cost = 8
min_length = 8
"""
PASSWORD = "correct horse battery"


def shared_accounts(path: Path) -> object:
    """A plugin whose account store ``shared`` is one SQLite file: two runtimes with it are
    two processes sharing their sessions."""

    class Plugin:
        @hookimpl
        def register_account_stores(self, register: Registrar) -> None:
            def build(context: ComponentContext[None]) -> SQLiteAccountStore:
                return SQLiteAccountStore(str(path))

            register("shared", build)

    return Plugin()


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    async with runtime_for(config_for(tmp_path, FAST)) as runtime:
        await runtime.users.add("alice", PASSWORD)
        yield runtime


async def login(runtime: Runtime, name: str = "alice", password: str = PASSWORD) -> Any:
    return await runtime.logins.password(name, password, user_agent="pytest", ip="127.0.0.9")


async def who(runtime: Runtime, token: str) -> Any:
    return await runtime.auth.authenticate(Credentials(bearer=token))


async def test_login_gives_an_access_token_bound_to_its_session(runtime: Runtime) -> None:
    tokens = await login(runtime)
    principal = await who(runtime, tokens.access_token)
    assert principal.id == "alice"
    assert principal.auth_method == "local"
    assert principal.session_id == tokens.session.id == principal.credential_id
    assert principal.roles == frozenset({"user"})
    assert tokens.expires_in == 900
    assert tokens.refresh_token.startswith(f"hbr_{tokens.session.id}.")
    [session] = await runtime.sessions.list("alice")
    assert session.id == tokens.session.id
    assert (session.user_agent, session.ip, session.auth_method) == ("pytest", "127.0.0.9", "local")


async def test_no_secret_is_in_the_access_token(runtime: Runtime) -> None:
    import jwt

    tokens = await login(runtime)
    claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
    assert set(claims) <= {"iss", "aud", "sub", "sid", "iat", "exp", "jti", "scope"}
    secret = tokens.refresh_token.partition(".")[2]
    assert secret not in tokens.access_token
    assert PASSWORD not in str(claims)


async def test_wrong_passwords_and_unknown_users_get_one_answer(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    await runtime.users.add("nopass", None)
    await runtime.users.add("carol", PASSWORD)
    await runtime.users.set_disabled("carol", True)
    messages = set()
    with caplog.at_level(logging.INFO, logger="hubbub.auth"):
        for name, password in [
            ("alice", "wrong password"),
            ("nobody", PASSWORD),
            ("nopass", PASSWORD),
            ("carol", PASSWORD),
        ]:
            with pytest.raises(AuthenticationError) as caught:
                await login(runtime, name, password)
            messages.add(str(caught.value))
    assert messages == {"the user name or password is not right"}
    logged = caplog.text
    for reason in ("wrong password", "unknown user", "account has no password", "disabled"):
        assert reason in logged
    assert PASSWORD not in logged
    assert "wrong password" in logged  # the reason, not the password itself


async def test_names_are_one_account_whatever_their_case(runtime: Runtime) -> None:
    with pytest.raises(ConflictError):
        await runtime.users.add("ALICE", PASSWORD)
    tokens = await login(runtime, "Alice")
    assert (await who(runtime, tokens.access_token)).id == "alice"
    with pytest.raises(InvalidRequestError, match="reserved"):
        await runtime.users.add("local", PASSWORD)
    with pytest.raises(InvalidRequestError, match="at least 8"):
        await runtime.users.add("dave", "short")


async def test_refresh_rotates_and_reuse_ends_the_session(runtime: Runtime) -> None:
    first = await login(runtime)
    second = await runtime.sessions.refresh(first.refresh_token)
    assert second.session.id == first.session.id
    assert second.refresh_token != first.refresh_token
    assert (await who(runtime, second.access_token)).id == "alice"
    # the first refresh token again: copied by someone; the whole session ends
    with pytest.raises(AuthenticationError):
        await runtime.sessions.refresh(first.refresh_token)
    for token in (first.access_token, second.access_token):
        with pytest.raises(TokenError):
            await who(runtime, token)
    with pytest.raises(AuthenticationError):
        await runtime.sessions.refresh(second.refresh_token)
    assert await runtime.sessions.list("alice") == []


async def test_forged_refresh_tokens_end_nothing(runtime: Runtime) -> None:
    tokens = await login(runtime)
    session_id = tokens.session.id
    for forged in [
        f"hbr_{session_id}.{'A' * 43}",  # right session, made-up secret
        "hbr_ses_0.x",
        "not a token",
        tokens.refresh_token + "x",
        "hbr_" + "a" * 1000,
    ]:
        with pytest.raises(AuthenticationError):
            await runtime.sessions.refresh(forged)
    assert (await who(runtime, tokens.access_token)).id == "alice"  # still valid


async def test_concurrent_refreshes_of_one_token_give_one_new_pair(runtime: Runtime) -> None:
    tokens = await login(runtime)
    results = await asyncio.gather(
        *(runtime.sessions.refresh(tokens.refresh_token) for _ in range(4)),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    assert len(won) <= 1  # a second exchange of one token is reuse: never two pairs


async def test_revoking_reaches_another_process_within_a_second(tmp_path: Path) -> None:
    shared = shared_accounts(tmp_path / "accounts.sqlite3")
    keys = tmp_path / "keys.json"
    write_keyring(keys, Keyring.generate())
    toml = FAST + f'[accounts]\nbackend = "shared"\n[sessions]\nsigning_keys = "{keys}"\n'
    async with (
        runtime_for(config_for(tmp_path / "a", toml), [shared]) as first,
        runtime_for(config_for(tmp_path / "b", toml), [shared]) as second,
    ):
        await first.users.add("alice", PASSWORD)
        tokens = await login(first)
        assert (await who(second, tokens.access_token)).id == "alice"  # checked, cached
        assert await first.sessions.revoke(tokens.session.id, owner="alice")
        began = time.monotonic()
        while True:
            try:
                await who(second, tokens.access_token)
            except TokenError:
                break
            assert time.monotonic() - began < 1.0 + 1.0  # check_interval plus slack
            await asyncio.sleep(0.05)
        with pytest.raises(TokenError):
            await who(first, tokens.access_token)


async def test_revoke_checks_the_owner_and_revoke_all_keeps_one(runtime: Runtime) -> None:
    await runtime.users.add("bob", PASSWORD)
    mine = [await login(runtime) for _ in range(3)]
    bobs = await login(runtime, "bob")
    assert not await runtime.sessions.revoke(bobs.session.id, owner="alice")
    assert (await who(runtime, bobs.access_token)).id == "bob"
    ended = await runtime.sessions.revoke_all("alice", keep=mine[0].session.id)
    assert ended == 2
    assert [s.id for s in await runtime.sessions.list("alice")] == [mine[0].session.id]
    assert (await who(runtime, bobs.access_token)).id == "bob"


async def test_sessions_per_user_are_capped(tmp_path: Path) -> None:
    toml = FAST + "[sessions]\nmax_per_user = 2\n"
    async with runtime_for(config_for(tmp_path, toml)) as runtime:
        await runtime.users.add("alice", PASSWORD)
        oldest = await login(runtime)
        await asyncio.sleep(0.01)
        await login(runtime)
        await asyncio.sleep(0.01)
        await login(runtime)
        sessions = await runtime.sessions.list("alice")
        assert len(sessions) == 2
        assert oldest.session.id not in {s.id for s in sessions}
        with pytest.raises(TokenError):
            await who(runtime, oldest.access_token)


async def test_an_idle_session_ends_and_is_purged(runtime: Runtime) -> None:
    tokens = await login(runtime)
    records = runtime.sessions.records
    item = await records.get(tokens.session.id)
    assert item is not None
    past = time.time() - 1
    stale = msgspec.structs.replace(
        item.value, session=msgspec.structs.replace(item.value.session, expires_at=past)
    )
    await records.replace(stale, item.version)
    runtime.sessions._checked.clear()
    with pytest.raises(TokenError):
        await who(runtime, tokens.access_token)
    with pytest.raises(AuthenticationError):
        await runtime.sessions.refresh(tokens.refresh_token)
    assert await runtime.sessions.list("alice") == []
    await runtime.sessions.purge()
    assert await records.get(tokens.session.id) is None


async def test_activity_moves_the_idle_expiry_but_not_past_the_absolute_end(
    tmp_path: Path,
) -> None:
    toml = FAST + "[sessions]\nidle_timeout = 600\nabsolute_timeout = 900\ntouch_interval = 1\n"
    async with runtime_for(config_for(tmp_path, toml)) as runtime:
        await runtime.users.add("alice", PASSWORD)
        tokens = await login(runtime)
        first = tokens.session.expires_at
        assert first is not None
        await asyncio.sleep(1.1)
        await who(runtime, tokens.access_token)
        stored: StoredSession | None = None
        for _ in range(50):  # the touch is written in the background
            item = await runtime.sessions.records.get(tokens.session.id)
            assert item is not None
            stored = item.value
            if (stored.session.expires_at or 0) > first:
                break
            await asyncio.sleep(0.05)
        assert stored is not None
        assert (stored.session.expires_at or 0) > first
        assert (stored.session.expires_at or 0) <= stored.ends_at


async def test_failed_logins_are_limited_per_account(tmp_path: Path) -> None:
    toml = FAST + "[auth]\nlogin_attempts = 3\n"
    async with runtime_for(config_for(tmp_path, toml)) as runtime:
        await runtime.users.add("alice", PASSWORD)
        for _ in range(3):
            with pytest.raises(AuthenticationError):
                await login(runtime, password="wrong password")
        with pytest.raises(TooManyRequestsError) as caught:
            await login(runtime)  # even the right password waits now
        assert caught.value.retry_after is not None
        assert 1 <= caught.value.retry_after <= 900
        await runtime.users.add("bob", PASSWORD)
        assert await login(runtime, "bob")  # other accounts are not affected


async def test_failed_logins_are_limited_per_address(tmp_path: Path) -> None:
    toml = FAST + "[auth]\nlogin_attempts_per_address = 2\n"
    async with runtime_for(config_for(tmp_path, toml)) as runtime:
        for name in ("x1", "x2"):
            with pytest.raises(AuthenticationError):
                await login(runtime, name, "whatever pass")
        with pytest.raises(TooManyRequestsError):
            await login(runtime, "x3", "whatever pass")
        await runtime.users.add("alice", PASSWORD)
        tokens = await runtime.logins.password("alice", PASSWORD, ip="10.0.0.2")
        assert tokens.access_token


async def test_a_successful_login_clears_the_account_count(tmp_path: Path) -> None:
    toml = FAST + "[auth]\nlogin_attempts = 2\n"
    async with runtime_for(config_for(tmp_path, toml)) as runtime:
        await runtime.users.add("alice", PASSWORD)
        for _ in range(3):
            with pytest.raises(AuthenticationError):
                await login(runtime, password="wrong password")
            assert await login(runtime)


async def test_changed_hash_parameters_rehash_at_login(tmp_path: Path) -> None:
    async with runtime_for(config_for(tmp_path, FAST)) as runtime:
        await runtime.users.add("alice", PASSWORD)
        before = (await runtime.users.require("alice")).value.password_hash
    stronger = FAST.replace("time_cost = 1", "time_cost = 2")
    async with runtime_for(config_for(tmp_path, stronger)) as runtime:
        await login(runtime)
        after = (await runtime.users.require("alice")).value.password_hash
    assert before is not None
    assert after is not None
    assert "t=1" in before
    assert "t=2" in after


async def test_a_rotated_keyring_reaches_running_processes(tmp_path: Path) -> None:
    async with runtime_for(config_for(tmp_path, FAST)) as runtime:
        await runtime.users.add("alice", PASSWORD)
        old = await login(runtime)
        sessions = runtime.sessions
        assert sessions.keys is not None
        before = sessions.keyring.signing.kid
        rotated = KeyringSource(runtime.config).rotate(retire_after=3600, activate_after=0.5)
        fresh = max(rotated.keys.values(), key=lambda key: key.created_at).kid
        assert sessions.keys.reload() is not None  # what the poll does every few seconds
        sessions.keyring = sessions.keys.keyring or sessions.keyring
        assert len(sessions.keyring.jwks()["keys"]) == 2  # the new key verifies at once...
        assert kid_of((await login(runtime)).access_token) == before  # ...but signs later
        await asyncio.sleep(0.6)
        new = await login(runtime)
        assert kid_of(new.access_token) == fresh
        assert (await who(runtime, old.access_token)).id == "alice"  # old key still verifies
        assert (await who(runtime, new.access_token)).id == "alice"


def kid_of(token: str) -> str:
    import base64
    import json

    header = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=="))["kid"])


async def test_a_shared_account_store_needs_a_configured_keyring(tmp_path: Path) -> None:
    shared = shared_accounts(tmp_path / "accounts.sqlite3")
    config = config_for(tmp_path, FAST + '[accounts]\nbackend = "shared"\n')
    with pytest.raises(Exception, match=r"share one signing keyring"):
        async with runtime_for(config, [shared]):
            pass
    assert not (tmp_path / "signing-keys.json").exists()


async def test_an_unreadable_keyring_file_is_a_clear_error(tmp_path: Path) -> None:
    keyfile = tmp_path / "keys.json"
    keyfile.write_text("{not json")
    config = config_for(tmp_path, FAST + f'[sessions]\nsigning_keys = "{keyfile}"\n')
    with pytest.raises(Exception, match=r"signing keyring .* is not valid"):
        async with runtime_for(config):
            pass


async def test_a_token_of_another_keyring_is_refused(runtime: Runtime) -> None:
    tokens = await login(runtime)
    foreign = Keyring.generate()
    forged = foreign.issue(
        subject="alice", session_id=tokens.session.id, issuer="hubbub", audience="hubbub"
    )
    with pytest.raises(TokenError):
        await who(runtime, forged)


async def test_a_token_whose_subject_is_not_its_sessions_is_refused(runtime: Runtime) -> None:
    await runtime.users.add("bob", PASSWORD)
    bobs = await login(runtime, "bob")
    sessions: SessionManager = runtime.sessions
    forged = sessions.keyring.issue(
        subject="alice", session_id=bobs.session.id, issuer="hubbub", audience="hubbub"
    )
    with pytest.raises(TokenError):
        await who(runtime, forged)


class BreachList:
    """A plugin refusing passwords whose SHA-1 is in a local breach file (the format of the
    Pwned Passwords downloads: ``HASH:COUNT`` per line), read off the event loop."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @hookimpl
    async def check_new_password(self, password: str, user: str) -> str | None:
        import hashlib

        digest = hashlib.sha1(password.encode()).hexdigest().upper()
        text = await asyncio.to_thread(self.path.read_text)
        hashes = {line.partition(":")[0] for line in text.splitlines()}
        if digest in hashes:
            return "it appears in a known data breach"
        if user.casefold() in password.casefold():
            return "it contains the user name"
        return None


async def test_a_plugin_refuses_breached_passwords(tmp_path: Path) -> None:
    import hashlib

    breached = "password12345"
    corpus = tmp_path / "pwned.txt"
    corpus.write_text(f"{hashlib.sha1(breached.encode()).hexdigest().upper()}:3861493\n")
    async with runtime_for(config_for(tmp_path, FAST), [BreachList(corpus)]) as runtime:
        with pytest.raises(InvalidRequestError, match="known data breach") as caught:
            await runtime.users.add("alice", breached)
        assert caught.value.field == "password"
        with pytest.raises(InvalidRequestError, match="user name"):
            await runtime.users.add("alice", "alice-is-great")
        assert not await runtime.users.exists()  # nothing stored
        await runtime.users.add("alice", PASSWORD)
        with pytest.raises(InvalidRequestError, match="known data breach"):
            await runtime.users.set_password("alice", breached)
        assert await login(runtime)  # the old password still works


class Elsewhere:
    """A sign-in method that redirects (a stand-in for an identity provider): the code
    ``good`` signs ``pat`` in."""

    async def start(self) -> None: ...

    async def health(self) -> Any:
        from hubbub.models import Health

        return Health()

    async def aclose(self) -> None: ...

    async def is_provisioned(self) -> bool:
        return True

    async def authenticate(self, credentials: Credentials) -> None:
        return None

    async def login_url(self, attempt: Any) -> str:
        return f"https://idp.example/authorize?state={attempt.state}&nonce={attempt.nonce}"

    async def complete_login(self, attempt: Any, params: dict[str, str]) -> Any:
        from hubbub.models import Principal

        if params.get("code") != "good":
            raise AuthenticationError("bad code")
        return Principal(id="idp-pat", name="Pat", roles=frozenset({"user"}))


class ElsewherePlugin:
    @hookimpl
    def register_auth_methods(self, register: Registrar) -> None:
        register("elsewhere", lambda context: Elsewhere())


REDIRECT_TOML = FAST + '[auth]\nmethods = ["elsewhere", "local"]\nlogin_attempts_per_address = 3\n'


async def test_a_redirect_sign_in_is_bound_to_its_state_and_used_once(tmp_path: Path) -> None:
    async with runtime_for(config_for(tmp_path, REDIRECT_TOML), [ElsewherePlugin()]) as rt:
        url, attempt = await rt.logins.begin_redirect(
            "elsewhere", redirect_uri="http://127.0.0.1/cb", ip="10.0.0.1"
        )
        assert attempt.state in url
        params = {"state": attempt.state, "code": "good"}
        for cookie in (None, "another-state"):
            with pytest.raises(AuthenticationError):
                await rt.logins.finish_redirect("elsewhere", params, cookie_state=cookie)
        tokens = await rt.logins.finish_redirect("elsewhere", params, cookie_state=attempt.state)
        assert (await who(rt, tokens.access_token)).id == "idp-pat"
        with pytest.raises(AuthenticationError):  # used once
            await rt.logins.finish_redirect("elsewhere", params, cookie_state=attempt.state)
        account = (await rt.users.require("idp-pat")).value
        assert account.source == "elsewhere"
        assert account.password_hash is None
        with pytest.raises(AuthenticationError):  # no password login for it
            await login(rt, "idp-pat", "anything at all")


async def test_a_bad_code_uses_up_the_attempt(tmp_path: Path) -> None:
    async with runtime_for(config_for(tmp_path, REDIRECT_TOML), [ElsewherePlugin()]) as rt:
        _, attempt = await rt.logins.begin_redirect("elsewhere", redirect_uri="http://x/cb")
        bad = {"state": attempt.state, "code": "forged"}
        with pytest.raises(AuthenticationError):
            await rt.logins.finish_redirect("elsewhere", bad, cookie_state=attempt.state)
        good = {"state": attempt.state, "code": "good"}
        with pytest.raises(AuthenticationError):
            await rt.logins.finish_redirect("elsewhere", good, cookie_state=attempt.state)


async def test_redirect_starts_are_limited_per_address(tmp_path: Path) -> None:
    async with runtime_for(config_for(tmp_path, REDIRECT_TOML), [ElsewherePlugin()]) as rt:
        for _ in range(3):
            await rt.logins.begin_redirect("elsewhere", redirect_uri="http://x/cb", ip="10.9.9.9")
        with pytest.raises(TooManyRequestsError):
            await rt.logins.begin_redirect("elsewhere", redirect_uri="http://x/cb", ip="10.9.9.9")
        await rt.logins.begin_redirect("elsewhere", redirect_uri="http://x/cb", ip="10.9.9.8")


async def test_a_disabled_provider_account_cannot_sign_in(tmp_path: Path) -> None:
    async with runtime_for(config_for(tmp_path, REDIRECT_TOML), [ElsewherePlugin()]) as rt:
        _, attempt = await rt.logins.begin_redirect("elsewhere", redirect_uri="http://x/cb")
        params = {"state": attempt.state, "code": "good"}
        await rt.logins.finish_redirect("elsewhere", params, cookie_state=attempt.state)
        await rt.admin.update("idp-pat", disabled=True)
        _, attempt = await rt.logins.begin_redirect("elsewhere", redirect_uri="http://x/cb")
        params = {"state": attempt.state, "code": "good"}
        with pytest.raises(AuthenticationError):
            await rt.logins.finish_redirect("elsewhere", params, cookie_state=attempt.state)


class Staff:
    """A password method of a plugin (a directory), and a bearer method accepting JWTs of
    another issuer: both come after hubbub's own."""

    async def start(self) -> None: ...

    async def health(self) -> Any:
        from hubbub.models import Health

        return Health()

    async def aclose(self) -> None: ...

    async def is_provisioned(self) -> bool:
        return True

    async def authenticate(self, credentials: Credentials) -> Any:
        import jwt as pyjwt

        from hubbub.models import Principal

        if credentials.username == "grace" and credentials.password == "cobol-was-my-idea":
            return Principal(id="staff.grace")
        if credentials.bearer is not None and credentials.bearer.startswith("ey"):
            try:
                claims = pyjwt.decode(
                    credentials.bearer, "partner-secret-0123456789abcdef!", algorithms=["HS256"]
                )
            except pyjwt.PyJWTError:
                return None
            return Principal(id=f"partner.{claims['sub']}")
        return None


class StaffPlugin:
    @hookimpl
    def register_auth_methods(self, register: Registrar) -> None:
        register("staff", lambda context: Staff())


async def test_methods_after_hubbubs_own_are_reached(tmp_path: Path) -> None:
    import jwt as pyjwt

    toml = FAST + '[auth]\nmethods = ["local", "staff"]\n'
    async with runtime_for(config_for(tmp_path, toml), [StaffPlugin()]) as runtime:
        await runtime.users.add("alice", PASSWORD)
        tokens = await login(runtime, "grace", "cobol-was-my-idea")  # local refuses, staff not
        assert (await who(runtime, tokens.access_token)).id == "staff.grace"
        assert (await who(runtime, (await login(runtime)).access_token)).id == "alice"
        foreign = pyjwt.encode(
            {"sub": "ada", "iss": "partner"}, "partner-secret-0123456789abcdef!", "HS256"
        )
        assert (await who(runtime, foreign)).id == "partner.ada"
        forged = pyjwt.encode({"sub": "ada"}, "not-the-partner-secret-0123456789", "HS256")
        with pytest.raises(TokenError):  # nobody accepts it: hubbub's refusal stands
            await who(runtime, forged)


async def test_an_account_disabled_during_its_login_keeps_no_session(tmp_path: Path) -> None:
    async with runtime_for(config_for(tmp_path, FAST)) as runtime:
        await runtime.users.add("mallory", PASSWORD, admin=True)
        await runtime.users.passwords.prepare()
        slots = runtime.users.passwords._slots
        for _ in range(runtime.config.passwords.concurrency):
            await slots.acquire()  # every hashing slot busy: the login reads the account, waits
        attempt = asyncio.create_task(login(runtime, "mallory"))
        await asyncio.sleep(0.05)
        _, ended = await runtime.admin.update("mallory", disabled=True, admin=False)
        assert ended == 0  # nothing to end yet: the login has not opened its session
        for _ in range(runtime.config.passwords.concurrency):
            slots.release()
        with pytest.raises(AuthenticationError):
            await attempt
        assert await runtime.sessions.list("mallory") == []


async def test_asking_again_to_disable_ends_sessions_left_over(runtime: Runtime) -> None:
    tokens = await login(runtime)
    await runtime.users.set_disabled("alice", True)  # disabled, but its sessions not ended
    _, ended = await runtime.admin.update("alice", disabled=True)
    assert ended == 1
    with pytest.raises(TokenError):
        await who(runtime, tokens.access_token)
