"""What the SAELens and sparsify layouts share: a directory with ``cfg.json`` beside the
weights, and the checks of its fields."""

import json
from pathlib import Path

_CFG = "cfg.json"


def _read_cfg(directory, weights, library):
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such directory")
    cfg_path = directory / _CFG
    if not cfg_path.is_file() or not (directory / weights).is_file():
        children = sorted(p.name for p in directory.iterdir() if (p / _CFG).is_file())
        hint = f"; it holds SAEs in the sub-directories {children}" if children else ""
        raise ValueError(
            f"{directory}: not a {library} SAE directory (expected {_CFG} and {weights}){hint}."
        )
    try:
        cfg = json.loads(cfg_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{cfg_path}: not valid JSON ({exc}).") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_path}: expected a JSON object, got {type(cfg).__name__}.")
    return directory, cfg


def _positive_int_field(cfg, key, source):
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{source}: {key} must be a positive integer, got {value!r}.")
    return value
