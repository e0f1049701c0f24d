"""Bedrock SaaS Metering: the Chalice app. Wiring only: routes, authorizer, schedules."""

from __future__ import annotations

from chalice.app import Chalice, Response

from chalicelib import logs, wiring
from chalicelib.chat import parse_chat_request
from chalicelib.edge import Call, endpoint, route_authorizer

app = Chalice(app_name="bedrock-saas-metering")
app.debug = False  # never put stack traces in response bodies
logs.configure()

AUTHORIZER = route_authorizer()
api = endpoint(app)


@app.route("/bedrock/chat", methods=["POST"], authorizer=AUTHORIZER)
@api
def bedrock_chat(call: Call) -> Response:
    """Answer a tenant's prompt; the call is metered before the answer is returned."""
    request = parse_chat_request(call.request.raw_body, wiring.chat_limits(call.settings))
    result = wiring.chat_service(call.settings).chat(call.caller, request, call.request_id)
    return Response(body={"response": result.text}, headers={"X-Request-Id": result.event_id})
