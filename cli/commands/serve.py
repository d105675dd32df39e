"""``churn serve``: the prediction API (Litestar) under uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from churn.settings import get_settings

app = typer.Typer()


@app.command("serve")
def serve_cmd(
    host: Annotated[str | None, typer.Option(help="Bind address (default: CHURN_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: CHURN_PORT).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: CHURN_WORKERS).")] = None,
) -> None:
    """Serve real-time predictions: POST /predict, /predict/batch; /live /ready /health /metrics; /schema."""
    import uvicorn

    settings = get_settings()
    n_workers = max(1, workers if workers is not None else settings.workers)
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port if port is not None else settings.port,
        workers=n_workers,
        access_log=False,  # the app writes one JSON access line per request itself
        proxy_headers=True,
        forwarded_allow_ips="*",
        lifespan="on",
        timeout_graceful_shutdown=10,
        log_level="info",
    )
