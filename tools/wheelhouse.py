"""Wheels for an offline install: what a target image lacks, plus this project's own wheel.

Kaggle kernels usually run without internet. Upload the folder this writes as a Kaggle dataset and
install in the kernel with the line it prints:

    pip install --no-index --find-links /kaggle/input/<dataset> kaggle-keras-pipeline

    python tools/wheelhouse.py --image-packages kaggle-image.txt [--out wheelhouse]
        [--python-version 3.12] [--platform manylinux_2_28_x86_64]

--image-packages: the target image's installed packages (``pip freeze`` / ``pip list --format
freeze`` output, name==version per line). A requirement the image meets is not downloaded; one it
lacks or has outside the tested range is, together with whatever that wheel needs and the image
lacks, by ``pip download --only-binary=:all:`` for the image's Python and platform (pip's own
resolver, with the image's versions as constraints so it keeps them). Why a script and not one
pip command: pip download has no notion of "already installed on another machine".
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def read_image_packages(path: Path) -> dict[str, str]:
    """name → version from pip freeze output (editable / URL lines are skipped)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*==\s*([^\s;]+)", line)
        if m:
            out[canonicalize_name(m.group(1))] = m.group(2)
    return out


def project_requirements(extras: tuple[str, ...] = ()) -> list[Requirement]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in meta["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in meta["optional-dependencies"][extra]]
    return reqs


def missing(reqs: list[Requirement], image: dict[str, str]) -> list[Requirement]:
    """The requirements the image does not meet (absent, or a version outside the range)."""
    out = []
    for req in reqs:
        have = image.get(canonicalize_name(req.name))
        if have is None or not req.specifier.contains(Version(have), prereleases=True):
            out.append(req)
    return out


def _pip_download(reqs: list[str], out: Path, python_version: str, platforms: list[str], extra=()) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--python-version", python_version,
           "--implementation", "cp", "--dest", str(out), "--quiet", *extra]
    for platform in platforms:
        cmd += ["--platform", platform]
    subprocess.run(cmd + reqs, check=True)


def rejected_by(wheels: list[Path], image: dict[str, str], python_version: str) -> dict[str, str]:
    """Image packages whose installed version a needed wheel's own requirements exclude (name →
    the requirement): tensorflow-model-optimization asks for absl-py~=1.2 where the image has 2.x."""
    env = {"python_version": python_version, "python_full_version": f"{python_version}.0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
    out = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            lines = z.read(meta).decode().splitlines()
        for line in lines:
            if not line.startswith("Requires-Dist:"):
                continue
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            have = image.get(canonicalize_name(req.name))
            if have is not None and not req.specifier.contains(Version(have), prereleases=True):
                out[canonicalize_name(req.name)] = f"{req} (for {wheel.name.split('-')[0]})"
    return out


def download(reqs: list[Requirement], image: dict[str, str], out: Path, python_version: str,
             platforms: list[str]) -> dict[str, str]:
    """pip download the wheels and what they need, keeping the image's versions of everything
    (as constraints) except those a needed wheel itself excludes. Returns those exceptions."""
    wanted = [str(r) for r in reqs]
    with tempfile.TemporaryDirectory() as probe:
        _pip_download(wanted, Path(probe), python_version, platforms, ["--no-deps"])
        relaxed = rejected_by(sorted(Path(probe).glob("*.whl")), image, python_version)
    keep = {canonicalize_name(r.name) for r in reqs} | set(relaxed)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.writelines(f"{name}=={version}\n" for name, version in image.items() if name not in keep)
    _pip_download(wanted, out, python_version, platforms, ["-c", f.name])
    return relaxed


def prune(out: Path, image: dict[str, str]) -> list[Path]:
    """Remove downloaded wheels of versions the image already has; return what stays."""
    kept = []
    for wheel in sorted(out.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(wheel.name)
        if image.get(name) == str(version):
            wheel.unlink()
        else:
            kept.append(wheel)
    return kept


def build_project_wheel(out: Path) -> Path:
    # setuptools warns about the embedded competitions' data folders at length; shown on failure only.
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out),
                           str(ROOT)], capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"error: building the project's wheel failed (exit {done.returncode})")
    return next(out.glob("kaggle_keras_pipeline-*.whl"))


def platform_tags(newest: str) -> list[str]:
    """A glibc 2.N image also runs wheels built for older glibc; pip download does not infer
    that from one --platform, so every older manylinux tag is listed (2.17 = manylinux2014)."""
    m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", newest)
    if not m:
        return [newest]
    top, arch = int(m.group(1)), m.group(2)
    return [f"manylinux_2_{v}_{arch}" for v in range(top, 16, -1)] + [f"manylinux2014_{arch}", f"linux_{arch}"][:1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-packages", type=Path, required=True, help="pip freeze output of the target image")
    p.add_argument("--out", type=Path, default=ROOT / "wheelhouse")
    p.add_argument("--python-version", default="3.12")
    p.add_argument("--platform", default="manylinux_2_28_x86_64",
                   help="the image's newest wheel platform tag (default manylinux_2_28_x86_64, glibc 2.28)")
    p.add_argument("--extra", action="append", default=[], help="also the project's optional dependencies")
    args = p.parse_args(argv)
    if not args.image_packages.is_file():
        print(f"error: --image-packages {args.image_packages}: file not found. Write it with pip freeze on the "
              f"target image.", file=sys.stderr)
        return 2
    image = read_image_packages(args.image_packages)
    platforms = platform_tags(args.platform)
    args.out.mkdir(parents=True, exist_ok=True)
    need = missing(project_requirements(tuple(args.extra)), image)
    print(f"the image has {len(image)} packages; it lacks (or has outside the tested range): "
          f"{', '.join(str(r) for r in need) or 'nothing'}")
    if need:
        relaxed = download(need, image, args.out, args.python_version, platforms)
        for name, why in relaxed.items():
            print(f"  the image's {name} {image[name]} is replaced: {why}")
    wheels = prune(args.out, image)
    own = build_project_wheel(args.out)
    wheels = sorted(set(wheels) | {own})
    total = sum(w.stat().st_size for w in wheels)
    for w in wheels:
        print(f"  {w.stat().st_size / 1e6:7.2f} MB  {w.name}")
    print(f"{len(wheels)} wheels, {total / 1e6:.1f} MB in {args.out}")
    print(f"install offline: pip install --no-index --find-links {args.out} kaggle-keras-pipeline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
