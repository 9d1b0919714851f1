"""The vocabulary nodes and the local CLI exchange, as frozen domain types (no gRPC here).

Owns a node's description (`description`), the requests and replies of the mesh and control
services (`messages`), the progress events of a run (`events`), node and mesh ids (`ids`) and the
node's domain errors (`errors`: `NodeError` and its classes, each with a category, no status
code). `orc.node.rpc.wire` turns them into the `orc.v1` messages of proto/ and back.
May import: `orc.scheduler`, `orc.node.models`, `orc.node.home`.
"""
