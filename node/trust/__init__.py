"""This node's standing in its mesh: identity, certificates, join tokens, revocation, renewal.

The pure part decides (`ids`, `certificates`, `tokens`, `revocation`); `store` keeps it on disk
with safe permissions; `membership` is the running node's trust state, persisted on every
change; `renewal` chooses whom to ask for a new certificate and checks what comes back.
May import: `orc.node.protocol`.
"""
