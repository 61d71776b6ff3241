"""`moce train DATA -o OUT`."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from moce.cli.common import THREADS, reads, user_errors, writes
from moce.cli.options import counts, crop_side
from moce.cli.options import degradations as degradation_names
from moce.data.degrade import WIDE_RANGES
from moce.train.trainer import TrainOptions
from moce.train.trainer import train as run_train


@user_errors
def train(
    data: Path = typer.Argument(..., parser=reads, help="Folder of clean training images"),
    out: Path = typer.Option(
        Path("runs/train"), "-o", "--output", parser=writes, help="Folder for last.ckpt and final.ckpt"
    ),
    dim: int = typer.Option(16, min=4, max=1024, help="Channels at full resolution"),
    num_blocks: str = typer.Option("1,1,1,2", parser=counts, help="Encoder blocks per level, then the latent"),
    num_dec_blocks: str = typer.Option("1,1,1", parser=counts, help="Decoder blocks per level (shallow first)"),
    heads: str = typer.Option("1,1,2,2", parser=counts, help="Attention heads per level"),
    refinement: int = typer.Option(1, min=0, max=64, help="Refinement blocks"),
    degradations: str = typer.Option(
        ",".join(WIDE_RANGES),
        parser=degradation_names,
        help="Degradations to train on (repeat one to draw it more often)",
    ),
    iterations: int = typer.Option(2000, min=1, help="Optimizer steps"),
    batch: int = typer.Option(8, min=1, max=4096, help="Crops per step"),
    crop: int = typer.Option(64, parser=crop_side, help="Crop side (multiple of 8)"),
    lr: float = typer.Option(2e-4, min=1e-9, max=1.0, help="Peak learning rate (AdamW, warm-up then cosine)"),
    seed: int = typer.Option(0, min=0, help="Seed for weights, crops and degradations"),
    save_every: int = typer.Option(200, min=1, help="Write last.ckpt every N steps"),
    resume: bool = typer.Option(True, help="Continue from OUT/last.ckpt when it exists"),
    device: str = typer.Option(None, help="cpu or cuda [default: cuda when available]"),
    threads: int = THREADS,
    workers: int = typer.Option(
        0, min=0, max=256, help="Processes that synthesise batches ahead of the model (use on a GPU)"
    ),
    minutes: float = typer.Option(
        None,
        min=0.01,
        help="Time budget: the learning-rate schedule ends at whichever of --iterations or --minutes comes first",
    ),
    init: Path = typer.Option(
        None, parser=reads, help="Start from this checkpoint's weights (fine-tune; same architecture)"
    ),
    balance_weight: float = typer.Option(0.01, min=0.0, help="Weight of the load-balancing loss (the paper: 0.01)"),
    route_weight: float = typer.Option(
        0.0,
        min=0.0,
        help="Weight of the task-discriminative route contrast, which uses the "
        "degradation labels (not in the paper; 0 = the paper's objective)",
    ),
    relative_l1: bool = typer.Option(
        False,
        help="Weight each sample's L1 by the inverse of its input's error, so "
        "mild degradations (blur) count as much as heavy ones (not in the paper)",
    ),
    relative_fft: bool = typer.Option(False, help="The same per-sample weighting for the FFT loss (not in the paper)"),
    colour_weight: float = typer.Option(
        0.0, min=0.0, help="Weight of a colour loss on per-image channel means and chroma (not in the paper; 0 = off)"
    ),
    saturation_weight: float = typer.Option(
        0.0, min=0.0, help="Weight of a loss on each image's overall colourfulness (not in the paper; 0 = off)"
    ),
    colour_jitter: float = typer.Option(
        0.0,
        min=0.0,
        max=1.0,
        help="Scale the saturation and channel gains of clean crops by up to +-this fraction (0 = off)",
    ),
    channel_shuffle: bool = typer.Option(
        False, help="Put the RGB channels of clean crops in a random order: hues the photos lack"
    ),
    pale: float = typer.Option(
        0.0,
        min=0.0,
        max=1.0,
        help="Share of clean crops made pale and low in contrast (a bleached board, sand) before they are "
        "degraded, so that pale photos are not taken for haze (0 = off)",
    ),
) -> None:
    """Train a MoCE-IR on clean photos with synthetic degradations (L1 + FFT + load balance)."""
    opts = TrainOptions(
        data=data,
        out=out,
        dim=dim,
        num_blocks=num_blocks,
        num_dec_blocks=num_dec_blocks,
        heads=heads,
        num_refinement_blocks=refinement,
        degradations=degradations,
        iterations=iterations,
        batch=batch,
        crop=crop,
        lr=lr,
        seed=seed,
        save_every=save_every,
        resume=resume,
        device=device,
        threads=threads,
        workers=workers,
        minutes=minutes,
        init=init,
        balance_weight=balance_weight,
        route_weight=route_weight,
        relative_l1=relative_l1,
        relative_fft=relative_fft,
        colour_weight=colour_weight,
        saturation_weight=saturation_weight,
        colour_jitter=colour_jitter,
        channel_shuffle=channel_shuffle,
        pale=pale,
    )
    start = time.perf_counter()
    average: dict[str, float] = {}
    first: list[int] = []

    def on_step(step: int, parts: dict[str, float]) -> None:
        first.append(step) if not first else None
        for key, value in parts.items():
            average[key] = 0.95 * average.get(key, value) + 0.05 * value
        if step % 20 == 0 or step == iterations:
            rate = (step - first[0] + 1) / (time.perf_counter() - start)
            budget = f" ({parts['schedule']:.0%} of {minutes:g} min)" if minutes else ""
            typer.echo(
                f"step {step}/{iterations}{budget}  loss {average['loss']:.4f}  l1 {average['l1']:.4f}  "
                f"balance {average['balance']:.3f}  "
                + (f"route {average['route']:+.3f}  " if "route" in average else "")
                + (f"colour {average['colour']:.4f}  " if "colour" in average else "")
                + (f"saturation {average['saturation']:.4f}  " if "saturation" in average else "")
                + f"lr {parts['lr']:.2e}  {rate:.2f} it/s",
                err=True,
            )

    final = run_train(opts, on_step)
    typer.echo(f"wrote {final}")
