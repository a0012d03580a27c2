"""/api/repricings/: who may re-price, what bad input answers, the report and the per-record CSV."""

import csv
import io
from decimal import Decimal

import pytest

from accounting.ledger import ledger_check
from accounting.models import LedgerTransaction, Repricing, RepricingItem
from tests.conftest import bearer
from tests.factories import make_accounts
from tests.llmlog.test_repricing import DAY, DELTA_AMOUNT, DELTA_COST, accounted, set_prices, usage_row

pytestmark = pytest.mark.django_db

URL = "/api/repricings/"


@pytest.fixture
def books():
    make_accounts(customers=("acme", "globex"), funds=Decimal(100))
    set_prices()
    accounted(usage_row(), usage_row(), usage_row(userorgid="globex"))


def body(**overrides) -> dict:
    return {"start": DAY.isoformat(), "end": DAY.isoformat(), **overrides}


def test_a_platform_admin_makes_a_dry_run_and_applies_it(api, platform_key, books):
    created = api.post(URL, body(), format="json", **bearer(platform_key))

    assert created.status_code == 201, created.json()
    answer = created.json()
    assert answer["status"] == "dry_run" and answer["records"] == 3 and answer["changed"] == 3
    assert Decimal(answer["delta_amount"]) == 3 * DELTA_AMOUNT
    assert {row["userorgid"] for row in answer["summary"]} == {"acme", "globex"}
    assert answer["created_by"].startswith("api key ")
    assert not LedgerTransaction.objects.filter(kind="adjustment").exists()

    applied = api.post(f"{URL}{answer['id']}/apply", **bearer(platform_key))
    assert applied.status_code == 200 and applied.json()["status"] == "applied"
    assert LedgerTransaction.objects.filter(kind="adjustment").count() == 2
    assert ledger_check().ok
    # Applying again answers the same and posts nothing.
    again = api.post(f"{URL}{answer['id']}/apply/", **bearer(platform_key))
    assert again.status_code == 200 and again.json()["applied_at"] == applied.json()["applied_at"]
    assert LedgerTransaction.objects.filter(kind="adjustment").count() == 2


def test_apply_true_applies_at_once_and_filters_narrow(api, platform_key, books):
    answer = api.post(URL, body(userorgid="globex", apply=True), format="json", **bearer(platform_key))

    assert answer.status_code == 201
    assert answer.json()["status"] == "applied" and answer.json()["records"] == 1
    assert RepricingItem.objects.get().adjustment is not None


def test_list_and_get(api, platform_key, books):
    first = api.post(URL, body(), format="json", **bearer(platform_key)).json()
    second = api.post(URL, body(model_name="gpt-4o"), format="json", **bearer(platform_key)).json()

    listed = api.get(URL, **bearer(platform_key))
    assert listed.status_code == 200
    assert [row["id"] for row in listed.json()["results"]] == [second["id"], first["id"]]
    got = api.get(f"{URL}{first['id']}/", **bearer(platform_key))
    assert got.status_code == 200 and got.json()["summary"] == first["summary"]
    assert api.get(f"{URL}999999/", **bearer(platform_key)).status_code == 404
    bad_id = api.get(f"{URL}abc/", **bearer(platform_key))
    assert bad_id.status_code == 400 and "id" in bad_id.json()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"end": DAY.isoformat()}, "start"),
        ({"start": "2026-13-01", "end": DAY.isoformat()}, "start"),
        ({"start": DAY.isoformat(), "end": "2026-11-01"}, "end"),
        (body(model_name="x" * 151), "model_name"),
        (body(userorgid="a\x00b"), "userorgid"),
        (body(apply="perhaps"), "apply"),
        (body(price="1"), "price"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, platform_key, payload, field):
    answer = api.post(URL, payload, format="json", **bearer(platform_key))
    assert answer.status_code == 400
    assert field in answer.json() or f"$.{field}" in answer.json()["detail"]  # the JSON parser's own check
    assert not Repricing.objects.exists()


def test_only_a_platform_admin_may_reprice(api, make_key, acme_key, books):
    platform_reader = make_key(org="", role="reader", scopes=("read",))
    repricing = Repricing.objects.create(start=DAY, end=DAY)
    for key in (acme_key, make_key(org="acme", role="admin"), platform_reader):
        assert api.post(URL, body(), format="json", **bearer(key)).status_code == 403
        assert api.get(URL, **bearer(key)).status_code == 403
        assert api.get(f"{URL}{repricing.pk}/", **bearer(key)).status_code == 403
        assert api.post(f"{URL}{repricing.pk}/apply", **bearer(key)).status_code == 403
        assert api.get(f"{URL}{repricing.pk}/records.csv", **bearer(key)).status_code == 403
    assert api.get(URL).status_code == 401
    assert Repricing.objects.count() == 1


def test_a_staff_session_needs_the_repricing_permissions(api, make_staff, books):
    viewer = make_staff("viewer", perms=("accounting.view_repricing",))
    api.force_login(viewer)
    assert api.get(URL).status_code == 200
    assert api.post(URL, body(), format="json").status_code == 403
    api.force_login(make_staff("maker", perms=("accounting.add_repricing",)))
    assert api.post(URL, body(), format="json").status_code == 201


def test_a_stale_dry_run_is_a_409(api, platform_key, books):
    first = api.post(URL, body(), format="json", **bearer(platform_key)).json()
    api.post(URL, body(apply=True), format="json", **bearer(platform_key))

    answer = api.post(f"{URL}{first['id']}/apply", **bearer(platform_key))

    assert answer.status_code == 409 and "changed since" in answer.json()["detail"]


def test_the_records_csv_lists_each_changed_record(api, platform_key, books):
    created = api.post(URL, body(apply=True), format="json", **bearer(platform_key)).json()

    answer = api.get(f"{URL}{created['id']}/records.csv", HTTP_ACCEPT="text/csv", **bearer(platform_key))

    assert answer.status_code == 200 and answer["Content-Type"].startswith("text/csv")
    text = b"".join(answer.streaming_content).decode().lstrip("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text)))
    records, total = rows[:-1], rows[-1]
    assert len(records) == 3 and total["usage_id"] == "TOTAL (3 rows)"
    items = {str(item.usage_id): item for item in RepricingItem.objects.all()}
    for row in records:
        item = items[row["usage_id"]]
        assert row["transno"] == item.transno and row["treatment"] == "adjustment"
        assert Decimal(row["old_amount"]) == Decimal("0.006")
        assert Decimal(row["delta_amount"]) == DELTA_AMOUNT
        assert Decimal(row["delta_cost"]) == DELTA_COST
        assert row["adjustment_id"] == str(item.adjustment_id)
    assert Decimal(total["delta_amount"]) == 3 * DELTA_AMOUNT
