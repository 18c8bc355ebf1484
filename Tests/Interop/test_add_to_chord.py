"""Celery's `self.add_to_chord(sig)`, driven by Python Celery 5.7 (after Celery's t/integration test_chord): a chord
header task adds tasks, or a whole chord, to the chord it belongs to; the body then gets their results too."""

from __future__ import annotations

import pytest
from celery import chord, group
from conftest import RESULT_TIMEOUT

T = RESULT_TIMEOUT


def test_header_task_adds_tasks_to_its_chord(tasks):
    result = (group([tasks.add_to_all_to_chord.s([1, 2, 3], 4)]) | tasks.identity.s()).delay()
    assert sorted(result.get(timeout=T)) == [0, 5, 6, 7]


def test_header_task_adds_a_chord_to_its_chord(tasks):
    result = (group([tasks.add_chord_to_chord.s([1, 2, 3], 4)]) | tasks.identity.s()).delay()
    assert sorted(result.get(timeout=T)) == [0, 5 + 6 + 7]


def test_adding_beside_other_header_tasks(tasks):
    result = chord([tasks.add.s(1, 1), tasks.add_to_all_to_chord.s([10], 1), tasks.add.s(2, 2)], tasks.xsum.s()).delay()
    assert result.get(timeout=T) == 2 + 0 + 11 + 4


def test_a_task_outside_a_chord_cannot_add_to_one(tasks):
    with pytest.raises(ValueError, match="not member of any chord"):
        tasks.add_to_all_to_chord.delay([1], 1).get(timeout=T)
