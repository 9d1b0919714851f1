"""The coordinator: the runs this node coordinates, from a bound ensemble to its result.

Owns the run engine (`engine`: the async shell that performs what `orc.scheduler.run` decides)
and the placer (`placer`: each generation placed on the mesh with Offers, executed, failed over,
peers trusted only as far as observed).
May import: `orc.scheduler`, `orc.node.models`, `orc.node.protocol`, `orc.node.trust`,
`orc.node.links`, `orc.node.worker`, `orc.node.home`.
"""
