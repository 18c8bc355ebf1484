"""Celery's retry from a handler, with Python's AsyncResult as the reference: a retry keeps the message's custom
headers and can change args and kwargs."""

T = 30


def test_a_retry_keeps_the_custom_headers(tasks):
    """`apply_async(headers=...)`: the retried message carries the custom headers (Celery's signature_from_request),
    so the second attempt still sees them."""
    result = tasks.retry_header.apply_async(("x-custom",), headers={"x-custom": "v"})
    assert result.get(timeout=T) == "v"
    assert tasks.retry_header.apply_async(("x-absent",), headers={"x-custom": "v"}).get(timeout=T) is None


def test_a_retry_can_change_args_and_kwargs(tasks):
    """`self.retry(args=..., kwargs=...)`: each attempt runs with the arguments the previous one gave."""
    assert tasks.countdown_sum.delay(3).get(timeout=T) == 6  # (3) -> (2, total=3) -> (1, total=5) -> (0, total=6)



def test_a_retry_with_new_args_keeps_the_kwargs_they_do_not_replace(tasks):
    """Celery 5.7: retry(args=...) on a call made with kwargs drops the kwargs the new args fill, keeps the rest."""
    result = tasks.retry_with_args.apply_async(kwargs={"foo": 1, "bar": 2, "label": "kept"})
    assert result.get(timeout=30) == {"foo": 2, "bar": 3, "label": "kept", "retries": 1}


def test_a_retry_with_new_kwargs_replaces_the_positional_values_they_name(tasks):
    """Celery 5.7: retry(kwargs=...) on a call made with args replaces the positional values the kwargs name."""
    result = tasks.retry_with_kwargs.apply_async(args=(1, 2))
    assert result.get(timeout=30) == {"foo": 2, "bar": 2, "retries": 1}
