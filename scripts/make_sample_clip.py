"""Make the bundled sample clip: two shots panning over the bundled photos, one noisy, one hazy,
with an AAC tone, at 24 frames/s (what `moce restore` shows on footage, and what tests restore).

    python scripts/make_sample_clip.py moce/data/sample_clip.mp4

The clip is made by :func:`moce.apps.clips.synthesize_clip` from :data:`SAMPLE_CLIP_SPEC`; seeds are fixed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from moce.apps.clips import SAMPLE_CLIP_SPEC, synthesize_clip
from moce.errors import MoceError
from moce.outputs import Planned, check_writes

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    try:  # a clip carries no signature: an existing file is never replaced, whoever wrote it
        check_writes([Planned(out, "OUT", "moce scripts/make_sample_clip.py", suffix=".mp4")])
    except MoceError as exc:
        sys.exit(f"error: {exc}")
    print(synthesize_clip(out, SAMPLE_CLIP_SPEC))
