"""A real MCP client for the integration tests: spawns `polaris mcp` over stdio with the
official Python SDK, initializes, lists the tools and calls the ones it is given.

Usage: mcp_client.py POLARIS_BIN CALLS_JSON
  CALLS_JSON is a list of [tool name, arguments object].
Prints one JSON object: {"server", "instructions", "tools", "calls"}, where "tools" maps
each tool name to its input schema and "calls" holds, per call, either
{"name", "is_error", "text"} or {"name", "error"} when the server answered with an MCP
error. Everything in the environment named POLARIS_* or CLAUDE_* is passed to the server.

tests/it/mcp.rs runs it under the interpreter POLARIS_TEST_MCP_PYTHON names (.ci/run makes
a virtual environment with the pinned SDK); its Rust client prints the same shape.
"""

import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def dump(model):
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def main(binary, calls):
    env = {k: v for k, v in os.environ.items() if k.startswith(("POLARIS_", "CLAUDE_"))}
    params = StdioServerParameters(command=binary, args=["mcp"], env=env)
    out = {"calls": []}
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = dump(await session.initialize())
            out["server"] = init.get("serverInfo")
            out["instructions"] = init.get("instructions")
            out["capabilities"] = init.get("capabilities")
            tools = dump(await session.list_tools())
            out["tools"] = {t["name"]: t.get("inputSchema") for t in tools["tools"]}
            for name, args in calls:
                try:
                    result = dump(await session.call_tool(name, args))
                except Exception as e:  # an MCP error answer
                    out["calls"].append({"name": name, "error": str(e)})
                    continue
                texts = [c.get("text", "") for c in result.get("content", [])]
                out["calls"].append(
                    {
                        "name": name,
                        "is_error": bool(result.get("isError")),
                        "content_items": len(texts),
                        "text": "\n".join(texts),
                    }
                )
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
