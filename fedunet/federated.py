"""The federated engine: builds clients, runs rounds, moves real payloads, writes metrics.

Everything a round needs stays on the training device between rounds (datasets,
models, optimizers, generators); the only host round trip is the payload itself, which
is serialized, checked by the server, aggregated and sent back, so the byte counts are
the lengths of what would cross the network.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from fedunet import checkpoint, methods, metrics, serialization
from fedunet.client import Client, learning_rate, make_optimizer
from fedunet.compile import Compiler
from fedunet.determinism import replace_nondeterministic
from fedunet.data import Augmentation, ClientLoader, Normalizer, pad_images
from fedunet.io import atomic_write_json, atomic_write_text
from fedunet.methods.base import Method, Upload
from fedunet.model import ClientModel, count_parameters, state_nbytes
from fedunet.serialization import PayloadError
from fedunet.metrics import divergence
from fedunet.setup import (
    RunError,
    derive_seed,
    load_run_dataset,
    model_specs,
    normalization_stats,
    partition_for,
    resolve_runtime,
    validation_split,
)

log = logging.getLogger("fedunet")

# Config sections a resumption may change freely.  The runtime is compared separately, on its
# resolved values (``auto`` decided on the machine): the settings that change a run's numbers
# (Runtime.result_settings: device type, bf16, channels_last, compile, deterministic, CPU threads)
# are refused unless allowed (``--allow-runtime-change``); the rest (progress, checkpoints) is free.
RESUMABLE_KEYS = ("name", "runtime")

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
        # each client's reference loss for divergence: its first finite round loss, raised to its second
        # one unless that already diverged (FedProto and others add their regularizer only from round 2)
        self.first_loss: dict[int, float] = {}
        self.losses_seen: dict[int, int] = {}
        self.round = 0
        self.elapsed = 0.0

    # ------------------------------------------------------------ setup

    def build(self) -> None:
        cfg, dev = self.cfg, self.rt.device
        cpu_data = load_run_dataset(cfg)
        self.partition = partition_for(cfg, cpu_data)
        self.class_counts = self.partition.class_counts(cpu_data.train_labels).tolist()
        train_idx, val_idx = validation_split(self.partition.train, cfg["eval"]["validation_fraction"], cfg["seed"])
        mean, std = normalization_stats(cfg, cpu_data, train_idx)
        self.data = cpu_data.to(dev)
        self.normalizer = Normalizer(mean, std, dev, self.rt.channels_last)
        aug = Augmentation(cfg["training"]["crop_padding"], cfg["training"]["flip"])
        padded = pad_images(self.data.train_images, aug.crop_padding) if aug.crop_padding > 0 else None
        # one compiled region per distinct architecture, shared by its clients (fedunet/compile.py)
        self.compiler = Compiler(self.rt.compile_backend) if self.rt.compile else None
        cuda_deterministic = self.rt.device.type == "cuda" and self.rt.deterministic
        self.clients: list[Client] = []
        for i, spec in enumerate(model_specs(cfg, self.data)):
            torch.manual_seed(derive_seed(cfg["seed"], "model", i))
            model = ClientModel(spec).to(dev)
            if self.rt.channels_last:
                model = model.to(memory_format=torch.channels_last)
            if cuda_deterministic:  # parameter-free swaps: the state_dict is unchanged
                replace_nondeterministic(model)
            gen = torch.Generator(device=dev)
            gen.manual_seed(derive_seed(cfg["seed"], "data", i))
            loader = ClientLoader(
                self.data.train_images,
                self.data.train_labels,
                train_idx[i],
                cfg["training"]["batch_size"],
                gen,
                self.normalizer,
                aug,
                padded,
                shuffle=cfg["training"]["shuffle"],
                drop_last=cfg["training"]["drop_last"],
            )
            client = Client(
                index=i,
                architecture=spec.architecture,
                model=model,
                optimizer=make_optimizer(model.parameters(), cfg),
                loader=loader,
                test_indices=self.partition.test[i].to(dev),
                val_indices=val_idx[i].to(dev),
                generator=gen,
                bf16=self.rt.bf16,
                compiler=self.compiler,
                cuda_deterministic=cuda_deterministic,
            )
            self.clients.append(client)
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

    def _sync(self) -> None:
        if self.rt.device.type == "cuda":
            torch.cuda.synchronize(self.rt.device)

    def _broadcast(self, message: dict) -> int:
        """Serialize the server's message once, check and apply it at every client; returns bytes sent."""
        blob = self.server_encoder.encode(message, float_dtype=self.cfg["federated"]["payload_dtype"])
        spec = serialization.PayloadSpec.for_tensors(message, self.cfg["federated"]["payload_dtype"])
        tensors, _ = serialization.decode(blob, spec)
        for client in self.clients:
            self.method.download(client, tensors)
        return len(blob) * len(self.clients)

    def run_round(self, r: int) -> dict:
        cfg = self.cfg
        t_start = time.perf_counter()
        lr = learning_rate(cfg, r)
        participants = self.method.configure_round(r, self.clients, self.server_generator)
        per_client = {
            c.index: {
                "round": r,
                "client": c.index,
                "architecture": c.architecture,
                "n_train": c.num_train,
                "n_test": c.num_test,
                "participated": False,
                "bytes_up": 0,
                "bytes_down": 0,
                "rejected": "",
                "diverged": False,
            }
            for c in self.clients
        }
        uploads: list[tuple[Client, bytes | bytearray]] = []
        loss_sum, loss_n, diverged = 0.0, 0, 0
        factor = cfg["federated"]["divergence_factor"]
        for c in participants:
            for group in c.optimizer.param_groups:
                group["lr"] = lr
            t_client = time.perf_counter()
            stats = c.train(cfg["federated"]["local_epochs"], self.method.loss)
            self._sync()
            rec = per_client[c.index]
            rec.update(
                participated=True, train_loss=stats.loss, train_samples=stats.samples, time_train_s=time.perf_counter() - t_client
            )
            if stats.finite:
                loss_sum += stats.loss * stats.samples
                loss_n += stats.samples
                seen = self.losses_seen.get(c.index, 0)
                if seen == 0 or (seen == 1 and not divergence(stats.loss, self.first_loss[c.index], factor)):
                    self.first_loss[c.index] = max(self.first_loss.get(c.index, stats.loss), stats.loss)
                if seen < 2:
                    self.losses_seen[c.index] = seen + 1
            why = divergence(stats.loss, self.first_loss.get(c.index), factor)
            if why:
                diverged += 1
                rec["diverged"] = True
                self._event(r, c, "diverged", why)
            payload = self.method.upload(c)
            if payload is not None:
                blob = self.encoders[c.index].encode(payload, float_dtype=cfg["federated"]["payload_dtype"])
                if self.tamper is not None:
                    blob = self.tamper(r, c, blob)
                rec["bytes_up"] = len(blob)
                uploads.append((c, blob))
        self._sync()
        t_train = time.perf_counter()

        accepted: list[Upload] = []
        for c, blob in uploads:
            try:
                tensors, _ = serialization.decode(blob, self.method.upload_spec(c))
                self.method.check_upload(c, tensors)
                accepted.append(Upload(c, tensors, float(c.num_train)))
            except PayloadError as e:
                per_client[c.index]["rejected"] = str(e)
                self._event(r, c, "payload_rejected", str(e))
        bytes_down = 0
        if accepted:
            message = self.method.aggregate(accepted)
            if message is not None:
                bytes_down = self._broadcast(message)
                for rec in per_client.values():
                    rec["bytes_down"] = bytes_down // len(self.clients)
        self._sync()
        t_agg = time.perf_counter()

        row = {
            "round": r,
            "participants": len(participants),
            "diverged": diverged,
            "rejected": len(uploads) - len(accepted),
            "lr": lr,
            "train_loss": loss_sum / loss_n if loss_n else float("nan"),
        }
        evaluate_now = r % cfg["eval"]["every"] == 0 or r == cfg["federated"]["rounds"]
        if evaluate_now:
            results = [self._evaluate(c, per_client[c.index]) for c in self.clients]
            row.update(metrics.summarize_round(results))
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
        self.client_rows.extend(per_client.values())
        return row

    def _evaluate(self, c: Client, rec: dict) -> dict:
        bs = self.cfg["eval"]["batch_size"]
        images, labels = self.data.train_images, self.data.train_labels

        def on(indices):
            return metrics.evaluate(c, images, labels, indices, bs, self.normalizer, self.method.predict)

        fusion = c.model.fusion if self.cfg["eval"]["diagnostics"] else None
        if fusion is not None:
            fusion.norms = []
        correct, total, loss = on(c.test_indices)
        rec.update(pers_acc=correct / max(total, 1))
        result = {
            "architecture": c.architecture,
            "n_test": total,
            "pers_correct": correct,
            "pers_acc": correct / max(total, 1),
            "pers_loss_sum": loss,
        }
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
        if self.cfg["eval"]["global"]:
            g_correct, g_total, g_loss = metrics.evaluate(
                c, self.data.test_images, self.data.test_labels, None, bs, self.normalizer, self.method.predict
            )
            result.update(global_acc=g_correct / g_total, global_loss=g_loss / g_total)
            rec.update(global_acc=g_correct / g_total)
        return result

    def _compile_fallback(self, r: int) -> None:
        """Dynamo gave up compiling (recompile limit) and runs that code eagerly from now on: an event,
        so that a run's throughput is never silently the eager one."""
        detail = (
            "torch.compile hit its recompile limit and fell back to eager for part of the model "
            f"({self.compiler.stats()}); rerun with TORCH_LOGS=recompiles to see why"
        )
        self.events.append({"round": r, "client": None, "architecture": None, "event": "compile_fallback", "detail": detail})
        log.warning("round %d: %s", r, detail)

    def _event(self, r: int, c: Client, kind: str, detail: str) -> None:
        event = {"round": r, "client": c.index, "architecture": c.architecture, "event": kind, "detail": detail}
        self.events.append(event)
        log.warning("round %d client %d (%s): %s: %s", r, c.index, c.architecture, kind, detail)

    # ------------------------------------------------------------ checkpoint

    def state(self) -> dict:
        return {
            "round": self.round,
            "config": json.dumps(self.cfg, sort_keys=True),
            "clients": [
                {
                    "model": c.model.state_dict(),
                    "optimizer": c.optimizer.state_dict(),
                    "generator": c.generator.get_state(),
                    "state": c.state,
                    "aux": {name: m.state_dict() for name, m in c.aux.items()},
                }
                for c in self.clients
            ],
            "method": self.method.state_dict(),
            "server_generator": self.server_generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.rt.device.type == "cuda" else [],
            "rows": json.dumps(self.rows),
            "client_rows": json.dumps(self.client_rows),
            "events": json.dumps(self.events),
            "first_loss": json.dumps(self.first_loss),
            "losses_seen": json.dumps(self.losses_seen),
            "elapsed": self.elapsed,
            "initial_sync_bytes": self.initial_sync_bytes,
            "runtime_segments": json.dumps(getattr(self, "segments", [])),
        }

    def config_changes(self, saved: dict) -> list[str]:
        """Fields (dotted) in which ``saved`` differs from this run's config, ignoring runtime settings."""
        return sorted(_diff_keys(_resume_view(saved), _resume_view(self.cfg)))

    def restore(self, state: dict) -> None:
        for c, s in zip(self.clients, state["clients"]):
            c.model.load_state_dict(s["model"])
            c.optimizer.load_state_dict(s["optimizer"])
            c.generator.set_state(s["generator"])
            c.state = {k: v.to(c.device) if isinstance(v, torch.Tensor) else v for k, v in s["state"].items()}
            for name, m in c.aux.items():
                m.load_state_dict(s["aux"][name])
        self.method.load_state_dict(state["method"])
        self.server_generator.set_state(state["server_generator"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.rows = json.loads(state["rows"])
        self.client_rows = json.loads(state["client_rows"])
        self.events = json.loads(state["events"])
        self.first_loss = {int(k): v for k, v in json.loads(state.get("first_loss", "{}")).items()}
        self.losses_seen = {int(k): v for k, v in json.loads(state.get("losses_seen", "{}")).items()}
        self.elapsed = state["elapsed"]
        self.initial_sync_bytes = state["initial_sync_bytes"]
        self.round = state["round"]
        # checkpoints written before runtimes were recorded: one segment of unknown runtime
        unknown = {"started": None, "rounds": [1, self.round], "recorded": False}
        self.segments = json.loads(state["runtime_segments"]) if "runtime_segments" in state else [unknown]

    def runtime_changes(self) -> list[str]:
        """Result-changing runtime settings (``Runtime.result_settings``) in which this process differs
        from the last recorded segment of the run, as ``name: before -> now``."""
        last = next((seg for seg in reversed(getattr(self, "segments", [])) if seg.get("recorded", True)), None)
        if last is None:
            return []
        now = self.rt.result_settings()
        return [f"{k}: {last.get(k)!r} -> {v!r}" for k, v in now.items() if last.get(k) != v]

    # ------------------------------------------------------------ outputs

    def write_round_files(self) -> None:
        metrics.write_csv(self.out / "metrics.csv", self.rows)
        metrics.write_csv(self.out / "clients.csv", self.client_rows)
        if self.events:
            atomic_write_text(self.out / "events.jsonl", "".join(json.dumps(e) + "\n" for e in self.events))

    def summary(self, started: str) -> dict:
        cfg = self.cfg
        final = self.rows[-1]
        # the best round is chosen on the clients' validation splits; both test protocols are
        # then read at that round (never chosen on themselves)
        chosen = metrics.best_round(self.rows, "val_acc")
        best = {}
        if chosen is not None:
            best = {"selected_by": "val_acc", "round": chosen["round"]}
            best.update({k: chosen[k] for k in ("val_acc", "pers_acc", "global_acc") if k in chosen})
        diverged_events = [e for e in self.events if e["event"] == "diverged"]
        upload = self.method.upload(self.clients[0]) or {}
        return {
            "name": cfg["name"],
            "status": "complete",
            "method": cfg["method"],
            "seed": cfg["seed"],
            "dataset": cfg["dataset"]["name"],
            "architectures": [c.architecture for c in self.clients],
            # what each client trains: the U-Net beside the backbone, and extra models of the method
            "model": {"unet": self.clients[0].model.unet is not None, "aux_models": sorted(self.clients[0].aux)},
            "rounds": cfg["federated"]["rounds"],
            "final": {k: v for k, v in final.items() if k not in metrics.TIMING_COLUMNS},
            "best": best,
            "diverged": {
                "any": bool(diverged_events),
                "client_rounds": len(diverged_events),
                "first_round": min((e["round"] for e in diverged_events), default=None),
            },
            "communication": {
                "payload_bytes_up_per_client": len(serialization.encode(upload, float_dtype=cfg["federated"]["payload_dtype"]))
                if upload
                else 0,
                "shared_tensor_bytes": sum(t.numel() * t.element_size() for t in upload.values()),
                "shared_tensors": len(upload),
                "initial_sync_bytes": self.initial_sync_bytes,
                "total_bytes_up": sum(r["bytes_up"] for r in self.rows),
                "total_bytes_down": sum(r["bytes_down"] for r in self.rows),
                # what a reader compares: every byte of the run (incl. the initial sync) per round
                "mb_per_round": (sum(r["bytes_up"] + r["bytes_down"] for r in self.rows) + self.initial_sync_bytes)
                / len(self.rows)
                / 1e6,
                "payload_dtype": cfg["federated"]["payload_dtype"],
            },
            "clients": [
                {
                    "index": c.index,
                    "architecture": c.architecture,
                    "n_train": c.num_train,
                    "n_test": c.num_test,
                    "parameters": count_parameters(c.model),
                    "state_bytes": state_nbytes(c.model),
                    "backbone_parameters": count_parameters(c.model.backbone),
                }
                for c in self.clients
            ],
            "partition": {
                "sha256": self.partition.content_hash(),
                "settings": self.partition.settings,
                "class_counts": self.class_counts,
            },
            "events": self.events,
            "timing": {
                "wall_s": self.elapsed,
                "mean_round_s": sum(r["time_round_s"] for r in self.rows) / len(self.rows),
                "mean_train_s": sum(r["time_train_s"] for r in self.rows) / len(self.rows),
                "mean_eval_s": sum(r["time_eval_s"] for r in self.rows) / len(self.rows),
                "train_samples_per_s": sum(c.num_train for c in self.clients)
                * cfg["federated"]["local_epochs"]
                * cfg["federated"]["participation"]
                / (sum(r["time_train_s"] for r in self.rows) / len(self.rows)),
            },
            "config": cfg,
            "provenance": {
                "git": metrics.git_state(),
                "packages": metrics.package_versions(),
                "device": metrics.device_description(self.rt.device),
                "runtime": {"bf16": self.rt.bf16, "channels_last": self.rt.channels_last, "compile": self.rt.compile},
                # every process that trained part of the run (a resumed run has several), with its runtime
                "runtime_segments": getattr(self, "segments", []),
                **({"compile": self.compiler.stats()} if getattr(self, "compiler", None) is not None else {}),
                "started": started,
                "finished": metrics.utc_now(),
                "command": " ".join(sys.argv),
                "host": socket.gethostname(),
                "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            },
        }

    # ------------------------------------------------------------ main loop

    def _stale(self, saved_config: dict, what: str, restart_stale: bool) -> bool:
        """True when ``saved_config`` differs and may be discarded; raises when it may not."""
        changes = self.config_changes(saved_config)
        if not changes:
            return False
        if not restart_stale:
            raise RunError(
                f"the {what} in {self.out} was made with a different config ({', '.join(changes)}); "
                f"use a new output directory (or --restart-stale to discard it)"
            )
        log.warning("discarding the %s in %s: config changed (%s)", what, self.out, ", ".join(changes))
        return True

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
        started = metrics.utc_now()
        self.out.mkdir(parents=True, exist_ok=True)
        with run_lock(self.out):
            return self._run(started, resume, stop_after, restart_stale, allow_runtime_change)

    def _run(
        self, started: str, resume: bool, stop_after: int | None, restart_stale: bool, allow_runtime_change: bool = False
    ) -> dict | None:
        for torn in self.out.glob(".*.tmp"):  # temporary files of a process killed mid-write
            torn.unlink()
        summary_path = self.out / "summary.json"
        if checkpoint.exists(self.out) and not resume:
            raise RunError(
                f"{self.out} already holds a run (checkpoint.json); pass --resume to continue it or use a new directory"
            )
        if summary_path.exists() and not checkpoint.exists(self.out) and not resume:
            raise RunError(f"{self.out} already holds a finished run (summary.json); use a new directory")
        if resume and summary_path.exists():
            done = json.loads(summary_path.read_text())
            if not self._stale(done["config"], "finished run", restart_stale):
                log.info("%s is already complete; nothing to do", self.out)
                return done
            summary_path.unlink()
        self.build()
        self.segments: list[dict] = []
        if resume:
            state = checkpoint.load_latest(self.out)
            if state is not None and self._stale(json.loads(state["config"]), "checkpoint", restart_stale):
                checkpoint.remove(self.out)
                state = None
            if state is not None:
                self.restore(state)
                changes = self.runtime_changes()
                if changes and not allow_runtime_change:
                    raise RunError(
                        f"the checkpoint in {self.out} was trained with another runtime ({', '.join(changes)}); "
                        "resuming would not give the numbers of an uninterrupted run: resume with the same runtime "
                        "settings, or pass --allow-runtime-change to continue anyway (summary.json then lists each segment)"
                    )
                if changes:
                    log.warning("resuming %s with another runtime (%s), as allowed", self.out, ", ".join(changes))
                log.info("resumed %s at round %d", self.out, self.round)
        # this process's stretch of rounds and the runtime it trains them with (summary: runtime_segments)
        device_name = metrics.device_description(self.rt.device)["name"]
        segment = {
            "started": started,
            "rounds": [self.round + 1, self.round],
            **self.rt.result_settings(),
            "device_name": device_name,
        }
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
                checkpoint.save(self.out, r, self.state())
            progress.update(row)
            if stop_after is not None and r >= stop_after and r < rounds:
                return None
        summary = self.summary(started)
        atomic_write_json(summary_path, summary)
        if not self.cfg["runtime"]["keep_checkpoints"]:
            checkpoint.remove(self.out)  # finished: the summary and metrics are the result
        return summary


@contextlib.contextmanager
def run_lock(directory: Path):
    """Hold an exclusive lock on ``directory`` so that two processes never train into it at once.

    The lock is released by the kernel when the process dies, so a killed run never
    leaves a stale lock behind.
    """
    import fcntl

    with open(directory / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise RunError(f"another process (pid {f.read().strip() or '?'}) is training in {directory}") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _resume_view(cfg: dict) -> dict:
    view = copy.deepcopy(cfg)
    for key in RESUMABLE_KEYS:
        view.pop(key, None)
    return view


def _diff_keys(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


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
