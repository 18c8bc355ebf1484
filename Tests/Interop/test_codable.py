"""Codable structs as a task's parameter and result, driven by Python Celery 5.7 the way Celery 5.5 passes pydantic
models (`@app.task(pydantic=True)`): a dict in, a dict out, and a ValidationError when the dict does not fit."""

from __future__ import annotations

import json

import pytest
from conftest import RESULT_TIMEOUT, worker_kind

T = RESULT_TIMEOUT


def test_a_json_object_decodes_into_a_struct_and_the_result_comes_back_as_one(tasks):
    assert tasks.add_model.delay({"x": 40, "y": 2}).get(timeout=T) == {"result": 42}
    assert tasks.add_model.delay(data={"y": 2, "x": 1}).get(timeout=T) == {"result": 3}


def test_an_object_that_does_not_fit_fails_with_a_validation_error(tasks, redis_client):
    result = tasks.add_model.delay({"x": 1})
    with pytest.raises(Exception) as raised:
        result.get(timeout=T)
    assert result.state == "FAILURE"
    assert type(raised.value).__name__ == "ValidationError"
    stored = json.loads(redis_client.get(f"celery-task-meta-{result.id}"))["result"]
    assert stored["exc_type"] == "ValidationError"
    if worker_kind() == "python":
        return  # pydantic's ValidationError keeps no args: Python's worker stores an empty message
    # Ours stores pydantic's wording (which Python cannot put back into a ValidationError, so it is in the meta).
    message = " ".join(str(part) for part in stored["exc_message"])
    assert "1 validation error for AddParameters" in message and "Field required" in message, message
