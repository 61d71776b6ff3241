"""Flicker and route changes of restored footage, routing per frame against per shot.

    python scripts/video_flicker.py [--frames 48] [--model PKG] [--chart docs/video_routes.png]

For each clip (a bundled photo under one degradation, fresh noise every frame where the degradation
is noise; a static camera, or a slow pan of a pixel a frame), restores it with ``--route-per frame`` and with
``--route-per shot`` and prints, per clip: flicker (the mean absolute difference between
consecutive output frames, minus the input's, in 8-bit levels) and route changes per second.
Then, on a two-shot clip, the same for both. Prints a Markdown table (docs/video.md). ``--chart``
draws every frame's experts, per frame and per shot, on a clip whose noise strength changes from
frame to frame, then a hazy shot.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

import moce
from moce.apps.clips import ClipSpec, synthesize_clip
from moce.apps.evaluate import FONT, PALETTE
from moce.errors import MoceError
from moce.imageio import write_chart
from moce.outputs import Planned, check_writes
from moce.routing import Route
from moce.videoio import frame_to_rgb, open_input, probe

SIGNATURE = "moce scripts/video_flicker.py"
CHARTED = (("coffee", "noise"), ("chelsea", "haze"))

CLIPS = {
    "noise15": (("coffee", "noise15"),),
    "noise25": (("coffee", "noise25"),),
    "noise50": (("chelsea", "noise50"),),
    "noise 5-55 (each frame its own)": (("coffee", "noise"),),
    "rain": (("coffee", "rain"),),
    "lowlight": (("coffee", "lowlight"),),
    "haze": (("chelsea", "haze"),),
    "blur": (("chelsea", "blur"),),
    "two shots (noise25, haze)": (("coffee", "noise25"), ("chelsea", "haze")),
}


def frames_of(path: Path) -> np.ndarray:
    info = probe(path)
    with open_input(path) as container:
        return np.stack([frame_to_rgb(f, info.colour) for f in container.decode(video=0)])


def motion(frames: np.ndarray) -> float:
    """Mean absolute difference between consecutive frames, in 8-bit levels."""
    return float(np.abs(np.diff(frames, axis=0)).mean() * 255)


def timeline(rows: dict[str, list[Route]], cuts: list[int], title: str) -> np.ndarray:
    """One band per routing form, one line per adapter, one column per frame coloured by its expert
    (the palette of `moce evaluate`'s routing chart); the cuts found are marked."""
    frames = len(next(iter(rows.values())))
    adapters = len(next(iter(rows.values()))[0])
    step, line, left, top = max(2, 900 // frames), 14, 170, 46
    band = adapters * line + 26
    img = np.full((top + band * len(rows) + 40, left + step * frames + 20, 3), 255, np.uint8)
    cv2.putText(img, title, (10, 24), FONT, 0.5, (0, 0, 0), 1)
    for b, (name, routes) in enumerate(rows.items()):
        y0 = top + b * band
        cv2.putText(img, name, (10, y0 + adapters * line // 2 + 6), FONT, 0.45, (0, 0, 0), 1)
        for a in range(adapters):
            y = y0 + a * line
            cv2.putText(img, f"{a}", (left - 16, y + line - 3), FONT, 0.35, (90, 90, 90), 1)
            for f, route in enumerate(routes):
                colour = PALETTE[route[a][0] % len(PALETTE)]
                cv2.rectangle(img, (left + f * step, y), (left + (f + 1) * step - 1, y + line - 2), colour, -1)
        for cut in cuts:
            x = left + cut * step - 1
            cv2.line(img, (x, y0 - 4), (x, y0 + adapters * line + 2), (0, 0, 0), 2)
    y = top + band * len(rows) + 10
    for e, colour in enumerate(PALETTE):
        cv2.rectangle(img, (10 + e * 110, y - 10), (24 + e * 110, y + 4), colour, -1)
        cv2.putText(img, f"expert {e}", (30 + e * 110, y + 2), FONT, 0.4, (0, 0, 0), 1)
    cv2.putText(img, "rows: adapters 0-2; black line: the cut found", (460, y + 2), FONT, 0.4, (0, 0, 0), 1)
    return img


def chart(session: moce.Session, frames: int, tmp: Path, path: Path) -> None:
    spec = ClipSpec(shots=CHARTED, frames_per_shot=frames, size=(144, 224), pan=False, audio=False)
    clip = synthesize_clip(tmp / "charted.mkv", spec)
    rows, cuts = {}, []
    for per in ("frame", "shot"):
        result = session.restore_video(clip, tmp / f"charted-{per}.mkv", route_per=per, codec="ffv1")
        rows[f"--route-per {per}"] = result.routes
        cuts = [shot.first for shot in result.shots[1:]] if per == "shot" else cuts
    title = "experts per frame: noise of a strength drawn for each frame (5-55), then haze; static camera"
    write_chart(path, timeline(rows, cuts, title), SIGNATURE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48, help="frames per shot")
    parser.add_argument("--model", default=None, help="package or checkpoint [default: the bundled demo model]")
    parser.add_argument("--chart", type=Path, default=None, help="also draw the routes per frame and per shot (PNG)")
    args = parser.parse_args()
    try:
        check_writes([Planned(args.chart, "--chart", SIGNATURE, suffix=".png")], reads=[args.model])
    except MoceError as exc:
        sys.exit(f"error: {exc}")
    print("| clip | camera | route per | flicker (levels) | route changes / s | shots |")
    print("| --- | --- | --- | --- | --- | --- |")
    with moce.open(args.model) as session, tempfile.TemporaryDirectory() as tmp:
        if args.chart:
            chart(session, args.frames, Path(tmp), args.chart)
        for (name, shots), pan in ((clip, pan) for pan in (False, True) for clip in CLIPS.items()):
            spec = ClipSpec(shots=shots, frames_per_shot=args.frames, size=(144, 224), pan=pan, audio=False)
            clip = synthesize_clip(Path(tmp) / "in.mkv", spec)
            seconds = len(shots) * args.frames / spec.rate
            base = motion(frames_of(clip))
            for per in ("frame", "shot"):
                out = Path(tmp) / f"{per}.mkv"
                # overwrite: the same name's restore of the clip before, in this run's own folder
                result = session.restore_video(clip, out, route_per=per, codec="ffv1", overwrite=True)
                flicker = motion(frames_of(out)) - base
                camera, shots_found = "pan" if pan else "static", len(result.shots) if per == "shot" else "-"
                changes = result.route_changes / seconds
                print(f"| {name} | {camera} | {per} | {flicker:+.2f} | {changes:.2f} | {shots_found} |")


if __name__ == "__main__":
    main()
