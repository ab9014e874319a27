"""The Node.js tools of ``tools/web`` (pinned in its package-lock.json, installed by ``make web-tools``).

* ``gltf-validator``: the Khronos glTF-Validator, driven by ``tools/web/validate_gltf.js``.
* ``@playcanvas/splat-transform``: PLY <-> SOG and the self-contained HTML viewer (SuperSplat's).

They run as subprocesses of the machine's ``node`` (Node.js 20 or newer). A missing tool is an
error that says how to install it, never a silent skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from backend.errors import HeadRigError

WEB_TOOLS = Path(os.environ.get("HEADRIG_WEB_TOOLS", Path(__file__).resolve().parents[1] / "tools" / "web"))
MIN_NODE_MAJOR = 20


class WebToolError(HeadRigError):
    """A web tool is missing or failed; the message says which and what to do."""


def node() -> str:
    """Path of a Node.js >= 20 executable."""
    exe = shutil.which("node")
    if exe is None:
        raise WebToolError("node (Node.js >= 20) is not on PATH; install it (Debian: apt-get install nodejs)")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    major = int(version.lstrip("v").split(".")[0])
    if major < MIN_NODE_MAJOR:
        raise WebToolError(f"node {version} is too old; the web tools need Node.js >= {MIN_NODE_MAJOR}")
    return exe


def tool_path(package_file: str) -> Path:
    """A file inside ``tools/web/node_modules``; raises with the install command when absent."""
    path = WEB_TOOLS / "node_modules" / package_file
    if not path.is_file():
        raise WebToolError(f"{path} is missing; install the web tools with 'make web-tools' "
                           f"(npm ci in {WEB_TOOLS})")
    return path


def run_node(script: Path, args: list[str], timeout: float = 600.0) -> str:
    """Run a Node.js script; returns its stdout, raises WebToolError with its stderr on failure."""
    proc = subprocess.run([node(), str(script), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=WEB_TOOLS)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
        raise WebToolError(f"{script.name} {' '.join(args)} failed ({proc.returncode}):\n" + "\n".join(tail))
    return proc.stdout


def splat_transform(args: list[str], timeout: float = 600.0) -> str:
    """Run PlayCanvas' splat-transform with ``args``. SOG's SH compression runs on the CPU
    (``-g cpu``): it would otherwise look for a WebGPU adapter, which servers rarely have."""
    cli = tool_path("@playcanvas/splat-transform/bin/cli.mjs")
    return run_node(cli, ["-g", "cpu", "-w", *args], timeout)


@dataclass
class ValidationReport:
    """The Khronos validator's verdict on one file: counts and (code, severity name, pointer) per issue."""

    file: str
    validator_version: str
    errors: int
    warnings: int
    infos: int
    hints: int
    messages: list[dict] = field(default_factory=list)

    def of(self, severity: str) -> list[dict]:
        return [m for m in self.messages if m["severity"] == severity]


_SEVERITY = {0: "error", 1: "warning", 2: "info", 3: "hint"}


def validate_gltf(paths: list[str | Path]) -> list[ValidationReport]:
    """Validate glTF/GLB files with the Khronos glTF-Validator (all issues, none truncated)."""
    tool_path("gltf-validator/package.json")
    out = json.loads(run_node(WEB_TOOLS / "validate_gltf.js", [str(Path(p).resolve()) for p in paths]))
    reports = []
    for r in out:
        issues = r["issues"]
        messages = [{"code": m["code"], "severity": _SEVERITY[m["severity"]], "pointer": m.get("pointer", ""),
                     "message": m["message"]} for m in issues["messages"]]
        reports.append(ValidationReport(r["file"], r["validatorVersion"], issues["numErrors"], issues["numWarnings"],
                                        issues["numInfos"], issues["numHints"], messages))
    return reports
