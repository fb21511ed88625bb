"""The command line's words for what Python says: parameter names written as the flags that
set them, and the estimators' warnings printed on stderr in that spelling."""

import os
import sys

from .common import _emit, _silence


def _flag_spelling(command_module):
    """{Python parameter: command-line flag} for a command: its ``_FLAGS`` entries that say
    "use --FLAG", and its own ``_SPELLING`` (parameters of the command itself)."""
    spelling = {
        name: text[len("use ") :]
        for name, text in getattr(command_module, "_FLAGS", {}).items()
        if text.startswith("use --")
    }
    return {**spelling, **getattr(command_module, "_SPELLING", {})}


def _cli_spelling(message, spelling):
    """``message`` with ``name=value`` and ``(name)`` of each Python parameter in
    ``spelling`` written as its flag (``n_nonzero_coefs=100`` -> ``--k 100``); other names
    are left alone."""
    import re

    for name, flag in spelling.items():
        message = re.sub(rf"(?<![\w.]){re.escape(name)}=", f"{flag} ", message)
        message = message.replace(f"({name})", f"({flag})")
    return message


def _warning_printer(command, command_module):
    """A ``warnings.showwarning`` that prints one line on stderr, ``skmpsae COMMAND:
    warning: ...``, in the command's spelling, each distinct line once; on the main process
    only (under a launcher, every rank would say it)."""
    spelling = _flag_spelling(command_module)
    shown = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = " ".join(str(message).split())
        line = f"skmpsae {command}: warning: {_cli_spelling(text, spelling)}"
        # The same words from two places (the flags checked, then the fit) are said once.
        if os.environ.get("RANK", "0") != "0" or line in shown:
            return
        shown.add(line)
        try:
            from tqdm import tqdm

            tqdm.write(line, file=sys.stderr)  # above a progress bar, not through it
        except ImportError:
            _emit(line, sys.stderr)
        except OSError:
            _silence(sys.stderr)

    return show
