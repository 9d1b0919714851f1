"""This node's identity in a mesh: its key, its CA-issued certificate, join tokens and revocations."""
