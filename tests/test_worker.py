from config.celery import app


def test_a_real_worker_answers_on_the_configured_broker(celery_worker_process):
    replies = app.control.inspect(timeout=5, limit=1).ping()

    assert replies, "no worker answered"
    assert all(reply == {"ok": "pong"} for reply in replies.values())
