"""What a run records while it trains: TensorBoard events and a plain metrics.csv.

    out/events.out.tfevents.*   TensorBoard: train/loss and train/lr every step; per epoch
                                epoch/loss, epoch/lr, epoch/images_per_s and val/<metric> for
                                every number validation returns; images (MAMIM: masked input |
                                reconstruction | original) when the caller sends them
    out/metrics.csv             one row per finished epoch, the same numbers as history.json,
                                rewritten whole (atomically) after each epoch

`tensorboard --logdir runs` then shows every run under runs/ side by side, each named by its
folder (an ablation's variants and seeds next to each other). A resumed run passes the step it
continues from: TensorBoard drops what a killed run wrote after that step (purge_step), and
metrics.csv is remade from the restored history, so neither counts an epoch twice.

Only rank 0 writes (`enabled`). Without the tensorboard package the run still trains and
writes metrics.csv, and says once that its events are missing.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import torch

from ssmamba_lite.engine import checkpoint as ckpt

METRICS_CSV = "metrics.csv"


def flat_numbers(prefix: str, values: dict) -> dict[str, float]:
    """{prefix/key: value} for the finite-or-NaN scalar numbers of `values` (lists, strings
    and nested records such as a confusion matrix or class names are left out)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[f"{prefix}/{key}"] = float(value)
    return out


def history_rows(history: list[dict]) -> list[dict[str, float]]:
    """One flat row per epoch of a fit history: epoch, step, loss, lr, images_per_s, val_*."""
    rows = []
    for record in history:
        row = {k: v for k, v in record.items() if k != "val"}
        for key, value in flat_numbers("val", record.get("val") or {}).items():
            row[key.replace("/", "_")] = value
        rows.append(row)
    return rows


def write_metrics_csv(history: list[dict], path) -> None:
    """history as a CSV table (columns: every key any epoch has, in first-seen order)."""
    rows = history_rows(history)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    ckpt.atomic_write(path, lambda tmp: Path(tmp).write_text(text.getvalue()))


class RunLog:
    """TensorBoard events and metrics.csv of one run folder (see the module's docstring)."""

    def __init__(self, out, enabled: bool = True, start_step: int = 0):
        self.out = Path(out)
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter  # ~3 s on a cold import
        except ImportError:
            print("tensorboard is not installed: this run writes metrics.csv but no events "
                  "(pip install tensorboard)")
            return
        # a resumed run drops what its killed predecessor logged after the restored step
        self.writer = SummaryWriter(str(self.out), flush_secs=30,
                                    purge_step=start_step + 1 if start_step else None)

    def step(self, step: int, loss: float, lr: float) -> None:
        """One optimizer step (step counts from 1)."""
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)

    def epoch(self, record: dict, history: list[dict]) -> None:
        """The epoch that just ended (`record`, also history's last entry)."""
        if not self.enabled:
            return
        if self.writer is not None:
            step = record.get("step", record["epoch"])     # slide-level MIL: one per epoch
            scalars = flat_numbers("epoch", {k: v for k, v in record.items()
                                             if k not in ("epoch", "step", "val")})
            scalars.update(flat_numbers("val", record.get("val") or {}))
            for tag, value in scalars.items():
                if math.isfinite(value) and not tag.endswith("/n"):
                    self.writer.add_scalar(tag, value, step)
            self.writer.flush()
        write_metrics_csv(history, self.out / METRICS_CSV)

    def images(self, tag: str, grid: torch.Tensor, step: int) -> None:
        """One (3, H, W) image in [0, 1]."""
        if self.writer is not None:
            self.writer.add_image(tag, grid.clamp(0, 1), step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# ---------------------------------------------------------------------------------------------
# Reading a run back (notebooks draw these; tests check them).
# ---------------------------------------------------------------------------------------------
def _events(path):
    """The events of one file as they were written (the loader TensorBoard's UI uses turns
    scalars into tensors; this one leaves them as simple values)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
    return LegacyEventFileLoader(str(path)).Load()


def _written_order(folder) -> list[list]:
    """The events of each of a folder's event files, the files in the order they were written
    (by their first event's time). Not by name: a name holds the second it was opened and then
    a per-process counter that is not zero-padded, so two writers opened within one second by
    one process sort by "10" < "9"."""
    files = [list(_events(path)) for path in sorted(Path(folder).glob("events.out.tfevents.*"))]
    return sorted(files, key=lambda events: events[0].wall_time if events else float("inf"))


def _values(folder, field: str) -> dict[str, list[tuple[int, object]]]:
    """{tag: [(step, value), ...]} of every summary value of one kind ("simple_value" or
    "image"), with TensorBoard's purge: a resumed writer's SessionLog START at step s hides
    what earlier files logged at steps >= s."""
    from tensorboard.compat.proto.event_pb2 import SessionLog

    out: dict[str, list[tuple[int, object]]] = {}
    for events in _written_order(folder):
        for event in events:
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                for tag in out:
                    out[tag] = [(step, v) for step, v in out[tag] if step < event.step]
            if not event.HasField("summary"):
                continue
            for value in event.summary.value:
                if value.HasField(field):
                    out.setdefault(value.tag, []).append((event.step, getattr(value, field)))
    return {tag: pairs for tag, pairs in out.items() if pairs}


def read_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of a run folder's TensorBoard scalars."""
    return _values(folder, "simple_value")


def read_images(folder) -> dict[str, list[tuple[int, bytes]]]:
    """{tag: [(step, PNG bytes), ...]} of a run folder's TensorBoard images."""
    return {tag: [(step, image.encoded_image_string) for step, image in pairs]
            for tag, pairs in _values(folder, "image").items()}


def read_metrics_csv(path) -> list[dict[str, float]]:
    """metrics.csv (or a run folder's) back as rows of numbers (an empty cell: NaN)."""
    path = Path(path) / METRICS_CSV if Path(path).is_dir() else path
    with open(path, newline="") as f:
        return [{k: float(v) if v != "" else float("nan") for k, v in row.items()}
                for row in csv.DictReader(f)]
