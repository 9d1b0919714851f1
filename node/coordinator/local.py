"""The node id of this machine when no daemon runs (it has no identity then).

A module of its own so that the command line can name it without importing the engine."""

LOCAL_NODE_ID = "local"
