"""A tqdm progress bar fed by the engine's progress events."""
from __future__ import annotations

import sys


class ProgressBar:
    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.bar = None
        self.stage = None

    def __call__(self, event: dict):
        if self.quiet:
            return
        if event.get("event") == "log":
            msg = event.get("message", "")
            (self.bar.write if self.bar is not None else lambda m: print(m, file=sys.stderr))(msg)
            return
        if event.get("event") != "progress":
            return
        from tqdm import tqdm
        stage = event.get("stage")
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=event.get("total"), desc=stage, unit="it", file=sys.stderr, leave=True)
        self.bar.n = event.get("iteration", 0)
        post = {}
        if event.get("loss") is not None:
            post["loss"] = f"{event['loss']:.4f}"
        if event.get("psnr") is not None:
            post["psnr"] = f"{event['psnr']:.2f}"
        if event.get("gaussians") is not None:
            post["N"] = event["gaussians"]
        if post:
            self.bar.set_postfix(post, refresh=False)
        self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
