"""HTTP/JSON beside gRPC (Starlette on uvicorn): the operations, the controllers' verdicts, SSE,
metrics and the risk dashboard."""

from .app import create_app
from .server import HttpServer

__all__ = ["HttpServer", "create_app"]
