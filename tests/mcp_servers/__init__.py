"""MCP servers written for the tests with the ``mcp`` package's server API."""
