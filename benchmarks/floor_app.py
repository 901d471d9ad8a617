"""The floor under ``POST /v1/decisions``: FastAPI with the same request body (``DecisionIn``),
an async endpoint and a small JSON answer, and nothing else: no key, no store, no model.

``benchmarks/serve.py --sections floor`` serves it beside the real service, so that what a
decision costs can be read against what HTTP, FastAPI and pydantic cost alone, in one run.
"""

from __future__ import annotations

from fastapi import FastAPI

from serving.schemas import DecisionIn

app = FastAPI()


@app.get("/readyz")
async def readyz() -> dict[str, bool]:
    return {"ready": True}


@app.post("/v1/decisions")
async def decide(body: DecisionIn) -> dict[str, object]:
    return {"request_id": body.request_id, "decision": "approve", "score": 0.0}
