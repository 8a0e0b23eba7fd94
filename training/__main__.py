"""Command line: `python -m training train` and `python -m training evaluate`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from router_service.classifier import default_artifact_dir

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


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command and return the process exit code."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    # Imported here so that --help stays fast.
    from router_service.classifier import ClassifierArtifactError
    from training.evaluate import evaluate
    from training.train import DEFAULT_SEED, train

    try:
        if args.command == "train":
            seed = DEFAULT_SEED if args.seed is None else args.seed
            train(args.data_dir, args.output_dir, seed=seed)
        else:
            evaluate(args.data_dir, args.artifact_dir, args.report_dir)
    except (FileNotFoundError, ClassifierArtifactError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
