"""This node's standing in its mesh: identity, certificates, join tokens, revocation, renewal.

The pure part decides (`ids`, `certificates`, `tokens`, `revocation`); `store` keeps it on disk
with safe permissions; `membership` is the running node's trust state, persisted on every
change; `renewal` chooses whom to ask for a new certificate and checks what comes back;
`rate_limits` keeps per-peer token buckets (calls to the mesh server, certificate renewals).
May import: `orc.scheduler`, `orc.node.models`, `orc.node.protocol`, `orc.node.home`.
"""
