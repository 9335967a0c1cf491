"""Build the CPU challenge image with podman and run it the ways users run it; fail on any label that differs.

Run as root from the repository root, after the set-up (README, "Set up"): `.venv/bin/python docker/check.py`.

1. The base: a Debian rootfs with Python made by mmdebstrap (no base image can be pulled here), imported into
   podman, with Debian's EXTERNALLY-MANAGED marker removed so that pip installs into the system Python, as in the
   TensorFlow images. It is kept in podman and as a tarball in the cache folder, under a key of what makes it.
2. The image: `Dockerfile` with that base, built by podman; pip in the build reaches the package registry as pip
   on this host does (the host's index, certificate and proxy settings, read from `pip config list` now). Built
   again on that image, which stands in for a base with TensorFlow (the GPU base cannot be pulled here), pip must
   keep the base's TensorFlow.
3. The shared CTs (NIfTI files and DICOM series) segmented by the host's `efficientscn predict`, with the shipped
   models and with a models folder in the original's layout (its released localization network beside a stand-in
   for its segmentation network, see tests/original_layout.py), then by the image:
   - the challenge's own command, verbatim: `/bin/bash -c "sh predict.sh"`, as root, offline;
   - offline, as user 1000:1000, with a read-only root and a tmpfs on /tmp, inputs read-only, the shipped models
     mounted over the baked-in ones;
   - the same with the original's layout mounted, twice, with the cache in a mounted folder: the first run imports
     the original's networks into it, the second finds them there.
   Every label must equal the host's voxel for voxel, on the same grid; the runs must end as the host's did.
4. Prints the image's size, the build time and the seconds per case.

Exits non-zero, naming what differs, on any mismatch or failure. The work folder is removed on success and kept
(its path printed) on failure.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# Everything the check reads or keeps outside the repository; each can be moved by an environment variable.
SHARED_DATA = Path(os.environ.get("EFFICIENTSCN_SHARED_DATA", REPO_ROOT / "tests" / "ct_data")).absolute()
"""The test CTs, as the tests find them: cases.json and the files it names (those stored there: the variants the
tests make are left out unless the folder holds them)."""
ORIGINAL = Path(
    os.environ.get("EFFICIENTSCN_ORIGINAL", REPO_ROOT.parent / "shared" / "reference" / "original-repo")
).absolute()
ORIGINAL_MODELS = ORIGINAL / "submitted_saved_models"
"""The original's released models folder, in a clone of the original (CI's copy holds its segmentation network's
variable index only)."""
CACHE = Path(
    os.environ.get("EFFICIENTSCN_CHECK_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or "/var/cache") / "efficientscn-check"
)
"""Where the base rootfs tarball is kept between runs (an optimisation: the check makes it again if missing)."""
IMAGE = os.environ.get("EFFICIENTSCN_CHECK_IMAGE", "localhost/efficientscn:cpu")
"""The tag of the image the check builds (and leaves behind for use)."""

SHIPPED_MODELS = REPO_ROOT / "submitted_saved_models"
"""The models baked into the image by default (Dockerfile, MODELS)."""
EFFICIENTSCN = Path(sys.executable).with_name("efficientscn")
"""The host's command, from the environment running this script."""

MMDEBSTRAP = [
    "mmdebstrap",
    "--variant=minbase",
    "--include=python3,python3-venv,python3-pip,ca-certificates",
    "bookworm",
]
"""The base rootfs: a minimal Debian with Python and pip (the tarball's path is appended)."""
ROOTFS_IMAGE = "localhost/debian-python:bookworm"
BASE_CONTAINERFILE = f"FROM {ROOTFS_IMAGE}\nRUN rm -f /usr/lib/python3*/EXTERNALLY-MANAGED\n"
BASE_IMAGE = "localhost/efficientscn-python"
"""Tagged with the key of MMDEBSTRAP and BASE_CONTAINERFILE."""

RUN = [
    "podman",
    "--runtime",
    "runc",
    "--cgroup-manager=cgroupfs",
    "run",
    "--rm",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=4096:4096",
]
"""podman run as it works in this sandbox (crun, and the default limits, fail in it)."""
USER_ID = 1000
"""The user the locked-down runs run as."""
CONTAINER_CACHE = "/tmp/efficientscn-cache"
"""Where predict keeps imported models and frozen graphs in the image (Dockerfile, EFFICIENTSCN_CACHE)."""
REPORT = ["--report", "/workspace/outputs/report.json"]
"""Arguments for predict.sh in the locked-down runs: the report gives the seconds per case."""
CHALLENGE_COMMAND = ["/bin/bash", "-c", "sh predict.sh"]
"""The original README's command, verbatim."""

PIP_NETWORK_SETTINGS = ("index-url", "extra-index-url", "trusted-host", "cert", "client-cert", "proxy")
"""The pip settings that decide how pip reaches the registry; the rest of the host's (local wheel folders,
constraints for other projects) does not belong in the image's build."""
PIP_FILE_SETTINGS = ("cert", "client-cert")
"""Settings that name a file on this host, mounted read-only at the same path into the build."""

logger = logging.getLogger("check")


class CheckFailed(Exception):
    """A step failed or a result differs: the message says which."""


@dataclass
class Outcome:
    """How one `predict` run ended: exit status, wall time and where its labels and log are."""

    name: str
    exit_status: int
    seconds: float
    output: Path
    log: Path
    owner: int | None = None
    """The user id the outputs must belong to (a container run as another user than root)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the work folder also when the check passes")
    arguments = parser.parse_args()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # TensorFlow, imported for the stand-in model, gives the root logger a handler too
    work = Path(tempfile.mkdtemp(prefix="efficientscn-check-"))
    os.chmod(work, 0o755)  # the container's user reads the inputs and models folders in it
    started = time.perf_counter()
    try:
        run_check(work)
    except (CheckFailed, subprocess.CalledProcessError, OSError) as error:
        logger.error("CHECK FAILED: %s", error)
        logger.error("the work folder is kept: %s", work)
        return 1
    logger.info("check passed in %.0f s", time.perf_counter() - started)
    if arguments.keep:
        logger.info("the work folder is kept: %s", work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def run_check(work: Path) -> None:
    preflight()
    base, base_seconds = base_image(work)
    # the runs use a tag of this check's own, which another check building meanwhile cannot move or remove
    image = f"{IMAGE}-check-{os.getpid()}"
    previous = image_id(IMAGE)
    try:
        build_seconds = build_image(base, image, work)
        check_a_base_tensorflow_is_kept(image, work)
        run_image(image, base_seconds, build_seconds, work)
    finally:
        subprocess.run(["podman", "untag", image, image], check=False, capture_output=True)
        if previous and previous != image_id(IMAGE) and not image_tags(previous):  # the image IMAGE replaced
            subprocess.run(["podman", "rmi", previous], check=False, capture_output=True)


def run_image(image: str, base_seconds: float | None, build_seconds: float, work: Path) -> None:
    """Segment the shared CTs on the host and with `image` in every way, comparing as the runs finish."""
    inputs, cases = prepare_inputs(work / "inputs")
    original_models = write_original_layout(work / "original_models")
    shipped = host_predict("host, shipped models", inputs, work / "host_shipped", SHIPPED_MODELS)
    original = host_predict("host, the original's layout", inputs, work / "host_original", original_models)
    runs: list[tuple[Outcome, int]] = []

    output = work / "challenge"
    output.mkdir()
    challenge = container_predict(
        "challenge command, as root",
        output,
        [
            *["--name", f"efficientscn-check-{os.getpid()}"],
            *["-v", f"{inputs}/:/workspace/inputs/", "-v", f"{output}/:/workspace/outputs/"],
            *["--network", "none", image, *CHALLENGE_COMMAND],
        ],
    )
    runs.append((challenge, compare_run(challenge, shipped, cases)))

    output = writable_folder(work / "locked_shipped")
    locked = container_predict(
        "non-root, read-only, shipped models mounted",
        output,
        [*locked_down(inputs, output, SHIPPED_MODELS), image, "sh", "predict.sh", *REPORT],
        owner=USER_ID,
    )
    runs.append((locked, compare_run(locked, shipped, cases)))

    cache = writable_folder(work / "container_cache")
    for attempt, says in (("first", "importing it into"), ("second", "imported before into")):
        output = writable_folder(work / f"locked_original_{attempt}")
        locked = container_predict(
            f"non-root, read-only, the original's layout mounted, {attempt} run",
            output,
            [
                *locked_down(inputs, output, original_models),
                *["-v", f"{cache}:{CONTAINER_CACHE}", image, "sh", "predict.sh", *REPORT],
            ],
            owner=USER_ID,
        )
        if says not in locked.log.read_text():
            raise CheckFailed(f"{locked.name}: its log lacks '{says}' (the original's networks and the cache)")
        runs.append((locked, compare_run(locked, original, cases)))
    summary(image, base_seconds, build_seconds, cases, [shipped, original], runs)


def locked_down(inputs: Path, output: Path, models: Path) -> list[str]:
    """podman run options: offline, as user USER_ID, read-only but for a tmpfs on /tmp and the outputs folder,
    inputs read-only, `models` mounted read-only over the baked-in models."""
    return [
        *["--network", "none", "--user", f"{USER_ID}:{USER_ID}"],
        "--read-only",
        "--read-only-tmpfs=false",  # podman's own extra tmpfs folders (/var/tmp, /run): not under Docker's --read-only
        *["--tmpfs", "/tmp"],
        *["-v", f"{inputs}:/workspace/inputs:ro", "-v", f"{output}:/workspace/outputs"],
        *["-v", f"{models}:/workspace/saved_models:ro"],
    ]


def preflight() -> None:
    """Stop early, with the reason, where the check cannot run."""
    if os.geteuid() != 0:
        raise CheckFailed("podman and mmdebstrap run as root here: run the check as root")
    missing = [tool for tool in ("podman", "runc", "mmdebstrap") if shutil.which(tool) is None]
    if missing:
        raise CheckFailed(f"not installed: {', '.join(missing)} (apt-get install {' '.join(missing)})")
    if not (SHARED_DATA / "cases.json").is_file():
        raise CheckFailed(f"shared CTs not found: {SHARED_DATA}/cases.json (set EFFICIENTSCN_SHARED_DATA)")
    if not (ORIGINAL_MODELS / "localization" / "saved_model.pb").is_file():
        raise CheckFailed(
            f"the original's models not found in {ORIGINAL_MODELS} (set EFFICIENTSCN_ORIGINAL to a clone of it)"
        )
    if not EFFICIENTSCN.is_file():
        raise CheckFailed(f"{EFFICIENTSCN} not found: run the check with the set-up's Python (.venv/bin/python)")


def base_image(work: Path) -> tuple[str, float | None]:
    """The base image's tag and the seconds it took to make (None when podman had it)."""
    key = hashlib.sha256(json.dumps([MMDEBSTRAP, BASE_CONTAINERFILE]).encode()).hexdigest()[:12]
    tag = f"{BASE_IMAGE}:{key}"
    if subprocess.run(["podman", "image", "exists", tag], check=False).returncode == 0:
        logger.info("base image %s: found in podman", tag)
        return tag, None
    started = time.perf_counter()
    tarball = CACHE / f"debian-python-{key}.tar"
    if tarball.is_file():
        logger.info("base rootfs: found in the cache, %s", tarball)
    else:
        logger.info("base rootfs: making it with mmdebstrap, into %s", tarball)
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_name(f".{tarball.stem}.{os.getpid()}.partial.tar")  # mmdebstrap: format by ending
        try:
            run([*MMDEBSTRAP, str(partial)], log=work / "mmdebstrap.log")
            partial.replace(tarball)
        finally:
            partial.unlink(missing_ok=True)
    run(["podman", "import", str(tarball), ROOTFS_IMAGE], log=work / "import.log")
    context = work / "base"
    context.mkdir()
    (context / "Containerfile").write_text(BASE_CONTAINERFILE)
    run(["podman", "build", "--isolation=chroot", "--layers=false", "-t", tag, str(context)], log=work / "base.log")
    seconds = time.perf_counter() - started
    logger.info("base image %s: made in %.0f s", tag, seconds)
    return tag, seconds


def build(tags: list[str], base: str, log: Path) -> float:
    """`podman build` of the repository's Dockerfile on `base`, without cached layers (the dependencies are
    resolved anew, as in a user's build); returns its seconds."""
    started = time.perf_counter()
    command = ["podman", "build", "--isolation=chroot", "--network=host", "--layers=false"]
    command += [*pip_build_mounts(log.with_name("pip.conf")), "--build-arg", f"BASE={base}"]
    run([*command, *(option for tag in tags for option in ("-t", tag)), str(REPO_ROOT)], log=log)
    return time.perf_counter() - started


def build_image(base: str, image: str, work: Path) -> float:
    """Build IMAGE, also tagged `image`, on `base`; returns the build's seconds."""
    logger.info("building %s on %s", IMAGE, base)
    seconds = build([IMAGE, image], base, work / "build.log")
    logger.info("built %s in %.0f s: %.2f GB", IMAGE, seconds, image_bytes(image) / 1e9)
    return seconds


def check_a_base_tensorflow_is_kept(image: str, work: Path) -> None:
    """The GPU base brings its TensorFlow, with its CUDA libraries, which the install must keep. That base cannot be
    pulled here: `image`, a base with TensorFlow 2.21, stands in for it. Built on it, pip must take TensorFlow as
    installed and fetch none."""
    log = work / "build_on_tensorflow.log"
    tag = f"{image}-on-itself"
    seconds = build([tag], image, log)
    subprocess.run(["podman", "rmi", tag], check=False, capture_output=True)
    text = log.read_text()
    if "Requirement already satisfied: tensorflow" not in text or re.search(r"Collecting tensorflow\b", text):
        raise CheckFailed(f"built on a base with TensorFlow, pip did not keep the base's: see {log}")
    logger.info("built on a base with TensorFlow (%.0f s), pip kept the base's", seconds)


def image_id(tag: str) -> str | None:
    done = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def image_tags(image: str) -> list[str]:
    done = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{json .RepoTags}}", image], capture_output=True, text=True
    )
    return json.loads(done.stdout) if done.returncode == 0 else []


def image_bytes(tag: str) -> int:
    done = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Size}}", tag], capture_output=True, text=True, check=True
    )
    return int(done.stdout.strip())


def pip_build_mounts(config: Path) -> list[str]:
    """`podman build` options that let pip in the build reach the registry as pip on this host does: a pip
    configuration of the host's network settings, mounted as /etc/pip.conf, and the files it names."""
    done = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True)
    settings = pip_network_settings(done.stdout)
    config.write_text("[global]\n" + "".join(f"{key} = {value}\n" for key, value in settings.items()))
    mounts = ["-v", f"{config}:/etc/pip.conf:ro"]
    for key in PIP_FILE_SETTINGS:
        if key in settings:
            mounts += ["-v", f"{settings[key]}:{settings[key]}:ro"]
    logger.info("pip in the build: %s", ", ".join(sorted(settings)) or "no settings of the host's")
    return mounts


def pip_network_settings(listing: str) -> dict[str, str]:
    """From `pip config list`, the settings that decide how pip reaches the registry (PIP_NETWORK_SETTINGS), as pip
    takes them (the environment's over the files'), without this host's local folders (file: URLs)."""
    settings: dict[str, str] = {}
    for line in listing.splitlines():  # `global.cert='/path'`, `:env:.cert='/path'`: values printed as Python strings
        name, _, value = line.partition("=")
        scope, _, key = name.rpartition(".")
        if key in PIP_NETWORK_SETTINGS and (key not in settings or scope == ":env:"):
            settings[key] = " ".join(item for item in ast.literal_eval(value).split() if not item.startswith("file:"))
    return {key: value for key, value in settings.items() if value}


def prepare_inputs(folder: Path) -> tuple[Path, list[str]]:
    """Copies of the shared CTs named by their case ids (a container cannot follow links out of its mounts);
    returns the folder and the ids."""
    folder.mkdir(parents=True)
    cases = [
        case for case in json.loads((SHARED_DATA / "cases.json").read_text()) if (SHARED_DATA / case["image"]).exists()
    ]
    for case in cases:
        source = SHARED_DATA / case["image"]
        if source.is_dir():  # a DICOM series
            shutil.copytree(source, folder / case["id"])
        else:
            ending = ".nii.gz" if source.name.endswith(".nii.gz") else source.suffix
            shutil.copy2(source, folder / f"{case['id']}{ending}")
    readable_by_all(folder)
    ids = sorted(case["id"] for case in cases)
    logger.info("%d shared CTs: %s", len(ids), ", ".join(ids))
    return folder, ids


def write_original_layout(folder: Path) -> Path:
    """A models folder in the original's layout: its released localization network and traced module, and a
    stand-in for its segmentation network with the original's interface and variable layout."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from original_layout import shipped_scn_weights, write_original_layout_scn

    folder.mkdir(parents=True)
    for stage in ("localization", "tf_utils_module"):
        shutil.copytree(ORIGINAL_MODELS / stage, folder / stage)
    write_original_layout_scn(folder / "segmentation", shipped_scn_weights())
    readable_by_all(folder)
    return folder


def readable_by_all(folder: Path) -> None:
    """Let the container's user read `folder` and everything in it."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def writable_folder(folder: Path) -> Path:
    """A folder the container's user (USER_ID) may write to."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chown(folder, USER_ID, USER_ID)
    return folder


def host_predict(name: str, inputs: Path, output: Path, models: Path) -> Outcome:
    command = [str(EFFICIENTSCN), "predict", "-i", str(inputs), "-o", str(output), "--models", str(models)]
    return timed(name, command, output)


def container_predict(name: str, output: Path, arguments: list[str], *, owner: int | None = None) -> Outcome:
    """`podman run` with `arguments`, its labels in `output`; `owner`: the user id they must belong to."""
    outcome = timed(name, [*RUN, *arguments], output)
    outcome.owner = owner
    return outcome


def timed(name: str, command: list[str], output: Path) -> Outcome:
    """Run a `predict` command, its output in a log beside `output`; a failed case is not an error here."""
    log = output.with_name(f"{output.name}.log")
    logger.info("%s: %s", name, " ".join(command))
    started = time.perf_counter()
    status = run(command, log=log, check=False)
    seconds = time.perf_counter() - started
    logger.info("%s: exit status %d after %.0f s", name, status, seconds)
    if status not in (0, 1):  # 1: some case failed, which the comparison judges
        raise CheckFailed(f"{name}: exit status {status}; its log, {log}, ends:\n{tail(log)}")
    return Outcome(name, status, seconds, output, log)


def compare_run(outcome: Outcome, expected: Outcome, cases: list[str]) -> int:
    """Check that `outcome` ended as `expected` did, with equal labels; returns the number of labels compared."""
    import numpy as np
    import SimpleITK as sitk

    problems = []
    if outcome.exit_status != expected.exit_status:
        problems.append(f"exit status {outcome.exit_status}, the host's {expected.exit_status}")
    found, wanted = label_files(outcome.output), label_files(expected.output)
    if found != wanted:
        problems.append(f"labels {sorted(found)}, the host's {sorted(wanted)}")
    for name in sorted(found & wanted):
        ours, theirs = sitk.ReadImage(str(outcome.output / name)), sitk.ReadImage(str(expected.output / name))
        grid = [
            (image.GetSize(), image.GetOrigin(), image.GetSpacing(), image.GetDirection()) for image in (ours, theirs)
        ]
        if grid[0] != grid[1] or ours.GetPixelID() != theirs.GetPixelID():
            problems.append(f"{name}: grid or pixel type differs from the host's")
        elif not np.array_equal(sitk.GetArrayViewFromImage(ours), sitk.GetArrayViewFromImage(theirs)):
            differing = int(np.count_nonzero(sitk.GetArrayViewFromImage(ours) != sitk.GetArrayViewFromImage(theirs)))
            problems.append(f"{name}: {differing} voxels differ from the host's")
    if outcome.owner is not None:
        foreign = sorted(name for name in found if (outcome.output / name).stat().st_uid != outcome.owner)
        if foreign:
            problems.append(f"not owned by the container's user {outcome.owner}: {', '.join(foreign)}")
    failed = sorted(set(cases) - {name.split(".")[0] for name in wanted})
    if problems:
        raise CheckFailed(f"{outcome.name}: " + "; ".join(problems) + f" (log: {outcome.log})")
    logger.info(
        "%s: %d labels equal to the host's voxel for voxel%s",
        outcome.name,
        len(found),
        f"; no label for {', '.join(failed)}, as on the host" if failed else "",
    )
    return len(found)


def label_files(folder: Path) -> set[str]:
    """The label files in a predict output folder (not its report, not hidden files)."""
    return {path.name for path in folder.iterdir() if path.is_file() and not path.name.startswith(".")} - {
        "report.json"
    }


def summary(
    image: str,
    base_seconds: float | None,
    build_seconds: float,
    cases: list[str],
    host: list[Outcome],
    runs: list[tuple[Outcome, int]],
) -> None:
    """The figures: image size, build time, and per run its exit status, labels compared and seconds per case."""
    base = "found in podman" if base_seconds is None else f"made in {base_seconds:.0f} s"
    print(f"\nimage {IMAGE}: {image_bytes(image) / 1e9:.2f} GB, built in {build_seconds:.0f} s; base image {base}")
    print(f"{len(cases)} shared CTs; the labels of each container run compared voxel for voxel with the host's")
    print(f"{'run':62} {'exit':>4} {'labels':>6} {'wall s':>7} {'wall s per CT':>13} {'median case s':>13}")
    for outcome, count in [*((outcome, None) for outcome in host), *runs]:
        median = median_case_seconds(outcome.output / "report.json")
        print(
            f"{outcome.name:62} {outcome.exit_status:4d} {'' if count is None else count:>6} {outcome.seconds:7.1f}"
            f" {outcome.seconds / len(cases):13.1f} {'' if median is None else f'{median:.2f}':>13}"
        )


def median_case_seconds(report: Path) -> float | None:
    """The median over the cases done of their summed stage seconds, from a predict report if there is one."""
    if not report.is_file():
        return None
    done = [
        sum(case["seconds"].values()) for case in json.loads(report.read_text())["cases"] if case["status"] == "done"
    ]
    return statistics.median(done) if done else None


def run(command: list[str], *, log: Path, check: bool = True) -> int:
    """Run a command, its output into `log`; a failure raises with the log's end if `check`."""
    with log.open("w") as stream:
        status = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, check=False).returncode
    if check and status != 0:
        raise CheckFailed(f"{' '.join(command)}: exit status {status}; its log, {log}, ends:\n{tail(log)}")
    return status


def tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


if __name__ == "__main__":
    sys.exit(main())
