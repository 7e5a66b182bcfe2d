"""`mbret serve`: an HTTP search service over mbret indexes (FastAPI + uvicorn, the `serve` extra).

from mbret.serve import ServeConfig, create_app
app = create_app(ServeConfig(indexes=("runs/scifact-mini",)))  # then: uvicorn.run(app)
"""

from mbret.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def __getattr__(name: str):  # noqa: ANN202 - fastapi is imported only when the app is made
    if name == "create_app":
        from mbret.serve.app import create_app

        return create_app
    raise AttributeError(name)
