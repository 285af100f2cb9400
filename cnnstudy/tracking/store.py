"""The MLflow store: its URI, the client, one experiment per study, and the tag names.

Every MLflow write and read of cnnstudy lives in this package (``tracking``); the filter
strings that find a sweep's runs are built here and nowhere else.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from urllib.parse import urlparse

import mlflow
from mlflow.tracking import MlflowClient

# mlflow sets its own logger up at import; keep its migration chatter off the terminal.
for _name in ("mlflow", "alembic"):
    logging.getLogger(_name).setLevel(logging.WARNING)

DEFAULT_URI = "sqlite:///mlflow.db"
KIND, STAGE, KEY, WORKER = (
    "cnnstudy.kind",
    "cnnstudy.stage",
    "cnnstudy.trial_key",
    "cnnstudy.worker",
)
FINGERPRINT, SWEEP_ID = "cnnstudy.fingerprint", "cnnstudy.sweep_id"
PARENT = "mlflow.parentRunId"


class StoreError(RuntimeError):
    """The tracking store cannot be read: the message names it and says how to start afresh."""


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the working directory), or None."""
    if urlparse(uri).scheme != "sqlite":
        return None
    path = uri.removeprefix("sqlite://").split("?", 1)[0]
    # sqlite:///rel.db -> "/rel.db" means rel.db; sqlite:////abs.db -> "//abs.db" means /abs.db
    path = path[1:] if path.startswith("/") else path
    return None if path in ("", ":memory:") else Path(path)


def _fresh_start(uri: str, path: Path, what: str) -> StoreError:
    return StoreError(
        f"the MLflow tracking store {uri} ({path.resolve()}) {what}. Nothing was changed. "
        f"To start a fresh store, move it aside with `mv {path} {path}.broken`; the next "
        "`make sweep` creates a fresh one (the moved copy keeps whatever it held)."
    )


def check_store(uri: str | None = None) -> None:
    """Fail early, naming the file, if a local sqlite store exists but cannot be read.

    Cheap: opens the file read-only and reads its header and schema, which is where
    garbage or a damaged file shows. A store that does not exist yet is fine here (a sweep
    creates it); a locked one is left to MLflow's retries; remote stores are not checked.
    """
    uri = uri or tracking_uri()
    path = sqlite_path(uri)
    if path is None or not (path.exists() or path.is_symlink()):
        return
    if path.is_dir():
        raise _fresh_start(uri, path, "is a directory, not an SQLite database file")
    if not os.access(path, os.R_OK) or not os.access(path.parent, os.R_OK | os.X_OK):
        raise StoreError(
            f"the MLflow tracking store {uri} ({path.resolve()}) cannot be read: permission "
            f"denied for user {user()}. Fix its permissions (ls -l {path}; chmod u+rw {path}), "
            f"or point MLFLOW_TRACKING_URI at another store, e.g. sqlite:///{path.stem}-2.db."
        )
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            con.execute("PRAGMA schema_version").fetchone()  # the header
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the schema's pages
        finally:
            con.close()
    except sqlite3.OperationalError:  # busy or locked (a sweep is writing): not damage
        return
    except sqlite3.DatabaseError as err:  # "file is not a database", "... malformed"
        raise _fresh_start(uri, path, f"is damaged or not an SQLite database ({err})") from None


def user() -> str:
    """The login name (MLflow's ``mlflow.user``)."""
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (a bare container)
        return str(os.getuid())


def get_client(*, create: bool = True) -> MlflowClient:
    """The client over the tracking store, checked first (``StoreError`` if unreadable).

    ``create=False`` is for the read paths: a local sqlite store that does not exist yet
    raises ``LookupError`` instead of being created empty.
    """
    uri = tracking_uri()
    check_store(uri)
    path = sqlite_path(uri)
    if not create and path is not None and not path.exists():
        raise LookupError(
            f"there is no MLflow store yet: {uri} ({path.resolve()}) does not exist. "
            "Run `make sweep` (or `cnnstudy sweep <study>`) first; it creates the store."
        )
    mlflow.set_tracking_uri(uri)
    try:
        return MlflowClient(uri)  # opens the store: MLflow reads its tables here
    except Exception as err:
        damage = _sqlite_damage(err)
        if path is None or damage is None:
            raise
        raise _fresh_start(uri, path, f"is damaged or not an SQLite database ({damage})") from None


def _sqlite_damage(err: BaseException) -> sqlite3.DatabaseError | None:
    """The sqlite3 error behind a (SQLAlchemy- or MLflow-wrapped) error, if it says the file
    is damaged; None for anything else (a locked database is not damage)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, sqlite3.DatabaseError) and not isinstance(e, sqlite3.OperationalError):
            return e
        todo += [getattr(e, "orig", None), e.__cause__, e.__context__]
    return None


def _artifact_root(uri: str) -> str | None:
    """Next to a local sqlite store, artifacts go to ./mlartifacts (gitignored)."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None  # a tracking server decides where artifacts live
    db = Path(uri.removeprefix("sqlite:///")).resolve()
    return (db.parent / "mlartifacts").as_uri()


# MLflow 3's UI opens an experiment on its GenAI tracing view unless told it is model training.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def ensure_experiment(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = _artifact_root(tracking_uri())
    return client.create_experiment(
        name,
        artifact_location=f"{root}/{name}" if root else None,
        tags=dict([EXPERIMENT_KIND]),
    )
