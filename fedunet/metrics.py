"""Evaluation protocols, per-round metric files, the divergence rule, progress line.

Two protocols, both reported every evaluated round:

* **personalized**: each client model on its own held-out split; accuracy is
  sample-weighted over clients (as HtFLlib), plus the std of per-client accuracies;
* **global**: each client model on the full balanced test set, averaged over clients
  (as NIID-Bench), plus the mean per architecture.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from fedunet.client import Client
from fedunet.data import Normalizer, eval_batches
from fedunet.io import atomic_write_text

TIMING_COLUMNS = ("time_train_s", "time_aggregate_s", "time_eval_s", "time_round_s", "elapsed_s")


@torch.inference_mode()
def evaluate(
    client: Client, images, labels, indices, batch_size: int, normalizer: Normalizer, predict=None
) -> tuple[int, int, float]:
    """(correct, total, summed loss) of ``client``'s model over the given samples.

    ``predict(client, x)`` gives class scores (default: the model's logits).
    """
    predict = predict or (lambda c, x: c.logits(x))
    client.model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=images.device)
    loss = torch.zeros((), dtype=torch.float64, device=images.device)
    total = 0
    for x, y in eval_batches(images, labels, indices, batch_size, normalizer):
        with client.autocast():
            logits = predict(client, x)
        correct += (logits.argmax(1) == y).sum()
        loss += F.cross_entropy(logits.float(), y, reduction="sum").double()
        total += len(y)
    return int(correct), total, float(loss)


def scheduled(r: int, every: int, rounds: int) -> bool:
    """Whether round ``r`` of ``rounds`` is in an every-``every``-th schedule, which always ends with the
    last round (evaluation: ``eval.every``; diagnostics: ``eval.diagnostics_every``)."""
    return r % every == 0 or r == rounds


def summarize_round(per_client: list[dict]) -> dict:
    """Round-level personalized and global metrics from per-client results."""
    row: dict = {}
    n = sum(c["n_test"] for c in per_client)
    pers = [c["pers_acc"] for c in per_client]
    row["pers_acc"] = sum(c["pers_correct"] for c in per_client) / max(n, 1)
    row["pers_acc_std"] = _std(pers)
    row["pers_loss"] = sum(c["pers_loss_sum"] for c in per_client) / max(n, 1)
    if "n_val" in per_client[0]:
        row["val_acc"] = sum(c["val_correct"] for c in per_client) / max(sum(c["n_val"] for c in per_client), 1)
    if "norm_unet_sum" in per_client[0]:
        for path in ("backbone", "unet"):
            row[f"pers_acc_{path}_only"] = sum(c[f"pers_correct_{path}_only"] for c in per_client) / max(n, 1)
        for path in ("backbone", "unet"):
            row[f"norm_{path}"] = sum(c[f"norm_{path}_sum"] for c in per_client) / max(n, 1)
        if "pers_correct_no_bottleneck" in per_client[0]:
            row["pers_acc_no_bottleneck"] = sum(c["pers_correct_no_bottleneck"] for c in per_client) / max(n, 1)
    if "global_acc" in per_client[0]:
        glob = [c["global_acc"] for c in per_client]
        row["global_acc"] = sum(glob) / len(glob)
        row["global_acc_std"] = _std(glob)
        row["global_loss"] = sum(c["global_loss"] for c in per_client) / len(per_client)
        for arch in sorted({c["architecture"] for c in per_client}):
            accs = [c["global_acc"] for c in per_client if c["architecture"] == arch]
            row[f"global_acc_{arch}"] = sum(accs) / len(accs)
    return row


def _std(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rewrite the whole CSV atomically (a few hundred rows at most): never a torn file."""
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _fmt(v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def _fmt(v):
    if isinstance(v, float):
        return repr(v)  # round-trips exactly, so resumed runs compare bit for bit
    return v


def best_round(rows: list[dict], key: str = "val_acc") -> dict | None:
    """The row with the highest ``key`` (the earliest on ties); choose on validation, never on a test split."""
    scored = [r for r in rows if isinstance(r.get(key), float) and not math.isnan(r[key])]
    return max(scored, key=lambda r: (r[key], -r["round"])) if scored else None


def divergence(loss: float, first_loss: float | None, factor: float, floor: float = 0.0) -> str:
    """Why a client's local training counts as diverged ('' when it does not): a loss that is
    not finite, or one above ``factor`` times its reference loss (:class:`LossReference`), the
    reference never taken below ``floor``, the chance-level loss ln C: a client that fits its
    two classes to a loss of 0.08 in round 1 has not exploded at 1.5 once a prototype term joins
    in round 2 (FedTGP with lambda 10 was flagged so), while 10x chance is an explosion on any data."""
    if not math.isfinite(loss):
        return f"local training loss is {loss}"
    if first_loss is None:
        return ""
    reference = max(first_loss, floor)
    if reference > 0 and loss > factor * reference:
        base = f"its first rounds' value {first_loss:.4g}"
        if floor > first_loss:
            base = f"the chance-level loss {floor:.4g} (above {base})"
        return f"local training loss {loss:.4g} exceeds {factor:g}x {base}"
    return ""


@dataclass
class LossReference:
    """The reference loss of one series of training losses (a client's, round after round; or a
    run's round means) against which :func:`divergence` judges the next one.

    The reference is the series' first finite loss, raised to its second finite one unless that
    one already diverged: FedProto and others add their regularizer only from round 2, so the
    loss of round 2 may rightly be higher than round 1's, while an exploding round 2 never
    becomes the reference.  ``value`` is ``None`` until a finite loss was added; ``floor`` (ln C
    for C classes; 0: none) is the least reference :func:`divergence` judges against.
    """

    factor: float
    value: float | None = None
    seen: int = 0  # finite losses added, counted up to 2 (later ones no longer move the reference)
    floor: float = 0.0

    def add(self, loss: float) -> None:
        """Account for the next finite loss of the series."""
        if self.seen == 0 or (self.seen == 1 and not self.check(loss)):
            self.value = loss if self.value is None else max(self.value, loss)
        self.seen = min(self.seen + 1, 2)

    def check(self, loss: float) -> str:
        """Why ``loss`` counts as diverged against this reference ('' when it does not)."""
        return divergence(loss, self.value, self.factor, self.floor)

    def observe(self, loss: float) -> str:
        """Take the series' next loss as the engine does, each round: a finite one is added, then
        every one is checked.  Returns why it counts as diverged ('' when it does not)."""
        if math.isfinite(loss):
            self.add(loss)
        return self.check(loss)

    @classmethod
    def first_divergence(cls, losses, factor: float, floor: float = 0.0) -> tuple[int, str] | None:
        """``(index, why)`` of the first loss of a series the engine flags (:meth:`observe`, in
        order); ``None`` when it flags none."""
        ref = cls(factor, floor=floor)
        for i, loss in enumerate(losses):
            why = ref.observe(loss)
            if why:
                return i, why
        return None

    @classmethod
    def of(cls, losses, factor: float, floor: float = 0.0) -> LossReference:
        """The reference of a whole series (non-finite losses are skipped)."""
        ref = cls(factor, floor=floor)
        for loss in losses:
            if math.isfinite(loss):
                ref.add(loss)
        return ref


# ---------------------------------------------------------------- progress


class Progress:
    """One line per round: round, accuracies, MB sent, time per round and ETA.

    On a terminal the line is redrawn in place; in logs (SLURM, Snakemake) it is printed
    once per round so the log doubles as a record.
    """

    def __init__(self, total_rounds: int, enabled: bool = True, stream=None):
        self.total = total_rounds
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started = time.perf_counter()
        self.first_round: int | None = None

    def update(self, row: dict) -> None:
        if not self.enabled:
            return
        r = row["round"]
        if self.first_round is None:
            self.first_round = r
        done = r - self.first_round + 1
        per_round = (time.perf_counter() - self.started) / done
        eta = per_round * (self.total - r)
        parts = [f"round {r}/{self.total}"]
        if "pers_acc" in row:
            parts.append(f"pers {100 * row['pers_acc']:.2f}%")
        if "global_acc" in row:
            parts.append(f"global {100 * row['global_acc']:.2f}%")
        for key, name in (("pers_miou", "pers mIoU"), ("global_miou", "global mIoU")):
            if key in row:
                parts.append(f"{name} {100 * row[key]:.2f}%")
        parts.append(f"loss {row['train_loss']:.3f}")
        parts.append(f"{row['mb_up_per_client']:.3g} MB up/client")
        parts.append(f"{per_round:.1f} s/round")
        parts.append(f"ETA {_duration(eta)}")
        bar = _bar(r / self.total)
        line = f"{bar} " + " | ".join(parts)
        if self.tty:
            self.stream.write("\r" + line + ("\n" if r == self.total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _bar(fraction: float, width: int = 20) -> str:
    filled = int(round(fraction * width))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
