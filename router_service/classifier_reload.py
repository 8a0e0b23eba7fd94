"""Hot reload of the complexity classifier while requests keep flowing.

The new artifact loads in a worker thread. Only a successful load replaces the
router's classifier, in one attribute assignment, so a request that already
read the old classifier finishes with it. Reloads come from the ReloadClassifier
RPC or from `ArtifactWatcher`, which polls the configured artifact folder.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from router_service.errors import ClassifierRejectedError, InvalidRequestError
from router_service.routing import Router, TierClassifier

logger = logging.getLogger(__name__)

ClassifierLoader = Callable[[Path | None], TierClassifier]


@dataclass(frozen=True)
class ReloadResult:
    """The classifier version now serving and the version it replaced."""

    version: str
    previous_version: str


def artifact_dir_from_request(artifact_dir: str) -> Path | None:
    """Convert the request's `artifact_dir` to a path, or None when it is empty.

    Raises:
        InvalidRequestError: the path is not absolute or is not a directory.
    """
    if not artifact_dir:
        return None
    fix = "Send the absolute path of an artifact folder, or leave it empty."
    if "\x00" in artifact_dir or not Path(artifact_dir).is_absolute():
        raise InvalidRequestError("artifact_dir", "must be an absolute path", fix)
    path = Path(artifact_dir)
    if not path.is_dir():
        raise InvalidRequestError(
            "artifact_dir", "must be an existing directory on the router host", fix
        )
    return path


class ClassifierReloader:
    """Loads classifier artifacts and swaps them into a router, one at a time."""

    def __init__(
        self,
        router: Router,
        loader: ClassifierLoader,
        configured_dir: Path | None,
    ) -> None:
        self._router = router
        self._loader = loader
        self._configured_dir = configured_dir
        # Serialized so that previous_version is the one each reload replaced.
        self._lock = asyncio.Lock()

    async def reload(self, artifact_dir: str) -> ReloadResult:
        """Load the artifact in `artifact_dir` (empty: the configured folder).

        Raises:
            InvalidRequestError: `artifact_dir` is not an absolute directory path.
            ClassifierRejectedError: the artifact failed its checks, such as a
                missing file, a model file that does not match its manifest or
                another feature version. The current classifier stays.
            NotReadyError: the first classifier is still loading.
        """
        # Imported here because the classifier module imports scikit-learn, which
        # the server imports only in the loader's worker thread.
        from router_service.classifier import ClassifierArtifactError

        requested = artifact_dir_from_request(artifact_dir)
        directory = requested or self._configured_dir
        async with self._lock:
            previous = self._router.classifier
            try:
                classifier = await asyncio.to_thread(self._loader, directory)
            except ClassifierArtifactError as error:
                logger.warning(
                    "classifier_reload_failed",
                    extra={"version": previous.version, "error": str(error)},
                )
                raise ClassifierRejectedError(
                    f"classifier artifact rejected, so version {previous.version} "
                    f"keeps serving: {error}"
                ) from error
            self._router.attach_classifier(classifier)
        logger.info(
            "classifier_reloaded",
            extra={"version": classifier.version, "previous_version": previous.version},
        )
        return ReloadResult(classifier.version, previous.version)


def artifact_fingerprint(directory: Path) -> str | None:
    """Hash the manifest's bytes and the model file's size and mtime.

    Returns None while the folder or its manifest is missing, as during the two
    renames with which training swaps in a new artifact. The model file's stat is
    part of the fingerprint so that a manifest copied before its model file is
    seen again once the model file lands.
    """
    # Imported here for the same reason as in ClassifierReloader.reload.
    from router_service.classifier import MANIFEST_FILE, MODEL_FILE

    try:
        digest = hashlib.sha256((directory / MANIFEST_FILE).read_bytes())
        model = (directory / MODEL_FILE).stat()
    except OSError:
        return None
    digest.update(f"{model.st_size}:{model.st_mtime_ns}".encode())
    return digest.hexdigest()


class ArtifactWatcher:
    """Poller that reloads the configured artifact folder when its files change.

    The folder is polled every `interval_s` seconds. A change triggers the same
    reload as the ReloadClassifier RPC with an empty `artifact_dir`, so the same
    checks apply and a rejected artifact leaves the current one serving. A
    rejected artifact is not retried until the folder changes again.
    """

    def __init__(
        self, reloader: ClassifierReloader, directory: Path, interval_s: float
    ) -> None:
        self._reloader = reloader
        self._directory = directory
        self._interval_s = interval_s

    async def run(self) -> None:
        """Poll until cancelled."""
        seen = await asyncio.to_thread(artifact_fingerprint, self._directory)
        while True:
            await asyncio.sleep(self._interval_s)
            current = await asyncio.to_thread(artifact_fingerprint, self._directory)
            if current is None or current == seen:
                continue
            seen = current
            logger.info(
                "classifier_artifact_changed", extra={"path": str(self._directory)}
            )
            try:
                await self._reloader.reload("")
            except ClassifierRejectedError:
                # The reloader has logged classifier_reload_failed with the reason.
                continue
            except Exception:
                # An unexpected error must not end the watch; the old one serves.
                logger.exception(
                    "classifier_watch_failed", extra={"path": str(self._directory)}
                )
