"""Progress reporting for the command line: a tqdm bar, or plain lines without tqdm."""

import sys


class Progress:
    """A tqdm bar on stderr, or plain lines when tqdm is not installed."""

    def __init__(self, total, desc, unit, enabled):
        self.total, self.desc, self.unit, self.count = total, desc, unit, 0
        self.enabled = enabled
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=True)

    def update(self, info=""):
        self.count += 1
        if self.bar is not None:
            if info:
                self.bar.set_postfix_str(info, refresh=False)
            self.bar.update(1)
        elif self.enabled:
            suffix = f": {info}" if info else ""
            print(f"{self.desc} {self.unit} {self.count}/{self.total}{suffix}", file=sys.stderr,
                  flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class EpochLines:
    """Stands in for stdout during ``fit(verbose=1)`` and turns each per-epoch line the
    estimator prints into one step of a progress bar, so that the command line runs the very
    same ``fit`` as the Python API."""

    def __init__(self, progress):
        self.progress = progress
        self.pending = ""

    def write(self, text):
        self.pending += text
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            if line.strip():
                # "[ModelName] epoch 3: loss 0.1, dead atoms 2/256, 0.5s" -> "loss 0.1, ..."
                self.progress.update(line.split(": ", 1)[-1])
        return len(text)

    def flush(self):
        pass
