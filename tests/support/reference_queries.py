"""The reference design's published Athena queries, verbatim (seed README), and a date helper.

Its README tells the reader to change the example date ('2025', '12', '07'); `for_day` does
exactly that and nothing else.
"""

from __future__ import annotations

from datetime import date

# ruff: noqa: W291 (the trailing spaces are part of the published text)
REFERENCE_QUERIES: dict[str, str] = {
    "tenants": """SELECT DISTINCT tenant_id 
FROM bedrock_metering_db.token_usage_logs 
WHERE year='2025' AND month='12' AND day='07' -- Change to actual date 
LIMIT 10;""",
    "models": """SELECT DISTINCT model_id 
FROM bedrock_metering_db.token_usage_logs 
WHERE year='2025' AND month='12' AND day='07'-- Change to actual date
; """,
    "daily_usage_by_tenant": """SELECT 
    tenant_id,
    DATE(from_iso8601_timestamp(timestamp)) as usage_date,
    SUM(total_tokens) as total_tokens,
    COUNT(*) as request_count,
    AVG(total_tokens) as avg_tokens_per_request
FROM bedrock_metering_db.token_usage_logs
WHERE year = '2025' AND month = '12' AND day = '07'  -- Change to actual date
GROUP BY tenant_id, DATE(from_iso8601_timestamp(timestamp))
ORDER BY usage_date DESC, total_tokens DESC;""",
    "hourly_pattern": """SELECT 
    EXTRACT(hour FROM from_iso8601_timestamp(timestamp)) as usage_hour,
    tenant_id,
    COUNT(*) as request_count,
    SUM(total_tokens) as total_tokens,
    AVG(total_tokens) as avg_tokens_per_request
FROM bedrock_metering_db.token_usage_logs
WHERE year = '2025' AND month = '12' AND day = '07'  -- Change to actual date
GROUP BY EXTRACT(hour FROM from_iso8601_timestamp(timestamp)), tenant_id
ORDER BY usage_hour, total_tokens DESC;""",
}


def for_day(name: str, day: date) -> str:
    """The named query with the example date replaced by `day`, as its README instructs."""
    text = REFERENCE_QUERIES[name]
    for example, actual in (("2025", f"{day:%Y}"), ("12", f"{day:%m}"), ("07", f"{day:%d}")):
        text = text.replace(f"'{example}'", f"'{actual}'")
    return text
