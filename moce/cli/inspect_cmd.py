"""`moce inspect MODEL`."""

from __future__ import annotations

from pathlib import Path

import typer

from moce.apps.inspect import SIGNATURE, inspect_checkpoint
from moce.cli.common import reads, render_table, user_errors, write_json_output, writes
from moce.cli.options import image_size
from moce.outputs import Planned, check_writes


@user_errors
def inspect(
    checkpoint: Path = typer.Argument(
        ..., parser=reads, help="Lightning .ckpt, plain state dict (.pt/.pth), .safetensors or a model package folder"
    ),
    size: str = typer.Option(
        "256x256", parser=image_size, help="Image size (256 or HxW) at which expert FLOPs are counted"
    ),
    json_out: Path = typer.Option(
        None, "--json", parser=writes, help="Write the description as JSON to this file (-: standard output)"
    ),
) -> None:
    """Print the architecture derived from a checkpoint and what each expert costs."""
    height, width = size
    check_writes([Planned(json_out, "--json", SIGNATURE)], reads=[checkpoint])
    info = inspect_checkpoint(checkpoint, height, width)
    if json_out is not None:
        write_json_output(json_out, info, SIGNATURE)
        if str(json_out) == "-":
            return
    cfg = info["config"]
    typer.echo(f"checkpoint  {info['checkpoint']}  (sha256 {info['sha256'][:16]}...)")
    for key in ("dim", "num_blocks", "num_dec_blocks", "heads", "num_refinement_blocks", "top_k"):
        typer.echo(f"  {key:<22} {cfg[key]}")
    p = info["params"]
    typer.echo(
        f"  {'parameters':<22} {p['total']:,} (experts {p['experts']:,}, trunk+routers {p['trunk_and_routers']:,})"
    )
    rows = [
        [
            a["adapter"],
            a["level"],
            e["expert"],
            e["rank"],
            e["patch_size"],
            f"{e['params']:,}",
            f"{e['flops'] / 1e9:.3f}",
            f"{e['complexity']:.3f}",
        ]
        for a in info["adapters"]
        for e in a["experts"]
    ]
    typer.echo(f"\nexperts (GFLOPs per image at {height}x{width}):")
    typer.echo(render_table(["adapter", "level", "expert", "rank", "patch", "params", "GFLOPs", "complexity"], rows))
