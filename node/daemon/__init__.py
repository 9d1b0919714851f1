"""`orc-node start`'s composition root: the one place the daemon's real parts are built and wired.

Owns the daemon (`root.Daemon`), its start-up handle (`startup`), the local control service
(`control`), the join server kept open while an invitation is pending (`join_server`) and the flows that need the network before the node runs (`joining`).
May import every other part of `orc.node` (but `cli`); nothing but `cli` imports it.
"""
