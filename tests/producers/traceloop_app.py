"""An LLM app instrumented by traceloop-sdk, calling the real OpenAI client.

Run as a subprocess (Traceloop.init sets process-wide OpenTelemetry globals):
    python traceloop_app.py OTLP_HTTP_ENDPOINT OPENAI_BASE_URL
"""

from __future__ import annotations

import sys


def main(endpoint: str, base_url: str) -> None:
    from openai import OpenAI
    from traceloop.sdk import Traceloop
    from traceloop.sdk.decorators import task, workflow

    Traceloop.init(app_name="support-bot", api_endpoint=endpoint, disable_batch=True, telemetry_enabled=False)
    client = OpenAI(base_url=base_url, api_key="sk-test")

    @task(name="answer")
    def answer(question: str, stream: bool) -> str:
        if stream:
            out = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": question}],
                stream=True,
                stream_options={"include_usage": True},
                temperature=0.3,
            )
            return "".join(c.choices[0].delta.content or "" for c in out if c.choices)
        resp = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": question}],
            max_tokens=5,
            temperature=0.3,
        )
        return resp.choices[0].message.content or ""

    @workflow(name="support_flow")
    def flow() -> None:
        answer("one two three four five six seven eight", stream=False)
        answer("alpha beta gamma", stream=True)

    flow()
    Traceloop.get_default_span_processor().force_flush()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
