"""Results on object storage (``iqa_tune.storage``): URIs, the local mirror, and a real S3 API on the loopback
(moto's server, in this process): bad storage refused as a user meets it, and a tiny study stored at
``s3://`` that is interrupted, resumed from another mirror (as another machine would) and reported from the URI."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pyarrow.fs as pafs
import pytest
import yaml

from iqa_tune import storage

from .conftest import ROOT, cli
from .test_study import TINY, write_space

BUCKET = "iqa-results"


@pytest.fixture(scope="module")
def s3():
    """An S3 endpoint on the loopback with one bucket, and the standard variables that point at it (set in this
    process for the module; each CLI run gets them by inheritance)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    fs = pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], allow_bucket_creation=True)
    fs.create_dir(BUCKET)
    try:
        yield fs
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def keys(fs, path: str) -> set[str]:
    """The files under ``path`` in the bucket, relative to it."""
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return {i.path[len(path) + 1:] for i in infos if i.type == pafs.FileType.File}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------------------------
# URIs and the mirror, without Ray


@pytest.mark.parametrize("text, problem", [
    ("http://host/results", "unsupported scheme 'http://'"),
    ("s3:///results", "no bucket"),
    ("s3:/bucket/results", "not a URI"),
    ("s3://bucket/results?endpoint_override=x", "no '?' or '#'"),
    ("s3://key:secret@bucket/results", "no credentials or port"),
    ("file://relative/results", "absolute path"),
    ("s3://bucket/a//b", "empty, '.' or '..'"),
    ("gs://bucket/../b", "empty, '.' or '..'"),
    ("ray_results", None), ("/abs/results", None), ("s3://bucket/prefix/", None), ("gs://bucket", None),
    ("file:///tmp/results", None),
])
def test_what_a_storage_uri_may_be(text, problem):
    got = storage.uri_problem(text)
    assert (got is None) if problem is None else (problem in got), got


def test_a_uri_has_a_mirror_here_and_a_filesystem_with_its_endpoint_and_no_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("IQA_TUNE_MIRROR", str(tmp_path / "mirror"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "never-pickled")
    loc = storage.location("s3://bkt/studies/", "s1")
    assert (str(loc), loc.parent, loc.name) == ("s3://bkt/studies/s1", "s3://bkt/studies", "s1")
    assert loc.remote.path == "bkt/studies/s1" and loc.local == tmp_path / "mirror/s3/bkt/studies/s1"
    assert loc.child("confirm").local == storage.local_folder("s3://bkt/studies/s1/confirm")
    assert str(loc.child("confirm")) == "s3://bkt/studies/s1/confirm"
    # Tune pickles the filesystem into tuner.pkl at the URI and into every trial: the endpoint goes along (a worker
    # need not have the variable), the credentials never do
    blob = pickle.dumps(loc.store)
    assert b"never-pickled" not in blob and b"AKIDEXAMPLE" not in blob
    options = pickle.loads(blob).fs.__reduce__()[1][0]
    assert options["endpoint_override"] == "http://127.0.0.1:9" and options["region"] == "eu-west-1"
    assert storage.worker_env(loc)["AWS_SECRET_ACCESS_KEY"] == "never-pickled"
    # a folder is itself, and its trials write there through pyarrow's local filesystem
    folder = storage.location(tmp_path / "results", "s1")
    assert folder.remote is None and folder.local == tmp_path / "results/s1" and str(folder) == str(folder.local)
    assert folder.store.fs.type_name == "local" and storage.worker_env(folder) == {}
    file_uri = storage.location(f"file://{tmp_path}/remote", "s1")
    assert file_uri.remote.path == f"{tmp_path}/remote/s1"
    assert file_uri.local == tmp_path / "mirror/file" / str(tmp_path).lstrip("/") / "remote/s1"


def _mirror_round_trip(loc: storage.Location, write_remote) -> None:
    """Pull copies all but the model state, and only what changed; push copies the driver's files, only what
    changed; a pull that skips them leaves them; prune drops what the URI no longer holds."""
    write_remote("t1/result.json", b'{"epoch": 1}\n')
    write_remote("t1/checkpoint_000001/best.pt", b"model" * 100)
    write_remote("t1/checkpoint_000001/test_predictions.npz", b"npz")
    assert storage.exists(loc)
    assert storage.pull(loc) == 2 and storage.pull(loc) == 0
    assert (loc.local / "t1/result.json").read_bytes() == b'{"epoch": 1}\n'
    assert not (loc.local / "t1/checkpoint_000001/best.pt").exists()
    write_remote("t1/result.json", b'{"epoch": 1}\n{"epoch": 2}\n')
    assert storage.pull(loc) == 1 and (loc.local / "t1/result.json").read_bytes().count(b"\n") == 2

    (loc.local / "study.yaml").write_text("metric: val_srcc\n")
    (loc.local / "report").mkdir()
    (loc.local / "report/index.html").write_text("<html>")
    (loc.local / "report/.index.html.tmp").write_text("half")  # a write under way: not copied
    pushed = {}
    owned = ["study.yaml", "report", "tune.log"]
    assert storage.push(loc, owned, pushed) == 2 and storage.push(loc, owned, pushed) == 0
    (loc.local / "study.yaml").write_text("metric: val_plcc\n")
    assert storage.push(loc, owned, pushed) == 1
    (loc.local / "t1/stale.txt").write_text("gone at the URI")
    storage.pull(loc, skip=owned, prune=True)
    assert not (loc.local / "t1/stale.txt").exists() and (loc.local / "report/index.html").exists()


def test_a_file_uri_goes_through_the_same_mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("IQA_TUNE_MIRROR", str(tmp_path / "mirror"))
    loc = storage.location(f"file://{tmp_path}/remote/exp")

    def write_remote(rel, data):
        (tmp_path / "remote/exp" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "remote/exp" / rel).write_bytes(data)

    _mirror_round_trip(loc, write_remote)
    assert (tmp_path / "remote/exp/study.yaml").read_text() == "metric: val_plcc\n"
    assert (tmp_path / "remote/exp/report/index.html").exists()
    assert not (tmp_path / "remote/exp/report/.index.html.tmp").exists()


def test_the_mirror_against_s3(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("IQA_TUNE_MIRROR", str(tmp_path / "mirror"))
    loc = storage.location(f"s3://{BUCKET}/unit/exp")
    storage.check(loc)

    def write_remote(rel, data):
        with s3.open_output_stream(f"{BUCKET}/unit/exp/{rel}") as f:
            f.write(data)

    _mirror_round_trip(loc, write_remote)
    assert keys(s3, f"{BUCKET}/unit/exp") >= {"study.yaml", "report/index.html", "t1/result.json"}
    assert "report/.index.html.tmp" not in keys(s3, f"{BUCKET}/unit/exp")
    storage.discard(loc)
    assert not keys(s3, f"{BUCKET}/unit/exp") and not loc.local.exists()


# ----------------------------------------------------------------------------------------------------------------
# bad storage, through the CLI


@pytest.mark.parametrize("case", ["missing bucket", "unreachable endpoint", "malformed", "unsupported scheme",
                                  "nothing to resume"])
def test_run_refuses_bad_storage_naming_the_uri_and_leaves_nothing(s3, tmp_path, case):
    storage_uri, env, said = {
        "missing bucket": ("s3://no-such-bucket/studies", {}, "there is no bucket 'no-such-bucket'"),
        "unreachable endpoint": (f"s3://{BUCKET}/studies", {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}"},
                                 "cannot reach the storage (endpoint http://127.0.0.1:"),
        "malformed": (f"s3:/{BUCKET}/studies", {}, "not a URI"),
        "unsupported scheme": ("ftp://host/studies", {}, "unsupported scheme 'ftp://'"),
        "nothing to resume": (f"s3://{BUCKET}/studies", {}, "--resume: no interrupted study at "
                                                            f"s3://{BUCKET}/studies/bad; run without --resume"),
    }[case]
    space = write_space(tmp_path, {"loss.alpha": {"grid": [0.0]}}, {"name": "bad"})
    resume = ["--resume"] if case == "nothing to resume" else []
    run = cli("run", space, "--storage", storage_uri, "--no-dashboard", *resume, timeout=120,
              env={"IQA_TUNE_MIRROR": str(tmp_path / "mirror"), **env})
    err = " ".join(run.stderr.split())
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert said in err and storage_uri in err and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert not (tmp_path / "mirror").exists() and not keys(s3, f"{BUCKET}/studies/bad")


def test_report_and_validate_refuse_bad_storage(s3, tmp_path):
    env = {"IQA_TUNE_MIRROR": str(tmp_path / "mirror")}
    nothing = cli("report", f"s3://{BUCKET}/nothing/here", env=env, timeout=120)
    assert nothing.returncode == 2 and f"s3://{BUCKET}/nothing/here: no experiment there" in nothing.stderr
    out = cli("report", f"s3://{BUCKET}/nothing/here", "--out", f"s3://{BUCKET}/elsewhere", env=env, timeout=120)
    assert out.returncode == 2 and "--out" in out.stderr and "Traceback" not in out.stderr + nothing.stderr
    space = write_space(tmp_path, {"loss.alpha": {"grid": [0.0]}}, {"name": "v"})
    body = yaml.safe_load(space.read_text())
    body["study"]["storage"] = "s3:///studies"
    space.write_text(yaml.safe_dump(body))
    bad = cli("validate", space, timeout=120)
    assert bad.returncode == 2 and "study.storage: no bucket" in " ".join(bad.stderr.split())


# ----------------------------------------------------------------------------------------------------------------
# a study on S3


@pytest.mark.slow
def test_a_study_on_s3_is_interrupted_resumed_from_another_mirror_and_reported_from_the_uri(s3, tmp_path):
    """Everything the study writes reaches the bucket (the trials' results, configs and checkpoints, the driver's
    records). Ctrl-C, then --resume with another mirror folder, as on another machine: Tune's pickled callback
    and ASHA state find their folder there, and the study finishes. ``iqa-tune report URI`` ranks every trial
    from the bucket and, with --upload, puts the report beside it. A start the pre-flight refuses leaves nothing
    at the URI."""
    uri = f"s3://{BUCKET}/studies/s3study"
    prefix = f"{BUCKET}/studies/s3study"
    space = write_space(tmp_path, {"loss.alpha": {"grid": [0.0, 1.0, 2.0]}},
                        {"name": "s3study", "storage": f"s3://{BUCKET}/studies", "max_concurrent": 1,
                         "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2}},
                        train={**TINY["train"], "epochs": 2})
    first = tmp_path / "mirror-a" / "s3" / prefix
    env = {**os.environ, "PYTHONPATH": str(ROOT), "IQA_TUNE_MIRROR": str(tmp_path / "mirror-a")}
    proc = subprocess.Popen([sys.executable, "-m", "iqa_tune.cli", "run", str(space), "--no-dashboard"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    # interrupt once the first trial has ended and the second runs (Tune creates a trial only when it can start)
    while time.monotonic() < deadline and proc.poll() is None:
        status = first / "trial_status.json"
        seen = set(json.loads(status.read_text()).values()) if status.is_file() else set()
        if {"TERMINATED", "RUNNING"} <= seen:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-3000:] + err[-3000:]
    assert f"results in {uri}" in " ".join(out.split()) and f"--storage s3://{BUCKET}/studies --resume" in out
    stored = keys(s3, prefix)
    assert {"study.yaml", "trial_status.json", "tune.log", "asha_state.pickle", "tuner.pkl"} <= stored
    assert set(json.loads(s3.open_input_stream(f"{prefix}/trial_status.json").readall()).values()) - {"TERMINATED"}

    shutil.rmtree(tmp_path / "mirror-a")  # resumed elsewhere: what Tune pickled must not lead back here
    resumed = cli("run", space, "--no-dashboard", "--resume", env={"IQA_TUNE_MIRROR": str(tmp_path / "mirror-b")})
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert not (tmp_path / "mirror-a").exists()
    assert f"report copied to {uri}/report" in resumed.stdout
    assert not list((tmp_path / "mirror-b").rglob("best.pt"))  # the mirror never holds the models

    stored = keys(s3, prefix)
    trials = sorted({k.split("/")[0] for k in stored if k.endswith("/params.json")})
    assert len(trials) == 3
    for t in trials:  # the trials' files, from the trials (config, split, checkpoint) and from Tune (results)
        assert {f"{t}/result.json", f"{t}/config.yaml", f"{t}/split.json"} <= stored
        assert any(k.startswith(f"{t}/checkpoint_") and k.endswith("/best.pt") for k in stored)
        assert any(k.startswith(f"{t}/checkpoint_") and k.endswith("/test_predictions.npz") for k in stored)
    status = json.loads(s3.open_input_stream(f"{prefix}/trial_status.json").readall())
    assert set(status) == set(trials) and set(status.values()) == {"TERMINATED"}
    assert yaml.safe_load(s3.open_input_stream(f"{prefix}/study.yaml").readall())["uri"] == uri
    assert {"report/index.html", "report/ranking.csv"} <= stored

    report = cli("report", uri, "--upload", env={"IQA_TUNE_MIRROR": str(tmp_path / "mirror-c")})
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    local = tmp_path / "mirror-c" / "s3" / prefix / "report"
    assert f"report: {local}/index.html" in " ".join(report.stdout.split())
    assert f"report copied to {uri}/report" in report.stdout
    ranking = pd.read_csv(local / "ranking.csv")
    assert sorted(ranking["trial"]) == trials and not ranking["ended"].isin(["interrupted", "running"]).any()
    for _, row in ranking.iterrows():  # the ranked figures are those in the bucket
        rows = [json.loads(line) for line in s3.open_input_stream(f"{prefix}/{row['trial']}/result.json")
                .readall().decode().splitlines()]
        assert row["epochs_run"] == rows[-1]["epoch"]
        assert row["val_srcc"] == pytest.approx(max(r["val_srcc"] for r in rows), nan_ok=True)
    uploaded = s3.open_input_stream(f"{prefix}/report/ranking.csv").readall().decode()
    assert uploaded == (local / "ranking.csv").read_text()
    assert not list((tmp_path / "mirror-c").rglob("best.pt"))
    again = cli("run", space, "--no-dashboard", timeout=120, env={"IQA_TUNE_MIRROR": str(tmp_path / "mirror-c")})
    assert again.returncode == 2 and f"{uri} already exists: continue it with --resume" in again.stderr

    gpu = write_space(tmp_path, {"loss.alpha": {"grid": [0.0]}},
                      {"name": "gpu", "storage": f"s3://{BUCKET}/studies", "resources": {"cpu": 1, "gpu": 1}},
                      name="gpu.yaml")
    refused = cli("run", gpu, "--no-dashboard", timeout=180, env={"IQA_TUNE_MIRROR": str(tmp_path / "mirror-d")})
    assert refused.returncode == 2 and "no node of this cluster has that" in " ".join(refused.stderr.split())
    assert not keys(s3, f"{BUCKET}/studies/gpu") and not (tmp_path / "mirror-d/s3" / BUCKET / "studies/gpu").exists()
