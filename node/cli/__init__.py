"""The `orc` and `orc-node` commands: flags in, one clear line and a documented exit code out.

Owns the commands (`orc`, `orc_node`), their rendering (`render`, `describe`, `peers`,
`terminal`, `phrasing`), the link to the local daemon (`daemon_link`) and the one mapping from an
error to a message and an exit code (`errors.exit_code_for`).
May import every part of `orc.node` and `orc.scheduler`; nothing imports it.
"""
