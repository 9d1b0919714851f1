"""The node's HTTP face: the OpenAI-compatible API, `/metrics` and `/health` (docs/api.md).

One ASGI application (Starlette) served by uvicorn inside the daemon's event loop, started and
stopped with the daemon. It is not the mesh port: members talk mutual-TLS gRPC to each other,
people and their tools talk HTTP to their own node, with a bearer API key.
"""
