"""Where a study's results live: a folder on this machine, or a URI on object storage (``s3://``, ``gs://``,
``file://``), for a cluster without a shared filesystem.

How a URI works, and why this way:

- Tune writes the experiment to the URI itself: it gets the URI's path and an explicit ``storage_filesystem``
  built here, a picklable pyarrow FileSystem that it hands to every trial, so workers on other nodes upload their
  checkpoints to the same endpoint. The trials write their ``config.yaml`` and ``split.json`` through the same
  filesystem (:func:`put_folder`), so those arrive from any node too.
- Everything else in iqa-tune goes on working on a local folder, unchanged: the driver's records
  (``study.yaml``, ``trial_status.json``, ``tune.log``, the ASHA state), the reports, the confirmation's plan.
  For a URI that folder is a *mirror* (:func:`local_folder`: ``$IQA_TUNE_MIRROR``, default
  ``~/.cache/iqa-tune/storage/<scheme>/<bucket>/<path>``). The files the driver owns are pushed to the URI when the
  study starts, whenever a trial ends, every :data:`SYNC_PERIOD_S` seconds and at the end (:class:`Mirroring`),
  so a driver that is killed loses at most that much of its records; what Tune and the trials wrote at the URI is
  pulled into the mirror (all but the model state, ``best.pt``) while the study runs and before a report, a
  resume or a confirmation (:func:`pull`). Writing the records straight to the URI instead would put pyarrow
  calls into the records, the scheduler and every report (pandas, numpy and matplotlib all write to paths); with
  the mirror the URI stays in this module, and a plain folder goes through the same calls, which do nothing.
- Endpoint and credentials come from the standard variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``; Google's own for ``gs://``). The endpoint and the region go
  into the filesystem explicitly: pyarrow's ``S3FileSystem()`` does not record an endpoint it finds in the
  environment, so a copy unpickled on a worker would not carry it. Credentials never go into it, because Tune
  stores the filesystem in ``tuner.pkl`` at the URI: each process finds them in its own environment, and the
  driver forwards its variables to the trials through Ray's runtime environment (:func:`worker_env`).

No Ray here (``iqa_tune.study`` hands the filesystem to Tune); all I/O is ``pyarrow.fs``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import UserError
from .records import REPORT_DIR, STATE_FILE

SCHEMES = ("s3", "gs", "file")
# what the trials need from the driver's environment to reach the storage (forwarded only for a URI)
FORWARDED = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION",
             "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "GOOGLE_APPLICATION_CREDENTIALS")
NEVER_PULLED = (STATE_FILE,)  # a trial's model (best epoch, or its last halving rung): large, only a resumed trial reads it
SYNC_PERIOD_S = 30.0  # the driver's records reach the URI at least this often while a study runs
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_ALMOST = re.compile(r"^(s3|gs|gcs|file):(?!//)", re.IGNORECASE)  # s3:/bucket, s3:bucket: a URI mistyped
log = logging.getLogger("ray.tune.iqa_tune_storage")  # a child of ray.tune: lands in the study's tune.log


def is_uri(text: str | os.PathLike) -> bool:
    return bool(_URI.match(str(text)))


def _parts(text: str) -> tuple[str, str, list[str]]:
    """(scheme, bucket, path segments) of a URI, or a ValueError saying what is wrong with it."""
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"unsupported scheme '{scheme}://'; use s3://, gs://, file:// or a folder")
    if parts.query or parts.fragment:
        raise ValueError("a storage URI takes no '?' or '#' part (the endpoint goes in AWS_ENDPOINT_URL)")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError("file:// takes an absolute path: file:///path/to/folder")
    elif not parts.netloc:
        raise ValueError(f"no bucket: write {scheme}://BUCKET/PREFIX")
    elif "@" in parts.netloc or ":" in parts.netloc:
        raise ValueError("no credentials or port in the URI: they go in AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY "
                         "and AWS_ENDPOINT_URL")
    segments = parts.path.split("/")[1:]
    if segments and segments[-1] == "":
        segments.pop()  # one trailing slash
    if any(s in ("", ".", "..") for s in segments):
        raise ValueError("empty, '.' or '..' path segment")
    return scheme, "" if scheme == "file" else parts.netloc, segments


def uri_problem(text: str) -> str | None:
    """What is wrong with ``text`` as a storage URI; None when it is a good one, or a plain folder."""
    text = str(text)
    if _ALMOST.match(text):
        return "not a URI: write s3://BUCKET/PREFIX (two slashes), or a folder"
    if not is_uri(text):
        return None
    try:
        _parts(text)
    except ValueError as e:
        return str(e)
    return None


def mirror_root() -> Path:
    """Where the mirrors of URI experiments live on this machine."""
    root = os.environ.get("IQA_TUNE_MIRROR")
    if root:
        return Path(root).expanduser()
    return Path(os.environ.get("IQA_TUNE_CACHE", "~/.cache/iqa-tune")).expanduser() / "storage"


def local_folder(text: str | os.PathLike) -> Path:
    """The folder on this machine of the experiment at ``text``: the folder itself, or a URI's mirror. A pure
    function of the text and this process's environment, so an object that Tune pickled on one machine finds
    its folder on the machine that resumes (:class:`iqa_tune.study.StudyProgress`, the ASHA state)."""
    text = str(text)
    if not is_uri(text):
        return Path(text).expanduser()
    scheme, bucket, segments = _parts(text)
    return mirror_root().joinpath(scheme, *([bucket] if bucket else []), *segments)


@dataclass(frozen=True)
class Store:
    """An experiment folder on a pyarrow filesystem: where Tune and the trials write. Picklable (no secrets)."""

    uri: str
    fs: Any  # pyarrow.fs.FileSystem
    path: str  # the folder's path on ``fs``


@dataclass(frozen=True)
class Location:
    """Where an experiment lives (``remote``, or the folder ``local`` itself) and the folder on this machine
    that the driver and the reports read and write."""

    local: Path
    remote: Store | None = None

    def __str__(self) -> str:
        return self.remote.uri if self.remote else str(self.local)

    @property
    def name(self) -> str:
        return self.local.name

    @property
    def parent(self) -> str:
        """The storage the experiment is in (what ``--storage`` takes)."""
        return self.remote.uri.rsplit("/", 1)[0] if self.remote else str(self.local.parent)

    @property
    def store(self) -> Store:
        """Where trials write their files: the URI, or the folder through pyarrow's local filesystem."""
        if self.remote:
            return self.remote
        from pyarrow.fs import LocalFileSystem

        return Store(str(self.local), LocalFileSystem(), str(self.local))

    def child(self, name: str) -> Location:
        """An experiment inside this one (``confirm/``)."""
        r = self.remote
        return Location(self.local / name, Store(f"{r.uri}/{name}", r.fs, f"{r.path}/{name}") if r else None)


def _why(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:300]


ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")  # the service-specific one first, as AWS tools do


def endpoint_url() -> str | None:
    """The S3 endpoint the standard variables name, or None (AWS itself)."""
    return next((os.environ[v] for v in ENDPOINT_VARIABLES if os.environ.get(v)), None)


def _where() -> str:
    variable = next((v for v in ENDPOINT_VARIABLES if os.environ.get(v)), None)
    return f" (endpoint {os.environ[variable]}, from {variable})" if variable else ""


def _filesystem(scheme: str, bucket: str, uri: str):
    import pyarrow
    import pyarrow.fs as pafs

    try:
        if scheme == "file":
            return pafs.LocalFileSystem()
        if scheme == "gs":
            return pafs.GcsFileSystem()  # credentials: Google's default chain, on each node
        endpoint = endpoint_url()
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if not endpoint and not region:  # AWS itself: a bucket answers only in its own region
            region = pafs.resolve_s3_region(bucket)
        return pafs.S3FileSystem(endpoint_override=endpoint, region=region)
    except (OSError, ValueError, pyarrow.ArrowException) as e:
        raise UserError(f"{uri}: cannot reach the storage{_where() if scheme == 's3' else ''}: {_why(e)}") from None


def location(text: str | os.PathLike, name: str | None = None) -> Location:
    """The experiment at ``text`` (a folder or a URI), or at ``text/name`` when ``name`` is given (``text`` is
    then the storage, ``study.storage``). A URI gets its filesystem; nothing is read or created yet."""
    text = str(text)
    problem = uri_problem(text)
    if problem:
        raise UserError(f"{text}: {problem}")
    if not is_uri(text):
        folder = Path(text).expanduser()
        return Location((folder / name if name else folder).resolve())
    scheme, bucket, segments = _parts(text)
    segments = segments + ([name] if name else [])
    if not segments:
        raise UserError(f"{text}: name the experiment's folder: {scheme}://{bucket}/PREFIX/NAME")
    uri = f"{scheme}://{bucket}/" + "/".join(segments)
    path = "/".join([bucket, *segments]) if bucket else "/" + "/".join(segments)
    return Location(local_folder(uri), Store(uri, _filesystem(scheme, bucket, uri), path))


# ----------------------------------------------------------------------------------------------------------------
# reading the URI


def check(loc: Location) -> None:
    """The URI's bucket exists and answers (nothing to check for a folder, or a ``file://`` URI)."""
    s = loc.remote
    if s is None or s.fs.type_name == "local":
        return
    import pyarrow.fs as pafs

    bucket = s.path.split("/", 1)[0]
    try:
        info = s.fs.get_file_info(bucket)
    except OSError as e:
        raise UserError(f"{s.uri}: cannot reach the storage{_where()}: {_why(e)}") from None
    if info.type == pafs.FileType.NotFound:
        raise UserError(f"{s.uri}: there is no bucket '{bucket}'{_where()}; create it first (iqa-tune never "
                        "creates buckets)")


def exists(loc: Location) -> bool:
    """Whether the experiment's folder exists (at its URI, for a URI)."""
    if loc.remote is None:
        return loc.local.exists()
    import pyarrow.fs as pafs

    try:
        return loc.remote.fs.get_file_info(loc.remote.path).type != pafs.FileType.NotFound
    except OSError as e:
        raise UserError(f"{loc.remote.uri}: cannot read it: {_why(e)}") from None


def _listing(s: Store) -> dict[str, Any]:
    """The files under the experiment's folder at the URI, by path relative to it."""
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(s.path, recursive=True, allow_not_found=True)
    return {info.path[len(s.path):].lstrip("/"): info for info in s.fs.get_file_info(selector)
            if info.type == pafs.FileType.File}


def _skipped(rel: str, skip: Collection[str]) -> bool:
    return rel.split("/", 1)[0] in skip or rel.rsplit("/", 1)[-1] in NEVER_PULLED


def _same(path: Path, info) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_size == info.size and (info.mtime_ns is None or st.st_mtime_ns == info.mtime_ns)


def _download(fs, info, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.pull")
    with fs.open_input_stream(info.path) as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    os.replace(tmp, target)  # a report reading the mirror meanwhile sees the old file or the new one
    if info.mtime_ns is not None:
        os.utime(target, ns=(info.mtime_ns, info.mtime_ns))  # the next pull compares against it


def pull(loc: Location, skip: Collection[str] = (), prune: bool = False) -> int:
    """Copy into the mirror what the URI holds: files new or changed since the last pull, never the model state
    (``best.pt``). ``skip``: top-level names the driver owns (while it runs, its copy is the newer one).
    ``prune``: also remove the mirror's files that the URI no longer holds (checkpoints Tune replaced). Returns
    the number of files copied; nothing to do for a folder."""
    s = loc.remote
    if s is None:
        return 0
    remote = _listing(s)
    copied = 0
    for rel, info in remote.items():
        if not _skipped(rel, skip) and not _same(loc.local / rel, info):
            _download(s.fs, info, loc.local / rel)
            copied += 1
    if prune and loc.local.is_dir():
        for path in sorted(loc.local.rglob("*"), reverse=True):  # files before the folders that hold them
            rel = path.relative_to(loc.local).as_posix()
            if _skipped(rel, skip):
                continue
            if path.is_file() and rel not in remote:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    return copied


def pull_file(loc: Location, rel: str) -> Path:
    """One file of the experiment (``rel``, relative to it) into the mirror, even a model state that :func:`pull`
    leaves out (``iqa-tune predict`` needs one trial's); returns its local path. For a folder, the file itself."""
    import pyarrow.fs as pafs

    target = loc.local / rel
    s = loc.remote
    if s is None:
        return target
    try:
        info = s.fs.get_file_info(f"{s.path}/{rel}")
        if info.type != pafs.FileType.File:
            raise UserError(f"{s.uri}/{rel}: not found")
        if not _same(target, info):
            _download(s.fs, info, target)
    except OSError as e:
        raise UserError(f"{s.uri}/{rel}: cannot copy it to {target}: {_why(e)}") from None
    return target


# ----------------------------------------------------------------------------------------------------------------
# writing to the URI


def _put(s: Store, local: Path, rel: str) -> None:
    target = f"{s.path}/{rel}"
    if s.fs.type_name == "local":  # object stores have no folders to make
        s.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
    with open(local, "rb") as src, s.fs.open_output_stream(target) as out:
        shutil.copyfileobj(src, out, 1 << 20)


def push(loc: Location, names: Collection[str], pushed: dict[str, tuple[int, int]] | None = None) -> int:
    """Copy the mirror's ``names`` (top-level files or folders) to the URI: with ``pushed`` (updated here), only
    those changed since. Files being written (``*.tmp``) wait for the next push. Returns the number copied."""
    s = loc.remote
    if s is None:
        return 0
    copied = 0
    for name in names:
        base = loc.local / name
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else []
        for path in files:
            if path.name.endswith(".tmp"):
                continue
            st = path.stat()
            state = (st.st_size, st.st_mtime_ns)
            if pushed is not None and pushed.get(str(path)) == state:
                continue
            _put(s, path, path.relative_to(loc.local).as_posix())
            if pushed is not None:
                pushed[str(path)] = state
            copied += 1
    return copied


def put_folder(store: Store, folder: Path, into: str) -> None:
    """Copy the files of the local ``folder`` into ``into`` (relative) in the experiment at ``store``."""
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        _put(store, path, f"{into}/{path.name}")


def holds(store: Store, rel: str) -> bool:
    import pyarrow.fs as pafs

    return store.fs.get_file_info(f"{store.path}/{rel}").type == pafs.FileType.File


def begin(loc: Location, resume: bool) -> None:
    """Ready a URI experiment's mirror for its driver: emptied for a new study (an earlier experiment at the same
    URI may have left files in it), the URI's copy for one to continue. Nothing to do for a folder."""
    if loc.remote is None:
        return
    if not resume:
        shutil.rmtree(loc.local, ignore_errors=True)
        return
    try:
        pull(loc, prune=True)
    except OSError as e:
        raise UserError(f"{loc}: cannot copy it to {loc.local}: {_why(e)}") from None


def publish(loc: Location, folder: Path) -> str | None:
    """Copy a report ``folder`` beside the experiment at its URI (``URI/report``); returns that URI, or None for
    a folder (its report is written beside it already)."""
    if loc.remote is None:
        return None
    target = f"{loc.remote.uri}/{REPORT_DIR}"
    try:
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.endswith(".tmp")):
            _put(loc.remote, path, f"{REPORT_DIR}/{path.relative_to(folder).as_posix()}")
    except OSError as e:
        raise UserError(f"{target}: cannot copy the report there{_where()}: {_why(e)}") from None
    return target


def discard(loc: Location) -> None:
    """Remove what a start that failed had created: the folder (a URI's mirror) and the experiment at the URI."""
    shutil.rmtree(loc.local, ignore_errors=True)
    if loc.remote is not None:
        try:
            loc.remote.fs.delete_dir(loc.remote.path)
        except (OSError, FileNotFoundError) as e:
            log.warning("could not remove %s: %s", loc.remote.uri, _why(e))


def fetch(text: str | os.PathLike) -> Location:
    """An experiment to read (``iqa-tune report``, ``iqa-tune confirm``): a folder as it is; a URI checked and
    pulled into its mirror, which then holds what the URI holds (all but the model state)."""
    loc = location(text)
    if loc.remote is None:
        return loc
    check(loc)
    if not exists(loc):
        raise UserError(f"{loc}: no experiment there{_where()}")
    try:
        pull(loc, prune=True)
    except OSError as e:
        raise UserError(f"{loc}: cannot copy it to {loc.local}: {_why(e)}") from None
    return loc


def worker_env(loc: Location) -> dict[str, str]:
    """The variables the trials need to reach a URI (from the driver's environment); none for a folder."""
    return {k: os.environ[k] for k in FORWARDED if k in os.environ} if loc.remote else {}


# ----------------------------------------------------------------------------------------------------------------
# while a driver runs


class Mirroring:
    """Keeps a URI experiment and its mirror in step while a driver runs it: on a background thread, every
    ``period_s`` seconds and whenever :meth:`poke` asks (a trial ended), the driver's own files (``owned``:
    top-level names in the mirror) are pushed and the trials' files pulled; :meth:`close` does a last round.
    For a folder every call does nothing."""

    def __init__(self, loc: Location, owned: Collection[str], period_s: float = SYNC_PERIOD_S):
        self.loc, self.owned, self.period_s = loc, tuple(owned), period_s
        self._pushed: dict[str, tuple[int, int]] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0  # completed background rounds (for tests and the curious)

    def start(self) -> None:
        """First push, here and now: a URI that cannot be written is refused before Ray starts."""
        if self.loc.remote is None:
            return
        try:
            push(self.loc, self.owned, self._pushed)
        except OSError as e:
            raise UserError(f"{self.loc}: cannot write there{_where()}: {_why(e)}") from None
        self._thread = threading.Thread(target=self._loop, name="iqa-tune-mirror", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        self._wake.set()

    def _round(self, final: bool = False) -> None:
        pull(self.loc, skip=self.owned, prune=final)
        push(self.loc, self.owned, self._pushed)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.period_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._round()
                self.rounds += 1
            except Exception:  # a network hiccup: the next round tries again, the study goes on
                log.exception("copying between %s and %s failed; trying again later", self.loc, self.loc.local)

    def close(self, last_round: bool = True) -> str | None:
        """Stop the thread, then (``last_round``) a last round: the mirror gets every trial's files, the URI the
        driver's. Returns what went wrong (also logged), or None."""
        if self.loc.remote is None:
            return None
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=300)
        if not last_round:
            return None
        try:
            self._round(final=True)
        except Exception as e:
            log.exception("the last copy between %s and %s failed", self.loc, self.loc.local)
            return f"the last copy between {self.loc} and {self.loc.local} failed: {_why(e)}"
        return None
