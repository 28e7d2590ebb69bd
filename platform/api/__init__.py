"""The REST API (FastAPI): ``create_app`` builds it; routes live in ``routes/``."""
