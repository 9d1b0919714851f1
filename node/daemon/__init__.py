"""`orc-node start`'s composition root: the one place the daemon's real parts are built and wired.

Owns the daemon (`root.Daemon`), its start-up handle (`startup`), the local control service
(`control`), the join server kept open while an invitation is pending (`join_server`) and the
flows that need the network before the node runs (`joining`), and the supervision of its parts
(`supervision`).
May import every package below it (all of `orc.node` but `cli` and its sibling root `api`);
nothing but `cli` imports it.
"""
