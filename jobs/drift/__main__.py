"""``python -m jobs.drift --date YYYY-MM-DD [--exit-zero]`` -- the drift job (isolated env).

Compares ``predictions/date=D/scored_features.parquet`` with the production model's
``reference.parquet`` and writes ``drift/date=D/{report.json,report.html,metrics.prom}`` and
``drift/latest.json``. Settings come from ``CHURN_*`` variables (``churn drift`` passes them).

Exit status: 0 no drift, 3 drift detected (0 with ``--exit-zero``), 1 error (one line on stderr;
on missing/unreadable inputs nothing is written and earlier reports stay as they were).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_DRIFT = 3


DATE_KEYWORDS = {"today": 0, "yesterday": 1}
"""Words ``--date`` accepts besides ``YYYY-MM-DD``: days before today's UTC date (as ``churn``)."""


def _date(value: str) -> dt.date:
    word = value.strip().lower()
    if word in DATE_KEYWORDS:
        return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=DATE_KEYWORDS[word])
    try:
        return dt.date.fromisoformat(word)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, today or yesterday, got {value!r}") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors exit 1 like every other error, not 2
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"error: {message}\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = _Parser(
        prog="python -m jobs.drift",
        description="Compare a day's scored features with the production model's reference sample.",
    )
    p.add_argument(
        "--date", type=_date, default=None, help="scoring date YYYY-MM-DD, today or yesterday (default: today UTC)"
    )
    p.add_argument("--exit-zero", action="store_true", help="exit 0 even when drift is detected")
    args = p.parse_args(argv)
    if args.date is None:
        args.date = dt.datetime.now(dt.UTC).date()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from churn.settings import Settings
    from jobs.drift.detect import DriftInputError, NoProductionModelYet, analyse, load_inputs
    from jobs.drift.report import write_outputs

    t0 = time.perf_counter()
    try:
        settings = Settings.from_env()
        inputs = load_inputs(settings, args.date)
        result = analyse(
            inputs,
            psi_warn=settings.psi_warn,
            psi_alert=settings.psi_alert,
            p_value=settings.drift_p_value,
            # Optional settings (fall back to the documented defaults if the field is absent).
            correction=getattr(settings, "drift_correction", "bonferroni"),
            n_bins=getattr(settings, "psi_bins", 10),
        )
        out_dir, report, latest_updated = write_outputs(settings, result)
    except NoProductionModelYet as exc:
        if not args.exit_zero:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        # In the daily chain a first install has no model yet: the retrain step after this trains it.
        print(f"drift {args.date}: skipped: {exc}")
        return EXIT_OK
    except DriftInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR

    v = report["verdict"]
    status = "DRIFT DETECTED" if v["drift_detected"] else "no drift"
    print(
        f"drift {args.date}: {status} | model {report['model_version']} | "
        f"{report['rows']['current']:,} rows vs {report['rows']['reference']:,} reference | "
        f"prediction PSI {report['prediction']['psi']:.3f} | {time.perf_counter() - t0:.1f}s"
    )
    print(f"  {v['reason']}")
    print(
        f"  wrote {out_dir}/ (report.json, report.html, metrics.prom)"
        + ("" if latest_updated else "; latest.json kept (it holds a newer date)")
    )
    if v["drift_detected"] and not args.exit_zero:
        return EXIT_DRIFT
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
