"""Flicker and route changes of restored footage, routing per frame against per shot.

    python scripts/video_flicker.py [--frames 48] [--model PKG]

For each clip (a bundled photo under one degradation, fresh noise every frame where the degradation
is noise; a static camera, or a slow pan of a pixel a frame), restores it with ``--route-per frame`` and with
``--route-per shot`` and prints, per clip: flicker (the mean absolute difference between
consecutive output frames, minus the input's, in 8-bit levels) and route changes per second.
Then, on a two-shot clip, the same for both. Prints a Markdown table (docs/video.md).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import moce
from moce.apps.clips import ClipSpec, synthesize_clip
from moce.videoio import frame_to_rgb, open_input, probe

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
        return np.stack([frame_to_rgb(f, info) for f in container.decode(video=0)])


def motion(frames: np.ndarray) -> float:
    """Mean absolute difference between consecutive frames, in 8-bit levels."""
    return float(np.abs(np.diff(frames, axis=0)).mean() * 255)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48, help="frames per shot")
    parser.add_argument("--model", default=None, help="package or checkpoint [default: the bundled demo model]")
    args = parser.parse_args()
    print("| clip | camera | route per | flicker (levels) | route changes / s | shots |")
    print("| --- | --- | --- | --- | --- | --- |")
    with moce.open(args.model) as session, tempfile.TemporaryDirectory() as tmp:
        for (name, shots), pan in ((clip, pan) for pan in (False, True) for clip in CLIPS.items()):
            spec = ClipSpec(shots=shots, frames_per_shot=args.frames, size=(144, 224), pan=pan, audio=False)
            clip = synthesize_clip(Path(tmp) / "in.mkv", spec)
            seconds = len(shots) * args.frames / spec.rate
            base = motion(frames_of(clip))
            for per in ("frame", "shot"):
                out = Path(tmp) / f"{per}.mkv"
                result = session.restore_video(clip, out, route_per=per, codec="ffv1")
                flicker = motion(frames_of(out)) - base
                camera, shots_found = "pan" if pan else "static", len(result.shots) if per == "shot" else "-"
                changes = result.route_changes / seconds
                print(f"| {name} | {camera} | {per} | {flicker:+.2f} | {changes:.2f} | {shots_found} |")
                out.unlink()
            clip.unlink()


if __name__ == "__main__":
    main()
