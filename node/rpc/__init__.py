"""The wire: gRPC servers, servicers and clients, TLS settings, the front door, the conversion
between domain types and the `orc.v1` messages. The only package that imports grpc.

May import: `orc.scheduler`, `orc.proto`, `orc.node.protocol`, `orc.node.trust`, `orc.node.links`.
"""
