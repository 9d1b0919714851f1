"""What the node counts and measures, exposed as Prometheus metrics (`orc_*`) at `/metrics`.

Parts of the node report what they observe through small observer methods; state that already
lives somewhere (peers, admission, runners) is read when Prometheus scrapes, not copied.
"""
