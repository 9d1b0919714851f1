"""The worker: this node serving generations to the mesh (its own coordinator included).

Owns the node's service behind the mesh server (`service.NodeService`: describe, beat, offer,
execute, cancel), its admission limits (`admission`, pure: leases, slots, bounded queues, fair
shares), the measured speed of its models (`speed`) and the execution log (`execution_log`).
May import: `orc.scheduler`, `orc.node.models`, `orc.node.protocol`, `orc.node.trust`, `orc.node.home`.
"""
