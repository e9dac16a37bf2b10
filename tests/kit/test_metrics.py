"""Model-call metrics are exported in the Prometheus format when METRICS_PORT is set."""

from __future__ import annotations

import httpx

from services.kit.config import Settings
from services.kit.llm import LLM, Prompt
from services.kit.metrics import serve_metrics
from tests.conftest import free_port
from tests.support.openai_server import ScriptedOpenAI, text_reply


def test_metrics_endpoint_reports_model_calls(
    llm: LLM, openai_server: ScriptedOpenAI, settings: Settings
) -> None:
    assert serve_metrics(settings) is None  # off unless configured
    openai_server.enqueue(text_reply("an answer in five words"))
    llm.text(Prompt("p", "system words", "user words here"), agent="metrics-test")
    port = serve_metrics(settings.model_copy(update={"metrics_port": free_port()}))
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'learnflow_llm_requests_total{agent="metrics-test",outcome="ok"} 1.0' in body
    assert 'learnflow_llm_tokens_total{agent="metrics-test",kind="completion"} 5.0' in body
    assert 'learnflow_llm_latency_seconds_count{agent="metrics-test",call="text"} 1.0' in body
