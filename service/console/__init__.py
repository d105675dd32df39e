"""The operator console: read-only HTML pages served by the API app at ``/console`` (``CHURN_CONSOLE=on``).

``controllers`` (thin routes, access guard), ``pages`` (what each page shows), ``queries`` (DuckDB over
the predictions Parquet), ``factors`` (feature names in plain words), ``charts`` (inline SVG);
templates under ``templates/``, the stylesheet under ``static/``. Nothing is loaded from the internet.
"""
