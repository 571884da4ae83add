"""A tiny MCP server for bench/tools.py, written with the ``mcp`` package's server API: one tool,
``echo``, that returns its ``text`` argument as it came.

    .venv/bin/python bench/_mcp_server.py stdio
    .venv/bin/python bench/_mcp_server.py http --port N     # streamable HTTP at /mcp

It answers at once, so a round trip measures the transport and the two MCP stacks only.
"""

from __future__ import annotations

import argparse

from mcp.server.mcpserver import MCPServer

server = MCPServer("bench")


@server.tool()
def echo(text: str) -> str:
    """Return the text as it came."""
    return text


def main() -> None:
    """Serve over the transport named on the command line until stopped."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("transport", choices=["stdio", "http"])
    parser.add_argument("--port", type=int, default=0, help="http: the port to listen on")
    options = parser.parse_args()
    if options.transport == "stdio":
        server.run("stdio")
        return
    import uvicorn

    uvicorn.run(
        server.streamable_http_app(),
        host="127.0.0.1",
        port=options.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
