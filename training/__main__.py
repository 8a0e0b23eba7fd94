"""Command line: `python -m training train`, `calibrate` and `evaluate`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from router_service.classifier import default_artifact_dir

if TYPE_CHECKING:
    from training.routing import CalibrationTarget

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with one sub-command per task."""
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train and evaluate the complexity classifier.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train and write the artifact")
    train.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="folder with routellm_mmlu/, routerbench_subset/ and the other data sets "
        f"(default {DEFAULT_DATA_DIR})",
    )
    train.add_argument(
        "--output-dir",
        type=Path,
        default=default_artifact_dir(),
        help="artifact folder to write (default: the committed artifact)",
    )
    train.add_argument("--seed", type=int, default=None, help="random seed")
    add_target_options(train)

    calibrate = commands.add_parser(
        "calibrate",
        help="choose a new decision policy for a trained artifact, without refitting",
    )
    calibrate.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    calibrate.add_argument(
        "--artifact-dir",
        type=Path,
        default=default_artifact_dir(),
        help="artifact folder whose manifest gets the new policy (default: the "
        "committed artifact)",
    )
    add_target_options(calibrate)

    evaluate = commands.add_parser(
        "evaluate", help="evaluate an artifact on the held-out test split"
    )
    evaluate.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    evaluate.add_argument(
        "--artifact-dir",
        type=Path,
        default=default_artifact_dir(),
        help="artifact folder to evaluate (default: the committed artifact)",
    )
    evaluate.add_argument(
        "--report-dir",
        type=Path,
        default=REPO / "docs",
        help="folder for the Markdown, JSON and PNG report (default: docs/)",
    )
    return parser


def add_target_options(parser: argparse.ArgumentParser) -> None:
    """Add the two exclusive calibration-target options to `parser`."""
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--max-cost-per-1k",
        type=float,
        default=None,
        metavar="USD",
        help="calibrate for the best routing quality at no more than this cost per "
        "1,000 requests (default: the always-medium cost on the validation split)",
    )
    target.add_argument(
        "--min-quality",
        type=float,
        default=None,
        metavar="FRACTION",
        help="calibrate for the lowest cost that keeps this fraction (0-1] of the "
        "always-complex quality",
    )


def calibration_target(
    max_cost_per_1k: float | None, min_quality: float | None
) -> CalibrationTarget:
    """Build the calibration target from the two exclusive command-line options.

    Raises:
        ValueError: the value is out of range.
    """
    from training.routing import MAX_COST_TARGET, MIN_QUALITY_TARGET, CalibrationTarget

    if min_quality is not None:
        return CalibrationTarget(MIN_QUALITY_TARGET, min_quality)
    return CalibrationTarget(MAX_COST_TARGET, max_cost_per_1k)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command and return the process exit code."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    # Imported here so that --help stays fast.
    from router_service.classifier import ClassifierArtifactError
    from training.evaluate import evaluate
    from training.train import DEFAULT_SEED, recalibrate, train

    try:
        if args.command in ("train", "calibrate"):
            target = calibration_target(args.max_cost_per_1k, args.min_quality)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        if args.command == "train":
            seed = DEFAULT_SEED if args.seed is None else args.seed
            train(args.data_dir, args.output_dir, seed=seed, target=target)
        elif args.command == "calibrate":
            recalibrate(args.data_dir, args.artifact_dir, target)
        else:
            evaluate(args.data_dir, args.artifact_dir, args.report_dir)
    except (FileNotFoundError, ClassifierArtifactError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
