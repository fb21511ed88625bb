"""The machinery behind :mod:`skmpsae.inspect` and ``skmpsae report``."""
