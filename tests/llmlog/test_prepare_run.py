"""`make run`'s set-up command (prepare_run): the branches tests/test_operator.py leaves out, i.e. the
demo data it loads into an empty database only, and the saved login it replaces when it stops working."""

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command

from llmlog.keys import _recent, api_key_lookup
from llmlog.management.commands.prepare_run import credentials_path
from llmlog.models import LLMUsage

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def var_dir(tmp_path, settings) -> Path:
    settings.VAR_DIR = tmp_path
    return tmp_path


def prepare_run(*args: str) -> str:
    out = io.StringIO()
    call_command("prepare_run", *args, stdout=out)
    return out.getvalue()


def saved() -> dict:
    return json.loads(credentials_path().read_text())


def test_demo_data_goes_into_an_empty_database_only():
    first = prepare_run("--demo-rows", "40")
    stored = LLMUsage.objects.count()
    second = prepare_run("--demo-rows", "40")

    assert "Loaded 40 demo usage records." in first
    assert stored == 40
    assert "Loaded" not in second and LLMUsage.objects.count() == 40  # a second start adds nothing


def test_a_changed_password_gets_a_new_login_and_key(django_user_model):
    prepare_run("--demo-rows", "0")
    before = saved()
    admin = django_user_model.objects.get(username="admin")
    admin.set_password("changed by hand")
    admin.save()

    text = prepare_run("--demo-rows", "0")

    after = saved()
    assert "login and key: new" in text
    assert after["password"] != before["password"] and after["api_key"] != before["api_key"]
    assert django_user_model.objects.get(username="admin").check_password(after["password"])
    _recent.clear()  # the lookup cache would hide a revocation made a moment ago
    assert api_key_lookup(before["api_key"]).revoked_at is not None
    assert after["api_key"] in text


@pytest.mark.parametrize("content", ["not json", "[1, 2]", ""])
def test_an_unreadable_credentials_file_is_replaced(content):
    prepare_run("--demo-rows", "0")
    credentials_path().write_text(content)

    text = prepare_run("--demo-rows", "0", "--username", "ops", "--base-url", "http://example.test:9000")

    fresh = saved()
    assert fresh["username"] == "ops"
    assert api_key_lookup(fresh["api_key"]).revoked_at is None
    assert "http://example.test:9000/admin/  user ops" in text
    assert oct(credentials_path().stat().st_mode & 0o777) == "0o600"
