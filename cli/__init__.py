"""The ``churn`` command line: the top floor, importing every layer below it."""
