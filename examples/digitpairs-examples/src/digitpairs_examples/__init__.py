"""Architectures of one's own for digitpairs (archs.py) and a study comparing them (examples.toml)."""
