"""meterctl usage: the API's report as tables, per day or (--by-model) per model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from meterctl import api
from meterctl.cli import main
from meterctl.target import Target

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"


def counts(requests: int, cost: str) -> dict[str, Any]:
    return {
        "requests": requests,
        "failed_requests": 0,
        "input_tokens": 10 * requests,
        "output_tokens": 5 * requests,
        "cache_read_input_tokens": 0,
        "cache_write_input_tokens": 0,
        "total_tokens": 15 * requests,
        "cost_usd": cost,
    }


TENANT_REPORT = {
    "tenant_id": "acme",
    "from": "2026-11-01",
    "to": "2026-11-30",
    "totals": counts(3, "0.3"),
    "models": [{"model_id": NOVA, **counts(1, "0.1")}, {"model_id": HAIKU, **counts(2, "0.2")}],
    "days": [],
}
ADMIN_REPORT = {
    "from": "2026-11-01",
    "to": "2026-11-30",
    "models": TENANT_REPORT["models"],
    "tenants": [
        {"tenant_id": "acme", "totals": counts(3, "0.3"), "models": TENANT_REPORT["models"]}
    ],
}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """meterctl against a fake API that answers the two usage reports; the paths it asked."""
    seen: list[str] = []

    def call(target: Target, method: str, path: str, token: str, **_: Any) -> api.ApiResponse:
        seen.append(path)
        body = ADMIN_REPORT if path.startswith("/admin/usage") else TENANT_REPORT
        return api.ApiResponse(200, body, {})

    monkeypatch.setattr(api, "call", call)
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"ApiGatewayUrl": "http://127.0.0.1:9/"}))
    monkeypatch.setenv("METER_OUTPUTS", str(outputs))
    return seen


def table(text: str) -> list[list[str]]:
    """The data rows of a rendered table (title, header and rule, and the count left out)."""
    return [[cell.strip() for cell in line.split("|")] for line in text.splitlines()[3:-1]]


def test_by_model_lists_each_model_of_the_period_and_the_total(
    calls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["usage", "--by-model", "--token", "t", "--from", "2026-11-01"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Tenant acme by model, 2026-11-01 to 2026-11-30")
    rows = table(out)
    assert [(r[0], r[1], r[-1]) for r in rows] == [
        (NOVA, "1", "0.1"),
        (HAIKU, "2", "0.2"),
        ("total", "3", "0.3"),
    ]
    assert calls == ["/usage?from=2026-11-01"]


def test_by_model_for_every_tenant_lists_tenant_and_model(
    calls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["usage", "--all", "--by-model", "--token", "t"]) == 0
    rows = table(capsys.readouterr().out)
    assert [(r[0], r[1], r[2]) for r in rows] == [("acme", NOVA, "1"), ("acme", HAIKU, "2")]
    assert calls == ["/admin/usage"]
