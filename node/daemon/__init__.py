"""`orc-node start`'s composition root: the one place the daemon's real parts are built and wired.

Owns the daemon (`root.Daemon`), its start-up handle (`startup`), the local control service
(`control`), the join server kept open while an invitation is pending (`join_server`) and the
flows that need the network before the node runs (`joining`).
May import every package below it (all of `orc.node` but `cli` and its sibling root `api`; the
control service's embedded `Orc` per run is the one exception today, listed in
tests/test_import_graph.py); nothing but `cli` imports it.
"""
