"""The wire: gRPC servers, servicers and clients, TLS settings, the front door, the conversion
between domain types and the `orc.v1` messages. The only package that imports grpc.

Domain errors become status codes (and back) in `errors`, nowhere else.
May import: `orc.scheduler`, `orc.proto`, `orc.node.models`, `orc.node.protocol`, `orc.node.trust`,
`orc.node.links`, `orc.node.worker`, `orc.node.coordinator`, `orc.node.home`.
"""
