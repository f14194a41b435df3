"""One real backup run per cell of the compatibility matrix, on the lab, checked by checksum.

* Node Python (``BACKURNE_MATRIX_NODE_PYTHONS="3.9=/path/python3.9 3.13=/path/python3.13"``):
  the live and backup nodes run the modules under that interpreter (``ansible_python_interpreter``),
  the controller is the project's .venv. Those interpreters have no python3-rados/rbd, so every
  listing, lock and snapshot takes the rbd/rados CLI path: a full then an incremental backup.
* ansible-core (``BACKURNE_MATRIX_ANSIBLE="2.16=/path/venv/bin ..."``): ansible-playbook of that
  version drives backup.yml (nodes on /usr/bin/python3, in-process RADOS); the report callback
  must print its table and write its JSON report.

scripts/compat.sh builds the interpreters' and versions' venvs and sets both variables.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import playbook_helpers
import pytest
from playbook_helpers import (
    T_SNAPSHOT,
    T_TRANSFER,
    assert_ok,
    assert_same_data,
    backup_image,
    checksum,
    cluster_name,
    day,
    make_inventory,
    run_backup,
    snap_name,
    snaps,
    spec,
)

NODE_HOSTS = (("live_clusters", "lab-live"), ("backup_nodes", "lab-backup"))


def _cells(variable: str) -> list[tuple[str, str]]:
    """[(label, path)] from "label=path label=path"; a run without the variable has no cell."""
    cells = []
    for word in os.environ.get(variable, "").split():
        label, _, path = word.partition("=")
        cells.append((label, path))
    return cells


NODE_PYTHONS = _cells("BACKURNE_MATRIX_NODE_PYTHONS")
ANSIBLE_VERSIONS = _cells("BACKURNE_MATRIX_ANSIBLE")


def test_the_matrix_is_not_empty() -> None:
    # Run through scripts/compat.sh: without its variables this file would test nothing.
    assert NODE_PYTHONS or ANSIBLE_VERSIONS, "set BACKURNE_MATRIX_NODE_PYTHONS / BACKURNE_MATRIX_ANSIBLE"


def _interpreter_facts(python: str) -> dict[str, object]:
    code = (
        "import importlib.util, json, sys; "
        "print(json.dumps({'version': '%d.%d' % sys.version_info[:2], "
        "'rados': importlib.util.find_spec('rados') is not None, 'rbd': importlib.util.find_spec('rbd') is not None}))"
    )
    return json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)


def _logging_interpreter(python: str, directory: Path) -> tuple[Path, Path]:
    """A wrapper that notes each call before it execs ``python``: proof the modules ran under it."""
    log = directory / "interpreter-calls.log"
    wrapper = directory / "node-python"
    wrapper.write_text(f'#!/bin/sh\necho called >> "{log}"\nexec "{python}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper, log


@pytest.mark.parametrize(("version", "python"), NODE_PYTHONS, ids=[label for label, _ in NODE_PYTHONS])
def test_backup_with_node_python(lab, ns, tmp_path: Path, version: str, python: str) -> None:
    facts = _interpreter_facts(python)
    # The cell is what it says, and it cannot take the in-process path: the CLI fallback is real.
    assert facts == {"version": version, "rados": False, "rbd": False}, facts
    wrapper, calls = _logging_interpreter(python, tmp_path)
    img = "pyimg"
    lab.write_image("live", spec(ns, img), 8, seed=90, admin=True)
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 7, "max_on_live": 1}})
    children = inv["all"]["children"]
    for group, host in NODE_HOSTS:
        children[group]["hosts"][host]["ansible_python_interpreter"] = str(wrapper)
    bimg = backup_image(cluster_name(inv), img)

    full = assert_ok(run_backup(inv, tmp_path, now=day(0)))
    s0 = snap_name("daily", 7, day(0))
    assert full.image(T_TRANSFER, img)["status"] == "transferred"
    assert (full.image(T_SNAPSHOT, img)["kind"], full.image(T_TRANSFER, img)["snapshots"]) == ("full", [s0])
    module_calls = len(calls.read_text().splitlines())
    assert module_calls > 0, "no module ran under the node interpreter"

    lab.overwrite("live", spec(ns, img), 0.25, seed=91, admin=True)
    incremental = assert_ok(run_backup(inv, tmp_path, now=day(1)))
    s1 = snap_name("daily", 7, day(1))
    sent = incremental.image(T_TRANSFER, img)
    assert (sent["status"], sent["kind"], sent["base"], sent["snapshots"]) == ("transferred", "incremental", s0, [s1])
    assert len(calls.read_text().splitlines()) > module_calls
    assert snaps(lab, "live", ns, img) == [s0, s1]
    assert snaps(lab, "backup", ns, bimg) == [s0, s1]
    sums = assert_same_data(lab, ns, img, bimg, [s0, s1])
    assert sums[s1] == checksum(lab, "live", ns, img) != sums[s0]
    print(f"MATRIX node-python {version}: full + incremental backed up, checksums equal ({module_calls} module calls)")


@pytest.mark.parametrize(("version", "bindir"), ANSIBLE_VERSIONS, ids=[label for label, _ in ANSIBLE_VERSIONS])
def test_backup_with_ansible_core(
    lab, ns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str, bindir: str
) -> None:
    playbook = Path(bindir) / "ansible-playbook"
    reported = subprocess.run([str(playbook), "--version"], capture_output=True, text=True, check=True).stdout
    assert reported.startswith(f"ansible-playbook [core {version}."), reported.splitlines()[:1]
    monkeypatch.setattr(playbook_helpers, "ANSIBLE_PLAYBOOK", playbook)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    report = tmp_path / "report.json"
    monkeypatch.setenv("BACKURNE_REPORT_JSON", str(report))
    imgs = ("core1", "core2")
    for seed, img in enumerate(imgs):
        lab.write_image("live", spec(ns, img), 8, seed=100 + seed, admin=True)
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 3}})
    name = cluster_name(inv)

    run = assert_ok(run_backup(inv, tmp_path, now=day(0)))
    s0 = snap_name("daily", 3, day(0))
    # The report callback: its table on stdout, one line per image, and its JSON report.
    table = run.stdout[run.stdout.index("BACKURNE REPORT") :]
    document = json.loads(report.read_text())
    assert {rec["image"]: (rec["status"], rec["snapshots"]) for rec in document["images"]} == {
        img: ("transferred", [s0]) for img in imgs
    }
    rows = [line.split() for line in table.splitlines()]
    assert "2 image(s): 2 transferred, 0 failed" in table, table
    for img in imgs:
        assert any(row[1:2] == [f"rbd/{ns}/{img}"] and row[3:4] == ["full"] for row in rows), table
        assert run.image(T_TRANSFER, img)["status"] == "transferred"
        assert snaps(lab, "backup", ns, backup_image(name, img)) == [s0]
        assert_same_data(lab, ns, img, backup_image(name, img), [s0])
    print(f"MATRIX ansible-core {version}: backup run, report printed, checksums equal")
