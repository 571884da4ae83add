"""The OpenAPI document describes what the server really answers (generated clients rely on
it): problem responses, the 202/200 of posting a message, typed pages."""

from __future__ import annotations

import httpx


async def test_api_routes_document_their_problem_responses(
    hubbub_client: httpx.AsyncClient,
) -> None:
    schema = (await hubbub_client.get("/schema/openapi.json")).json()
    get_one = schema["paths"]["/api/conversations/{conversation_id}"]["get"]["responses"]
    assert {"200", "401", "404", "422"} <= set(get_one)
    problem = get_one["404"]["content"]["application/problem+json"]["schema"]
    assert problem["$ref"].endswith("Problem")
    post = schema["paths"]["/api/conversations/{conversation_id}/messages"]["post"]["responses"]
    assert {"202", "200", "409"} <= set(post)
    chat = schema["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert {"200", "401", "404", "422"} <= set(chat)


async def test_listings_are_typed_pages(hubbub_client: httpx.AsyncClient) -> None:
    schema = (await hubbub_client.get("/schema/openapi.json")).json()
    listing = schema["paths"]["/api/conversations"]["get"]["responses"]["200"]
    reference = listing["content"]["application/json"]["schema"]["$ref"]
    page = schema["components"]["schemas"][reference.rsplit("/", 1)[1]]
    assert page["properties"]["items"]["items"]["$ref"].endswith("Conversation")


async def test_metrics_content_type_has_one_charset(hubbub_client: httpx.AsyncClient) -> None:
    response = await hubbub_client.get("/metrics")
    assert response.headers["content-type"].count("charset") == 1
    assert response.headers["content-type"].startswith("text/plain; version=")
