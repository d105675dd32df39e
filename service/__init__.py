"""Real-time churn prediction API (Litestar): ``service.app:create_app`` / ``service.app:app``."""
