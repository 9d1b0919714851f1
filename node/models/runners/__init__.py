"""Runners: each loaded model variant in a child process of the node.

A native crash in llama.cpp or MLX (a segmentation fault, an out-of-memory kill) then takes down
one runner, not the node with every run it coordinates; unloading a model gives its memory back
to the operating system; and the node's own process never imports llama_cpp or mlx.

    runtime.py   RunnerRuntime, the ModelRuntime the node uses: one runner per model variant
    process.py   one runner process seen from the node: start, generate, stop, death
    protocol.py  the framed msgpack messages over the socketpair, decoded with caps
    child.py     the runner process itself (`python -m orc.node.models.runners.child`)
    hosted.py    which in-process runtime a runner hosts, and its safe settings
    crashes.py   when a crashing model stops being offered (pure)
    cpu_share.py the node's cores split among the runners generating at the same time

docs/architecture.md ("Runners") has the protocol, the lifecycle and the crash policy.
"""

from orc.node.models.runners.protocol import RunnerSettings
from orc.node.models.runners.runtime import RunnerRuntime

__all__ = ["RunnerRuntime", "RunnerSettings"]
