"""`manage.py train_model [--lookback-days N] [--save]`: train the latency model from a terminal.

A progress bar while it trains, then the held-out figures of the model beside both baselines'.
Nothing is stored unless `--save`: then the model becomes a version (mlservice.store), the
current one if it beats the better baseline, as a training job's does.
"""

import math
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from mlservice import store
from mlservice.contract import MAX_LOOKBACK_DAYS
from mlservice.training import BASELINES, HELD_OUT, train


class Command(BaseCommand):
    help = "Train the latency model on the collected history and print its held-out figures."

    def add_arguments(self, parser):
        kept = max(1, math.ceil(settings.RAW_RETENTION / timedelta(days=1)))
        parser.add_argument("--lookback-days", type=int, default=kept,
                            help=f"days of history to learn from (default {kept}: all the raw "
                                 "intervals RAW_RETENTION keeps)")
        parser.add_argument("--save", action="store_true",
                            help="store the model as a version, the current one if accepted")

    def handle(self, *args, lookback_days, save, **options):
        if not 1 <= lookback_days <= MAX_LOOKBACK_DAYS:  # a date before year 1 does not exist
            raise CommandError(f"--lookback-days must be a whole number 1 to {MAX_LOOKBACK_DAYS}")
        if timedelta(days=lookback_days) > settings.RAW_RETENTION:
            self.stdout.write(f"Raw intervals are kept {settings.RAW_RETENTION}: the examples "
                              "reach back that far at most.")
        with progress_bar() as progress:
            outcome = train(lookback_days, progress)
        if outcome.predictor is None:
            raise CommandError(outcome.reason)
        for line in metrics_table(outcome.metrics):
            self.stdout.write(line)
        self.stdout.write(outcome.reason)
        if save:
            version = store.save(outcome.predictor, outcome.metrics, current=outcome.accepted)
            self.stdout.write(f"Saved as version {version.version}, " + (
                "now the current one." if outcome.accepted
                else "not current: the service keeps answering as before."
            ))


@contextmanager
def progress_bar(disable=False):
    """A progress(step, fraction) callback for train() that moves a tqdm bar (on stderr)."""
    bar = tqdm(total=100, disable=disable, bar_format="{desc:<32}{bar}{percentage:3.0f}%")
    with bar:
        def progress(step, fraction):
            bar.set_description_str(step)
            bar.update(round(fraction * 100) - bar.n)

        yield progress


def metrics_table(metrics):
    """The lines of a table of the held-out figures: the model, then each baseline."""
    lines = [
        f"{metrics['samples']:,} examples, {metrics['fitted']:,} fitted; held out the newest "
        f"{HELD_OUT:.0%} of target times: {metrics['held_out']:,} examples",
        f"{'held-out figures':<20}{'MAE ms':>12}{'MdAPE':>10}{'80 % interval holds':>22}",
    ]
    for prefix, label in [("", "model"), *((f"{name}_", label) for name, label in
                                           BASELINES.items())]:
        lines.append(
            f"{label:<20}{metrics[f'{prefix}mae_ms']:>12.3f}{metrics[f'{prefix}mdape']:>10.1%}"
            f"{metrics[f'{prefix}coverage_80']:>22.1%}"
        )
    return lines
