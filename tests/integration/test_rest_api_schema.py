"""Schemathesis against the REST API's own OpenAPI document: no input yields a server error.

In-process (ASGI), with a valid token, against the web layer and the real path checks over a
real directory tree. The stand-in core here knows EVERY image and snapshot name, so generated
names get past the catalog into mapping, browsing (random ``path`` values through files.py) and
restore, instead of stopping at a 404. Bounded: MAX_EXAMPLES per operation, ~20 s in all on the
2-core machine. test_rest_api_lab.py runs a shorter schemathesis pass against the real core.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from rest_api_helpers import GOOD_TOKEN, FakeBackend, build_snapshot_tree, config, token_store
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from backurne_api.app import create_app
from backurne_api.backend import Conflict, Filesystem, Mapped, NotFound

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MAX_EXAMPLES = 30
HEADERS = {"Authorization": f"Bearer {GOOD_TOKEN}"}


class EveryNameBackend(FakeBackend):
    """Every image exists, every snapshot exists and maps onto the same directory tree."""

    def _known(self, image: str) -> None:
        self.images.setdefault(image, ["backup;daily;30;2026-11-29T10:00:00.000000"])

    def image_snapshots(self, image: str) -> dict:
        if ";" not in image or image.count(";") != 2:
            raise NotFound(f"{image!r} is not a backup image name", image=image)
        self._known(image)
        return super().image_snapshots(image)

    def resolve_snapshot(self, image: str, snapshot: str) -> str:
        return snapshot

    def map(self, image: str, snapshot: str) -> Mapped:
        key = (image, snapshot)
        if key in self.mapped_now:
            raise Conflict(f"snapshot {snapshot!r} of {image!r} is already mapped", image=image, snapshot=snapshot)
        self.mapped_now[key] = Mapped(image, snapshot, (Filesystem("p1", str(self.mountpoint), "ext4"),), {})
        return self.mapped_now[key]

    def mapped(self, image: str, snapshot: str) -> Mapped:
        # every snapshot is "mapped", so that browse/download see the generated paths
        return self.mapped_now.get((image, snapshot)) or Mapped(
            image, snapshot, (Filesystem("p1", str(self.mountpoint), "ext4"),), {}
        )


_tmp = Path(tempfile.mkdtemp(prefix="backurne-api-schema-"))
atexit.register(shutil.rmtree, _tmp, ignore_errors=True)
_mountpoint, _secret = build_snapshot_tree(_tmp / "tree")
_backend = EveryNameBackend(_mountpoint)
app = create_app(config(_tmp), backend=_backend, tokens=token_store(_tmp))
schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=HEADERS)


def test_the_document_covers_every_endpoint() -> None:
    paths = set(app.openapi()["paths"])
    assert paths == {
        "/health",
        "/images",
        "/images/{image}/snapshots",
        "/images/{image}/snapshots/{snapshot}/map",
        "/images/{image}/holds",
        "/images/{image}/snapshots/{snapshot}/hold",
        "/mapped",
        "/mapped/{image}/{snapshot}",
        "/mapped/{image}/{snapshot}/files",
        "/mapped/{image}/{snapshot}/download",
        "/restores",
        "/jobs",
        "/jobs/{job_id}",
    }
    assert app.openapi()["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_error(case: schemathesis.Case) -> None:
    response = case.call(headers=HEADERS)
    # No 5xx; and what is answered is documented: the status code, the content type, the body.
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    case.validate_response(response, checks=checks, headers=HEADERS)
    # the secret beside the snapshot tree is never served, whatever the path
    assert b"TOP SECRET" not in response.content
