"""The federated engine: builds clients, runs rounds, moves real payloads, writes metrics.

Everything a round needs stays on the training device between rounds (datasets,
models, optimizers, generators); the only host round trip is the payload itself, which
is serialized, checked by the server, aggregated and sent back, so the byte counts are
the lengths of what would cross the network.  A round (:meth:`Simulation.run_round`) is
three steps: train (each participant trains and encodes its upload), receive (the server
decodes and checks every payload, aggregates, broadcasts) and evaluate; the method's hooks
are described in ``fedunet/methods/base.py``.  The run directory's lifecycle (lock, existing
outputs, resuming) is ``fedunet/rundir.py``; ``summary.json`` is ``fedunet/summary.py``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from fedunet import checkpoint, methods, metrics, population, provenance, rundir, serialization, summary
from fedunet.client import Client, learning_rate
from fedunet.compile import Compiler
from fedunet.io import atomic_write_json, atomic_write_text
from fedunet.methods.base import SERVER_PREFIX, Method, Upload
from fedunet.metrics import LossReference
from fedunet.runtime import RunError, derive_seed, resolve_runtime  # noqa: F401  (RunError: importable from here too)
from fedunet.segmentation import evaluation as segmentation_evaluation
from fedunet.segmentation import run as segmentation_run
from fedunet.serialization import PayloadError

log = logging.getLogger("fedunet")

Tamper = Callable[[int, Client, bytearray], bytes | bytearray]


class Simulation:
    """One federated training run, from config to ``metrics.csv`` and ``summary.json``."""

    def __init__(self, cfg: dict, out_dir: str | Path, tamper: Tamper | None = None):
        self.cfg = cfg
        self.out = Path(out_dir)
        self.tamper = tamper  # test hook: alter a client's serialized payload before the server sees it
        self.rt = resolve_runtime(cfg)
        self.method: Method = methods.create(cfg)
        self.rows: list[dict] = []
        self.client_rows: list[dict] = []
        self.events: list[dict] = []
        self.loss_references: dict[int, LossReference] = {}  # each client's reference for divergence
        # the last payload a client encoded: its bytes, its tensors' bytes and count (summary.json)
        self.last_upload = {"bytes": 0, "tensor_bytes": 0, "tensors": 0}
        self.segments: list[dict] = []  # the processes that trained this run, with their runtimes
        self.compiler: Compiler | None = None
        self.round = 0
        self.elapsed = 0.0

    # ------------------------------------------------------------ setup

    @property
    def chance_loss(self) -> float:
        """ln C, the loss of a uniform guess over C classes: the least loss divergence is judged against."""
        return math.log(self.data.num_classes)

    def build(self) -> None:
        """The clients and their data (``fedunet/population.py``), the method's setup and its first message."""
        cfg, built = self.cfg, population.build(self.cfg, self.rt)
        self.data, self.normalizer, self.partition = built.data, built.normalizer, built.partition
        self.class_counts, self.clients, self.compiler = built.class_counts, built.clients, built.compiler
        self.task = built.task
        # one reusable payload buffer per sender: shapes repeat every round
        self.encoders = [serialization.Encoder() for _ in self.clients]
        self.server_encoder = serialization.Encoder()
        self.server_generator = torch.Generator().manual_seed(derive_seed(cfg["seed"], "server"))
        torch.manual_seed(derive_seed(cfg["seed"], "global"))
        initial = self.method.setup(self.clients)
        self.initial_sync_bytes = 0
        if initial is not None:
            self.initial_sync_bytes = self._broadcast(initial)

    # ------------------------------------------------------------ one round

    def run_round(self, r: int) -> dict:
        """Train, receive, evaluate; returns the round's row of ``metrics.csv``."""
        t_start = time.perf_counter()
        lr = learning_rate(self.cfg, r)
        participants = self.method.configure_round(r, self.clients, self.server_generator)
        per_client = {c.index: self._client_row(r, c) for c in self.clients}
        uploads, trained = self.train_clients(r, participants, lr, per_client)
        self._sync()
        t_train = time.perf_counter()
        accepted, bytes_down, server = self.receive(r, uploads, per_client)
        self._sync()
        t_agg = time.perf_counter()
        row = {"round": r, "participants": len(participants), "diverged": trained["diverged"]}
        row.update(rejected=len(uploads) - accepted, lr=lr, train_loss=trained["train_loss"])
        row.update(self.evaluate(r, per_client))
        self._sync()
        t_eval = time.perf_counter()
        bytes_up = sum(len(b) for _, b in uploads)
        row.update(
            bytes_up=bytes_up,
            bytes_down=bytes_down,
            mb_up_per_client=bytes_up / max(len(uploads), 1) / 1e6,
            mb_down_per_client=bytes_down / len(self.clients) / 1e6,
            mb_round_total=(bytes_up + bytes_down) / 1e6,
            time_train_s=t_train - t_start,
            time_aggregate_s=t_agg - t_train,
            time_eval_s=t_eval - t_agg,
            time_round_s=t_eval - t_start,
        )
        self.elapsed += t_eval - t_start
        row["elapsed_s"] = self.elapsed
        row.update({SERVER_PREFIX + name: value for name, value in server.items()})
        self.client_rows.extend(per_client.values())
        return row

    def train_clients(self, r: int, participants: list[Client], lr: float, per_client: dict[int, dict]):
        """Local training of round ``r``'s participants, each followed by its upload, encoded.
        Returns the uploads ``[(client, blob)]`` and ``{"diverged": count, "train_loss": mean}``."""
        factor = self.cfg["federated"]["divergence_factor"]
        uploads: list[tuple[Client, bytes | bytearray]] = []
        loss_sum, loss_n, diverged = 0.0, 0, 0
        for c in participants:
            for group in c.optimizer.param_groups:
                group["lr"] = lr
            self.method.begin_round(c, r)
            t_client = time.perf_counter()
            stats = c.train(self.cfg["federated"]["local_epochs"], self.method.loss)
            self._sync()
            rec = per_client[c.index]
            rec.update(participated=True, train_loss=stats.loss, train_samples=stats.samples)
            rec["time_train_s"] = time.perf_counter() - t_client
            if stats.finite:
                loss_sum += stats.loss * stats.samples
                loss_n += stats.samples
            reference = self.loss_references.setdefault(c.index, LossReference(factor, floor=self.chance_loss))
            why = reference.observe(stats.loss)
            if why:
                diverged += 1
                rec["diverged"] = True
                self._event(r, c, "diverged", why)
            payload = self.method.upload(c, r)
            if payload is not None:
                blob = self.encode_upload(c, payload)
                if self.tamper is not None:
                    blob = self.tamper(r, c, blob)
                rec["bytes_up"] = len(blob)
                uploads.append((c, blob))
        return uploads, {"diverged": diverged, "train_loss": loss_sum / loss_n if loss_n else float("nan")}

    def receive(self, r: int, uploads: list[tuple[Client, bytes | bytearray]], per_client: dict[int, dict]):
        """The server's side of round ``r``: decode and check every payload, aggregate the accepted
        ones, broadcast the message.  Returns (accepted uploads, bytes sent down, server numbers)."""
        accepted: list[Upload] = []
        for c, blob in uploads:
            try:
                tensors, _ = serialization.decode(blob, self.method.upload_spec(c))
                self.method.check_upload(c, tensors)
                accepted.append(Upload(c, tensors, float(c.num_train)))
            except PayloadError as e:
                per_client[c.index]["rejected"] = str(e)
                self._event(r, c, "payload_rejected", str(e))
        if not accepted:
            return 0, 0, {}
        message, server = self.method.aggregate(r, accepted)
        bytes_down = 0
        if message is not None:
            bytes_down = self._broadcast(message)
            for rec in per_client.values():
                rec["bytes_down"] = bytes_down // len(self.clients)
        return len(accepted), bytes_down, server

    def evaluate(self, r: int, per_client: dict[int, dict]) -> dict:
        """Both protocols over every client, in the rounds evaluated (``eval.every`` and the last)."""
        ev, rounds = self.cfg["eval"], self.cfg["federated"]["rounds"]
        if not metrics.scheduled(r, ev["every"], rounds):
            return {}
        diagnose = ev["diagnostics"] and metrics.scheduled(r, ev["diagnostics_every"], rounds)
        if self.task == "segmentation":  # per pixel, from device-side confusion matrices
            return segmentation_evaluation.evaluate_round(self.clients, self.data, self.cfg, self.normalizer,
                                                          self.method.predict, per_client, diagnose)  # fmt: skip
        return metrics.summarize_round([self._evaluate(c, per_client[c.index], diagnose) for c in self.clients])

    def _client_row(self, r: int, c: Client) -> dict:
        """The client's row of ``clients.csv`` before the round: filled in by train, receive and evaluate."""
        row = {"round": r, "client": c.index, "architecture": c.architecture, "n_train": c.num_train, "n_test": c.num_test}
        return {**row, "participated": False, "bytes_up": 0, "bytes_down": 0, "rejected": "", "diverged": False}

    def encode_upload(self, c: Client, payload: dict[str, torch.Tensor]):
        """Serialize a client's upload (recording its size for the summary)."""
        blob = self.encoders[c.index].encode(payload, float_dtype=self.cfg["federated"]["payload_dtype"])
        tensor_bytes = sum(t.numel() * t.element_size() for t in payload.values())
        self.last_upload = {"bytes": len(blob), "tensor_bytes": tensor_bytes, "tensors": len(payload)}
        return blob

    def _broadcast(self, message: dict) -> int:
        """Serialize the server's message once, check and apply it at every client; returns bytes sent."""
        blob = self.server_encoder.encode(message, float_dtype=self.cfg["federated"]["payload_dtype"])
        spec = serialization.PayloadSpec.for_tensors(message, self.cfg["federated"]["payload_dtype"])
        tensors, _ = serialization.decode(blob, spec)
        for client in self.clients:
            self.method.download(client, tensors)
        return len(blob) * len(self.clients)

    def _evaluate(self, c: Client, rec: dict, diagnose: bool = True) -> dict:
        bs = self.cfg["eval"]["batch_size"]
        images, labels = self.data.train_images, self.data.train_labels

        def on(indices):
            return metrics.evaluate(c, images, labels, indices, bs, self.normalizer, self.method.predict)

        fusion = c.model.fusion if diagnose else None
        if fusion is not None:
            fusion.norms = []
        correct, total, loss = on(c.test_indices)
        rec.update(pers_acc=correct / max(total, 1))
        result = {"architecture": c.architecture, "n_test": total, "pers_correct": correct}
        result.update(pers_acc=correct / max(total, 1), pers_loss_sum=loss)
        if len(c.val_indices):
            v_correct, v_total, _ = on(c.val_indices)
            result.update(n_val=v_total, val_correct=v_correct)
            rec.update(val_acc=v_correct / v_total)
        if fusion is not None:
            norms = torch.stack(fusion.norms).sum(0).tolist()
            fusion.norms = None
            result.update(norm_backbone_sum=norms[0], norm_unet_sum=norms[1])
            for path, ablate in (("backbone", "unet"), ("unet", "backbone")):
                fusion.ablate = ablate
                try:
                    result[f"pers_correct_{path}_only"] = on(c.test_indices)[0]
                finally:
                    fusion.ablate = None
            c.model.unet.ablate_bottleneck = True  # what the (shared) block adds to the prediction
            try:
                result["pers_correct_no_bottleneck"] = on(c.test_indices)[0]
            finally:
                c.model.unet.ablate_bottleneck = False
        if self.cfg["eval"]["global"]:
            g_correct, g_total, g_loss = metrics.evaluate(
                c, self.data.test_images, self.data.test_labels, None, bs, self.normalizer, self.method.predict
            )
            result.update(global_acc=g_correct / g_total, global_loss=g_loss / g_total)
            rec.update(global_acc=g_correct / g_total)
        return result

    def _sync(self) -> None:
        if self.rt.device.type == "cuda":
            torch.cuda.synchronize(self.rt.device)

    def _event(self, r: int, c: Client | None, kind: str, detail: str) -> None:
        who = {"client": None, "architecture": None} if c is None else {"client": c.index, "architecture": c.architecture}
        self.events.append({"round": r, **who, "event": kind, "detail": detail})
        if c is not None:
            log.warning("round %d client %d (%s): %s: %s", r, c.index, c.architecture, kind, detail)
        else:
            log.warning("round %d: %s", r, detail)

    # ------------------------------------------------------------ main loop

    def write_round_files(self) -> None:
        metrics.write_csv(self.out / "metrics.csv", self.rows)
        metrics.write_csv(self.out / "clients.csv", self.client_rows)
        if self.events:
            atomic_write_text(self.out / "events.jsonl", "".join(json.dumps(e) + "\n" for e in self.events))

    def run(
        self,
        resume: bool = False,
        stop_after: int | None = None,
        restart_stale: bool = False,
        allow_runtime_change: bool = False,
    ) -> dict | None:
        """Run to the last round (or only up to round ``stop_after``, leaving a resumable run).

        ``resume`` continues from the last valid checkpoint (a finished run is returned
        as is); ``restart_stale`` discards outputs made with a different config instead
        of refusing them (what a workflow wants after its config changed).
        """
        started = provenance.utc_now()
        self.out.mkdir(parents=True, exist_ok=True)
        with rundir.run_lock(self.out):
            rundir.remove_torn_files(self.out)
            done = rundir.check_existing(self.out, self.cfg, resume, restart_stale)
            if done is not None:
                return done
            self.build()
            state = rundir.resumable_checkpoint(self.out, self.cfg, restart_stale) if resume else None
            if state is not None:
                rundir.restore(self, state)
                rundir.check_runtime(self.out, self.segments, self.rt, allow_runtime_change)
                log.info("resumed %s at round %d", self.out, self.round)
            segment = rundir.segment(started, self.round, self.rt)  # summary: runtime_segments
            self.segments.append(segment)
            atomic_write_text(self.out / "config.yaml", yaml.safe_dump(self.cfg, sort_keys=False))
            rounds = self.cfg["federated"]["rounds"]
            progress = metrics.Progress(rounds, self.cfg["runtime"]["progress"])
            every = self.cfg["runtime"]["checkpoint_every"]
            for r in range(self.round + 1, rounds + 1):
                row = self.run_round(r)
                self.rows.append(row)
                self.round = r
                segment["rounds"][1] = r
                if self.compiler is not None and self.compiler.new_fallbacks():
                    self._compile_fallback(r)
                self.write_round_files()
                if every and (r % every == 0 or r == rounds):
                    checkpoint.save(self.out, r, rundir.checkpoint_state(self))
                progress.update(row)
                if stop_after is not None and r >= stop_after and r < rounds:
                    return None
            if self.task == "segmentation":  # what the figures show, beside the run's files
                arrays = segmentation_run.examples(self.clients, self.data, self.normalizer, self.method.predict)
                segmentation_run.save_examples(self.out / segmentation_run.EXAMPLES_FILE, arrays)
            result = summary.build(self, started)
            atomic_write_json(self.out / "summary.json", result)
            if not self.cfg["runtime"]["keep_checkpoints"]:
                checkpoint.remove(self.out)  # finished: the summary and metrics are the result
            return result

    def _compile_fallback(self, r: int) -> None:
        """Dynamo gave up compiling (recompile limit) and runs that code eagerly from now on: an event,
        so that a run's throughput is never silently the eager one."""
        detail = (
            "torch.compile hit its recompile limit and fell back to eager for part of the model "
            f"({self.compiler.stats()}); rerun with TORCH_LOGS=recompiles to see why"
        )
        self._event(r, None, "compile_fallback", detail)


def train(
    cfg: dict,
    out_dir: str | Path,
    resume: bool = False,
    tamper: Tamper | None = None,
    stop_after: int | None = None,
    restart_stale: bool = False,
    allow_runtime_change: bool = False,
) -> dict | None:
    """Run (or resume) one federated training run; returns the summary (``None`` if stopped early)."""
    return Simulation(cfg, out_dir, tamper).run(
        resume=resume, stop_after=stop_after, restart_stale=restart_stale, allow_runtime_change=allow_runtime_change
    )
