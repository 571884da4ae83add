"""Tests of the installed plugin (``pip install -e '.[test]'`` first), with the fixtures and helpers
of ``hubbub.testing``, which pytest loads by itself. Each test loads hubbub's built-in plugins and
this one by entry-point name, and nothing else that is installed."""

import json
import logging

import pytest

from hubbub.contracts import ToolContext
from hubbub.errors import ConfigError
from hubbub.models import ToolCall
from hubbub.testing import (
    FakeLLM,
    builtin_plugins,
    config_for,
    principal,
    reply,
    runtime_for,
    tool_call,
)

PLUGIN = "{{ cookiecutter.plugin_name }}"
DISTRIBUTION = "{{ cookiecutter.project_slug }}"
TOOL = f"{PLUGIN}.{{ cookiecutter.tool_name }}"  # namespaced by the registration
PLUGINS = [*builtin_plugins(), PLUGIN]
WITH_SINK = f'[events]\nsinks = ["log", "{PLUGIN}"]\n'


@pytest.fixture
def hubbub_plugins():
    """The plugins the fixtures load, by entry-point name: the built-in ones and this one."""
    return PLUGINS


@pytest.fixture
def hubbub_config(tmp_path):
    """The default configuration, plus this plugin's event sink."""
    return config_for(tmp_path, toml=WITH_SINK)


async def call_tool(runtime, arguments):
    call = ToolCall(id="call_1", name=TOOL, arguments=json.dumps(arguments))
    return await runtime.tools.call(call, ToolContext(principal=principal("Ada")))


async def test_the_running_app_lists_the_plugin_and_its_tool(hubbub_runtime, hubbub_client):
    # Loaded through its entry point from the installed distribution, not imported by the test.
    info = hubbub_runtime.plugins.info[PLUGIN]
    assert (info.source, info.error) == (DISTRIBUTION, None)
    tools = (await hubbub_client.get("/api/tools")).json()["tools"]
    assert {"name": TOOL, "source": PLUGIN} in [
        {"name": tool["name"], "source": tool["source"]} for tool in tools
    ]
    ready = (await hubbub_client.get("/health/ready")).json()
    assert ready["components"][f"events.{PLUGIN}"]["status"] == "ok"


async def test_the_tool_greets(hubbub_runtime):
    assert (await call_tool(hubbub_runtime, {"name": "Grace"})).content == "Hello, Grace!"
    assert (await call_tool(hubbub_runtime, {})).content == "Hello, Ada!"


async def test_settings_change_the_greeting(tmp_path):
    config = config_for(tmp_path, toml=f'[plugins.{PLUGIN}]\ngreeting = "Ahoy"\n')
    async with runtime_for(config, plugins=PLUGINS) as runtime:
        assert (await call_tool(runtime, {"name": "Grace"})).content == "Ahoy, Grace!"


async def test_a_misspelled_setting_is_an_error(tmp_path):
    config = config_for(tmp_path, toml=f'[plugins.{PLUGIN}]\ngreting = "Ahoy"\n')
    with pytest.raises(ConfigError, match=f"plugins.{PLUGIN}.greting"):
        async with runtime_for(config, plugins=PLUGINS):
            pass


async def test_the_sink_counts_the_events_of_a_reply(hubbub_config, caplog):
    caplog.set_level(logging.INFO, logger=f"hubbub.plugins.{PLUGIN}")
    # A scripted model: it calls the tool, then answers with what the tool returned.
    fake = FakeLLM(
        tool_call(TOOL, {"name": "Lin"}),
        lambda request: reply(f"The tool said: {request.messages[-1].content}"),
    )
    me = principal()
    async with runtime_for(hubbub_config, [fake], plugins=PLUGINS) as runtime:
        conversation = await runtime.conversations.create(me, model=fake.model)
        await runtime.conversations.send(me, conversation.id, "Greet Lin, please.")
        answer = await runtime.conversations.reply(me, conversation.id)
    # The runtime has stopped: the sink has handled every event and logged its totals.
    assert answer.content == "The tool said: Hello, Lin!"
    [totals] = [record.event_counts for record in caplog.records if hasattr(record, "event_counts")]
    assert totals["tool.finished"] == 1
    assert totals["message.completed"] == 2
