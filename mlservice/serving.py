"""What this process answers with: the current model version, loaded when the process starts
and replaced within ML_MODEL_CHECK_INTERVAL of another one becoming current (a thread asks,
one cheap query each time). Before any version exists the baseline answers.

Nothing answers (503) while this process has not yet learnt which version is current (the
database did not answer) or could not load it (a corrupt row) and had none loaded before.
A version that fails to load later leaves the one loaded before answering; both are logged.
"""

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, connection

from mlservice import store
from mlservice.predictor import BaselinePredictor

log = logging.getLogger(__name__)
BASELINE = "baseline"


@dataclass(frozen=True)
class Loaded:
    """A predictor with what the API says about it."""

    predictor: object
    version: str
    version_id: int | None  # None: the baseline
    metrics: dict
    trained_at: datetime | None


class Unavailable(Exception):
    """Nothing can answer: the message says why."""


class Serving:
    def __init__(self):
        self.loaded = None
        self.problem = "the current model version is not known yet"
        self.failed_id = None  # a version that did not load: not read again until replaced

    def answering(self):
        """The Loaded that answers now; Unavailable when nothing can."""
        loaded = self.loaded
        if loaded is None:
            raise Unavailable(self.problem)
        return loaded

    def refresh(self):
        """Load the current version if it is not the one loaded (the baseline when none is)."""
        try:
            version_id = store.current_id()
            loaded = self.loaded
            if loaded and loaded.version_id == version_id:
                return
            if version_id is not None and version_id == self.failed_id:
                return
            self.loaded = load(version_id)
            log.info("serving model version %s", self.loaded.version)
        except store.CorruptModel as error:
            self.failed_id = version_id
            self.problem = str(error)
            kept = f"still serving {self.loaded.version}" if self.loaded else "nothing answers"
            log.error("%s: %s", error, kept)
        except DatabaseError as error:
            self.problem = f"the current model version could not be read: {error}"
            log.warning("could not check the current model version: %s", error)
        finally:
            connection.close()  # this thread's connection, back to the pool

    def watch(self, interval):
        while True:
            time.sleep(interval)
            try:
                self.refresh()
            except Exception:  # a bug must not end the watch: every later version would be missed
                log.exception("checking the current model version failed")


def load(version_id):
    if version_id is None:
        baseline = BaselinePredictor()
        return Loaded(baseline, BASELINE, None, store.plain(baseline.metrics), None)
    row, predictor = store.load(version_id)
    return Loaded(predictor, row.version, row.id, row.metrics, row.created_at)


SERVING = Serving()


def start():
    """In each worker process, once: load the current version now, then keep watching."""
    SERVING.refresh()
    interval = settings.ML_MODEL_CHECK_INTERVAL
    threading.Thread(target=SERVING.watch, args=(interval,), name="watch", daemon=True).start()
