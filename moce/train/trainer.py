"""`moce train`: MoCE-IR on clean photos with synthetic degradations, resumable, CPU or CUDA.

Checkpoints use the released format (Lightning-style dict, ``net.`` keys, options in an
``argparse.Namespace``), so every other moce command reads them like an official checkpoint.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from moce.data.degrade import TASK_OF, WIDE_RANGES, check_degradations, degrade
from moce.errors import InputError
from moce.files import atomic_path
from moce.imageio import read_images
from moce.model.checkpoint import SAFE_GLOBALS
from moce.model.config import MoCEConfig, config_from_hyperparameters
from moce.model.network import MoCEIR
from moce.outputs import Planned, check_write, mark_folder
from moce.train.objective import objective

SIGNATURE = "moce train"
"""What a run folder's marker carries (:mod:`moce.outputs`): a rerun resumes there, nothing else is replaced."""
LAST, FINAL = "last.ckpt", "final.ckpt"
TRAIN_FORMAT_VERSION = "2.2.1"  # the Lightning version the released checkpoints were written with


@dataclass
class TrainOptions:
    data: Path
    out: Path
    dim: int = 16
    num_blocks: tuple[int, ...] = (1, 1, 1, 2)
    num_dec_blocks: tuple[int, ...] = (1, 1, 1)
    heads: tuple[int, ...] = (1, 1, 2, 2)
    num_refinement_blocks: int = 1
    degradations: tuple[str, ...] = WIDE_RANGES
    iterations: int = 2000
    batch: int = 8
    crop: int = 64
    lr: float = 2e-4
    fft_weight: float = 0.1
    balance_weight: float = 0.01
    route_weight: float = 0.0  # task-discriminative route contrast (not in the paper; 0 = the paper's objective)
    relative_l1: bool = False  # weight each sample's L1 by its input's error (not in the paper)
    relative_fft: bool = False  # the same weighting for the FFT term (not in the paper)
    colour_weight: float = 0.0  # weight of the colour loss on channel means and chroma (not in the paper)
    saturation_weight: float = 0.0  # weight of the loss on each image's overall colourfulness (not in the paper)
    colour_jitter: float = 0.0  # random saturation and channel gains of clean crops, +-this fraction
    channel_shuffle: bool = False  # clean crops' RGB channels in a random order (hues the photos lack)
    pale: float = 0.0  # share of clean crops made pale and low in contrast before they are degraded
    init: Path | None = None  # start from these weights (fine-tuning); same architecture as the options
    seed: int = 0
    save_every: int = 200
    resume: bool = True
    device: str | None = None
    threads: int | None = None
    workers: int = 0  # processes that synthesise batches ahead of the model (0: in the training loop)
    minutes: float | None = None  # time budget: the schedule ends at whichever of iterations or minutes comes first
    exclude: tuple[str, ...] = field(default_factory=tuple)

    def namespace(self) -> argparse.Namespace:
        """The original training script's option names, so hyper-parameters read as released."""
        return argparse.Namespace(
            model="MoCE_IR_moce",
            dim=self.dim,
            num_blocks=list(self.num_blocks),
            num_dec_blocks=list(self.num_dec_blocks),
            latent_dim=2,
            num_exp_blocks=4,
            num_refinement_blocks=self.num_refinement_blocks,
            heads=list(self.heads),
            stage_depth=[1] * len(self.num_dec_blocks),
            with_complexity=True,
            complexity_scale="max",
            rank_type="spread",
            depth_type="constant",
            topk=1,
            de_type=list(self.degradations),
            lr=self.lr,
            batch_size=self.batch,
            patch_size=self.crop,
            iterations=self.iterations,
            fft_loss_weight=self.fft_weight,
            balance_loss_weight=self.balance_weight,
            route_loss_weight=self.route_weight,
            relative_l1=self.relative_l1,
            relative_fft=self.relative_fft,
            colour_loss_weight=self.colour_weight,
            saturation_loss_weight=self.saturation_weight,
            colour_jitter=self.colour_jitter,
            channel_shuffle=self.channel_shuffle,
            pale=self.pale,
            seed=self.seed,
            minutes=self.minutes,
        )


Batch = tuple[np.ndarray, np.ndarray, list[str]]  # degraded NCHW, clean NCHW, degradation names


def sample_batch(images: list[np.ndarray], opts: TrainOptions, rng: np.random.Generator) -> Batch:
    """Random crops, flips and rotations, each degraded by a random degradation."""
    clean, degraded, names = [], [], []
    for _ in range(opts.batch):
        img = images[int(rng.integers(len(images)))]
        h, w = img.shape[:2]
        top, left = int(rng.integers(h - opts.crop + 1)), int(rng.integers(w - opts.crop + 1))
        crop = np.rot90(img[top : top + opts.crop, left : left + opts.crop], int(rng.integers(4)))
        crop = np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop)
        if opts.colour_jitter > 0:
            crop = colour_jittered(crop, opts.colour_jitter, rng)
        if opts.channel_shuffle:
            crop = np.ascontiguousarray(crop[:, :, rng.permutation(3)])
        if opts.pale > 0 and rng.random() < opts.pale:
            crop = paled(crop, rng)
        name = opts.degradations[int(rng.integers(len(opts.degradations)))]
        clean.append(crop)
        degraded.append(degrade(crop, name, rng))
        names.append(name)
    to_nchw = lambda xs: np.stack(xs).transpose(0, 3, 1, 2).copy()  # noqa: E731
    return to_nchw(degraded), to_nchw(clean), names


def colour_jittered(crop: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Saturation scaled and each channel's gain changed by up to ``amount`` (a fraction), clipped to
    [0, 1]: a few photos then stand for many colour balances."""
    grey = crop.mean(axis=2, keepdims=True)
    saturation = rng.uniform(1 - amount, 1 + amount)
    gains = rng.uniform(1 - amount / 2, 1 + amount / 2, 3).astype(np.float32)
    return np.clip((grey + (crop - grey) * saturation) * gains, 0.0, 1.0).astype(np.float32)


def paled(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The crop as a pale, low-contrast scene (a bleached board, sand, an overcast sky): 30-70% of its
    contrast and half or more of its colour kept around a bright, slightly tinted level. As a clean
    photo it shows the model pale scenes that are no haze; hazed, how haze lies over them."""
    grey = crop.mean(axis=2, keepdims=True)
    muted = grey + (crop - grey) * rng.uniform(0.5, 1.0)
    level = rng.uniform(0.6, 0.85) * rng.uniform(0.85, 1.0, 3).astype(np.float32)
    return np.clip(level + (muted - crop.mean()) * rng.uniform(0.3, 0.7), 0.0, 1.0).astype(np.float32)


class StepBatches(torch.utils.data.Dataset):
    """Batch number ``step`` drawn from its own seed ``[seed, step]``: the same stream whether batches are
    made in the loop or by worker processes, and a resumed run sees what an uninterrupted one would."""

    def __init__(self, images: list[np.ndarray], opts: TrainOptions, first: int) -> None:
        self.images, self.opts, self.first = images, opts, first

    def __len__(self) -> int:
        return max(0, self.opts.iterations - self.first)

    def __getitem__(self, index: int) -> Batch:
        return sample_batch(self.images, self.opts, np.random.default_rng([self.opts.seed, self.first + index]))


def batch_stream(images: list[np.ndarray], opts: TrainOptions, first: int) -> Iterator[Batch]:
    """Batches from ``first`` on; with ``opts.workers`` they are synthesised in parallel, ahead of the model
    (on a GPU the degradations, not the network, would otherwise set the pace)."""
    batches = StepBatches(images, opts, first)
    if opts.workers <= 0:
        return (batches[i] for i in range(len(batches)))
    return iter(
        torch.utils.data.DataLoader(
            batches, batch_size=None, shuffle=False, num_workers=opts.workers, prefetch_factor=4
        )
    )


def progress(step: int, elapsed_s: float, opts: TrainOptions) -> float:
    """How far the schedule has run, in [0, 1]: steps done, or time spent when a time budget is set."""
    done = step / max(1, opts.iterations)
    return max(done, elapsed_s / (60 * opts.minutes)) if opts.minutes else done


def lr_at(fraction: float, opts: TrainOptions) -> float:
    """Linear warm-up over the first 5% of the schedule, then cosine decay to 1% of the base rate."""
    warm = 0.05
    if fraction < warm:
        return opts.lr * max(fraction, 1 / max(1, opts.iterations)) / warm
    t = min(1.0, (fraction - warm) / (1 - warm))
    return opts.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


def checkpoint_blob(
    model: MoCEIR, opts: TrainOptions, step: int, optimizer: torch.optim.Optimizer | None, elapsed_s: float = 0.0
) -> dict:
    return {
        "epoch": step,
        "global_step": step,
        "elapsed_s": elapsed_s,  # training time so far, so that a resumed run keeps its --minutes budget
        "pytorch-lightning_version": TRAIN_FORMAT_VERSION,
        "state_dict": {f"net.{k}": v.detach().cpu() for k, v in model.state_dict().items()},
        "hyper_parameters": {"opt": opts.namespace()},
        "optimizer_states": [optimizer.state_dict()] if optimizer is not None else [],
        "lr_schedulers": [],
        "callbacks": {},
    }


def save_atomic(blob: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def _load_init(model: MoCEIR, path: Path) -> None:
    """Fine-tuning start: weights from any checkpoint moce can load (safely), strictly matched."""
    from moce.model.checkpoint import load_checkpoint

    loaded = load_checkpoint(path)
    if loaded.config != model.config:
        raise InputError(f"{path}: --init checkpoint is {loaded.config}, the options build {model.config}")
    model.load_state_dict(loaded.state_dict)


def build_model(opts: TrainOptions) -> MoCEIR:
    config: MoCEConfig = config_from_hyperparameters(vars(opts.namespace()))
    return MoCEIR(config)


def train(opts: TrainOptions, on_step: Callable[[int, dict[str, float]], None] | None = None) -> Path:
    """Train until ``opts.iterations``; resumes from ``out/last.ckpt`` when present.

    ``opts.threads`` holds for the training only: the process's PyTorch thread count is restored.
    """
    check_degradations(opts.degradations)
    check_run_folder(opts)
    previous = torch.get_num_threads()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    try:
        return _train(opts, on_step)
    finally:
        torch.set_num_threads(previous)


def check_run_folder(opts: TrainOptions) -> None:
    """Refuse, before any work, a run folder that is not empty and not a moce run, that sits on or in
    the training images or the --init checkpoint, or that holds a finished run with nothing to
    resume (its final.ckpt would be replaced); then mark it as a moce run."""
    out = Path(opts.out)
    check_write(Planned(out, "-o/--output", SIGNATURE, folder=True), [opts.data, opts.init])
    if (out / FINAL).exists() and not (opts.resume and (out / LAST).is_file()):
        raise InputError(f"{out}: holds a finished run (final.ckpt) and no last.ckpt to resume; choose another -o")
    out.mkdir(parents=True, exist_ok=True)
    mark_folder(out, SIGNATURE)


def _resume(model: MoCEIR, optimizer: torch.optim.Optimizer, last: Path, device: torch.device) -> tuple[int, float]:
    """Load the run's ``last.ckpt`` into ``model`` and ``optimizer``: (step, seconds spent)."""
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        blob = torch.load(last, map_location=device, weights_only=True)
    try:
        model.load_state_dict({k[len("net.") :]: v for k, v in blob["state_dict"].items()})
    except RuntimeError:
        raise InputError(
            f"{last}: this run has another architecture than the options build; give its options, "
            "another -o or --no-resume"
        ) from None
    optimizer.load_state_dict(blob["optimizer_states"][0])
    return int(blob["global_step"]), float(blob.get("elapsed_s", 0.0))


def _train(opts: TrainOptions, on_step: Callable[[int, dict[str, float]], None] | None) -> Path:
    device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    photos = read_images(Path(opts.data), "training images", opts.exclude)
    images = [img for _, img in photos if min(img.shape[:2]) >= opts.crop]
    if not images:
        raise InputError(f"{opts.data}: no image has a shorter side of at least --crop {opts.crop} px")
    torch.manual_seed(opts.seed)
    model = build_model(opts).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=0.0)
    last = Path(opts.out) / LAST
    step, elapsed_before = 0, 0.0
    if opts.resume and last.is_file():
        step, elapsed_before = _resume(model, optimizer, last, device)
    elif opts.init is not None:
        _load_init(model, Path(opts.init))
    started = time.monotonic()
    elapsed = lambda: elapsed_before + time.monotonic() - started  # noqa: E731
    task_ids = {task: i for i, task in enumerate(sorted(set(TASK_OF.values())))}
    for degraded, clean, names in batch_stream(images, opts, step):
        fraction = progress(step, elapsed(), opts)
        if fraction >= 1.0:
            break  # the --minutes budget is spent
        tasks = torch.tensor([task_ids[TASK_OF[n]] for n in names], device=device)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(fraction, opts)
        loss, parts = objective(
            model,
            torch.as_tensor(degraded).to(device),
            torch.as_tensor(clean).to(device),
            fft_weight=opts.fft_weight,
            balance_weight=opts.balance_weight,
            tasks=tasks,
            route_weight=opts.route_weight,
            relative_l1=opts.relative_l1,
            relative_fft=opts.relative_fft,
            colour_weight=opts.colour_weight,
            saturation_weight=opts.saturation_weight,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        if on_step:
            on_step(step, {"loss": loss.item(), **parts, "lr": lr_at(fraction, opts), "schedule": fraction})
        if step % opts.save_every == 0:
            save_atomic(checkpoint_blob(model, opts, step, optimizer, elapsed()), last)
    # Always, even just after a periodic save: the budget check that ended the loop came later, and a
    # resumed --minutes run must see all the time spent.
    save_atomic(checkpoint_blob(model, opts, step, optimizer, elapsed()), last)
    model.eval()
    final = Path(opts.out) / FINAL
    save_atomic(checkpoint_blob(model, opts, step, None), final)
    return final
