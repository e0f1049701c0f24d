"""End-to-end ring: the real local stack (moto server, SmolLM2 behind the Bedrock stand-in,
`chalice local`), driven over HTTP and with the AWS CLI, as a user would."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from local.running import RunningStack, running_stack


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """One local stack for the e2e session, on free ports so it never meets a running `make run`."""
    with running_stack(
        tmp_path_factory.mktemp("stack"),
        engine=os.environ.get("METER_E2E_ENGINE", "llama"),
        job_interval_s=float(os.environ.get("METER_E2E_JOB_INTERVAL_S", "2")),
    ) as stack:
        yield stack
