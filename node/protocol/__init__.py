"""The vocabulary nodes and the local CLI exchange, as frozen domain types (no gRPC here).

Owns a node's description (`description`), the requests and replies of the mesh and control
services (`messages`) and the progress events of a run (`events`). `orc.node.rpc.wire` turns
them into the `orc.v1` messages of proto/ and back.
May import: `orc.scheduler`.
"""
