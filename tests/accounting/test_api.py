from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounting.accounts import account_create
from accounting.ledger import ledger_topup
from accounting.models import Account, AccountingFailure
from llmlog.models import LLMUsage
from llmlog.posting import account_pending_usage
from tests.conftest import bearer
from tests.factories import balance, insert_usage, make_accounts, usage_row

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme_admin_key(make_key) -> str:
    return make_key(org="acme", role="admin", scopes=("read",))


@pytest.fixture
def globex_admin_key(make_key) -> str:
    return make_key(org="globex", role="admin", scopes=("read",))


@pytest.fixture
def platform_reader_key(make_key) -> str:
    return make_key(org="", role="reader", scopes=("read",))


@pytest.fixture
def accounts():
    accounts = make_accounts(customers=("acme", "globex"), funds=Decimal(5))
    accounts[("acme", "owner")] = account_create(org="acme", kind="owner")
    return accounts


def post(api, url, key, data=None):
    return api.post(url, data or {}, format="json", **bearer(key))


# --- accounts -------------------------------------------------------------------------------------


def test_accounts_need_a_key(api):
    assert api.get("/api/accounts/").status_code == 401


def test_an_org_key_lists_only_its_own_accounts(api, accounts, acme_key):
    response = api.get("/api/accounts/", **bearer(acme_key))

    assert response.status_code == 200
    assert {(a["org"], a["kind"]) for a in response.json()["results"]} == {
        ("acme", "customer"),
        ("acme", "owner"),
    }


def test_a_platform_key_lists_every_account_and_filters(api, accounts, platform_reader_key):
    everything = api.get("/api/accounts/", **bearer(platform_reader_key)).json()
    owners = api.get("/api/accounts/?kind=owner", **bearer(platform_reader_key)).json()

    assert everything["count"] == 6  # acme x2, globex, openai, platform, external
    assert {a["org"] for a in owners["results"]} == {"acme", "openai"}


def test_a_bad_list_filter_is_a_400_naming_it(api, accounts, platform_key):
    response = api.get("/api/accounts/?kind=vip", **bearer(platform_key))

    assert response.status_code == 400
    assert "kind" in response.json()


def test_a_key_without_read_scope_cannot_list(api, make_key):
    key = make_key(org="acme", scopes=("ingest",))

    assert api.get("/api/accounts/", **bearer(key)).status_code == 403


def test_a_platform_admin_creates_an_account(api, platform_key):
    response = post(
        api,
        "/api/accounts/",
        platform_key,
        {"org": "initech", "kind": "customer", "credit_limit": "50", "currency": "EUR"},
    )

    assert response.status_code == 201
    body = response.json()
    assert (body["org"], body["kind"], body["credit_limit"], body["currency"], body["balance"]) == (
        "initech",
        "customer",
        "50.00000",
        "EUR",
        "0.00000",
    )


def test_creating_an_existing_account_is_a_409(api, accounts, platform_key):
    response = post(api, "/api/accounts/", platform_key, {"org": "acme", "kind": "customer"})

    assert response.status_code == 409
    assert "already has a customer account" in response.json()["detail"]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"kind": "customer"}, "org"),
        ({"org": "x", "kind": "external"}, "kind"),
        ({"org": "x", "kind": "customer", "currency": "usd"}, "currency"),
        ({"org": "x", "kind": "customer", "credit_limit": "-1"}, "credit_limit"),
        ({"org": "x", "kind": "customer", "credit_limit": "1.123456"}, "credit_limit"),
        ({"org": "x", "kind": "customer", "credit_limit": "lots"}, "credit_limit"),
        ({"org": "x", "kind": "customer", "status": "closed"}, "status"),
    ],
)
def test_bad_account_input_is_a_400_naming_the_field(api, platform_key, data, field):
    response = post(api, "/api/accounts/", platform_key, data)

    assert response.status_code == 400
    assert field in response.json()


@pytest.mark.parametrize("persona", ["acme_admin_key", "platform_reader_key"])
def test_only_a_platform_admin_creates_accounts(api, request, persona):
    response = post(api, "/api/accounts/", request.getfixturevalue(persona), {"org": "x", "kind": "customer"})

    assert response.status_code == 403
    assert not Account.objects.filter(org="x").exists()


def test_an_org_reads_its_balance_and_not_another_orgs(api, accounts, acme_reader_key):
    own = api.get("/api/accounts/acme/", **bearer(acme_reader_key))
    other = api.get("/api/accounts/globex/", **bearer(acme_reader_key))

    assert own.status_code == 200
    by_kind = {a["kind"]: a for a in own.json()["accounts"]}
    assert by_kind["customer"]["balance"] == "5.00000"
    assert other.status_code == 404


def test_a_platform_admin_tops_up_idempotently(api, accounts, platform_key):
    url = "/api/accounts/acme/topup"
    first = post(api, url, platform_key, {"amount": "10.5", "reference": "pay-1", "memo": "invoice 7"})
    again = post(api, url + "/", platform_key, {"amount": "10.5", "reference": "pay-1"})
    conflict = post(api, url, platform_key, {"amount": "11", "reference": "pay-1"})

    assert (first.status_code, again.status_code, conflict.status_code) == (201, 200, 409)
    assert first.json()["account"]["balance"] == "15.50000"
    assert again.json()["transaction_id"] == first.json()["transaction_id"]
    assert "reference" in conflict.json()
    assert balance("acme") == Decimal("15.5")


def test_a_topup_says_who_made_it(api, accounts, make_key):
    key = make_key(org="", role="owner", scopes=("read",))

    response = post(api, "/api/accounts/acme/topup", key, {"amount": "1"})

    from accounting.models import LedgerTransaction

    assert LedgerTransaction.objects.get(pk=response.json()["transaction_id"]).created_by.startswith(
        "api key llk_"
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"amount": "0"}, "amount"),
        ({"amount": "abc"}, "amount"),
        ({}, "amount"),
        ({"amount": "1", "kind": "platform"}, "kind"),
    ],
)
def test_bad_topup_input_is_a_400_naming_the_field(api, accounts, platform_key, data, field):
    response = post(api, "/api/accounts/acme/topup", platform_key, data)

    assert response.status_code == 400
    assert field in response.json()


def test_a_topup_of_an_org_without_account_is_a_404(api, platform_key):
    assert post(api, "/api/accounts/nobody/topup", platform_key, {"amount": "1"}).status_code == 404


def test_an_org_key_cannot_top_up_even_its_own_account(api, accounts, acme_admin_key):
    assert post(api, "/api/accounts/acme/topup", acme_admin_key, {"amount": "100"}).status_code == 403
    assert balance("acme") == Decimal(5)


@pytest.mark.parametrize("path", ["a%00b/", "a%00b/lines", "a%00b/topup", "a%ED%A0%80b/", "x" * 65 + "/"])
def test_a_nul_or_bad_org_in_the_path_is_a_400_naming_org(api, accounts, platform_key, path):
    url = f"/api/accounts/{path}"
    response = (
        post(api, url, platform_key, {"amount": "1"})
        if path.endswith("topup")
        else (api.get(url, **bearer(platform_key)))
    )

    assert response.status_code in (400, 404), response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    if response.status_code == 400:
        assert "org" in response.json()


def test_a_nul_org_in_the_path_is_refused_for_an_org_key_too(api, accounts, acme_key):
    assert api.get("/api/accounts/a%00b/lines", **bearer(acme_key)).status_code == 400


def test_a_topup_that_would_overflow_the_balance_is_a_400_naming_it(api, accounts, platform_key):
    big = "9999999999999.99999"  # the largest balance Decimal(18,5) holds

    first = post(api, "/api/accounts/acme/topup", platform_key, {"amount": "9999999999980"})
    over = post(api, "/api/accounts/acme/topup", platform_key, {"amount": "100"})
    too_big = post(api, "/api/accounts/acme/topup", platform_key, {"amount": "99999999999999"})

    assert first.status_code == 201
    assert over.status_code == 400 and "amount" in over.json()
    assert big in over.json()["amount"] and "balance" in over.json()["amount"]
    assert too_big.status_code == 400 and "amount" in too_big.json()
    assert balance("acme") == Decimal("9999999999985")


def test_topups_that_would_overflow_the_external_account_are_refused(api, platform_key):
    make_accounts(customers=("acme", "globex"), funds=Decimal(0))
    assert post(api, "/api/accounts/acme/topup", platform_key, {"amount": "9999999999999"}).status_code == 201

    refused = post(api, "/api/accounts/globex/topup", platform_key, {"amount": "5"})

    assert refused.status_code == 400 and "external" in refused.json()["amount"]
    assert balance("globex") == Decimal(0)


def test_ledger_lines_declare_usage_id_nullable_and_top_ups_answer_null(api, accounts, acme_key):
    schema = api.get("/api/schema/?format=json", **bearer(acme_key)).json()
    line = schema["components"]["schemas"]["LedgerLine"]["properties"]

    lines = api.get("/api/accounts/acme/lines", **bearer(acme_key)).json()["results"]

    assert line["usage_id"].get("nullable") is True
    assert lines and all(row["usage_id"] is None for row in lines if row["transaction_kind"] == "topup")


def test_a_platform_admin_freezes_an_account_and_changes_its_limit(api, accounts, platform_key):
    response = api.patch(
        "/api/accounts/acme/",
        {"status": "frozen", "credit_limit": "20"},
        format="json",
        **bearer(platform_key),
    )
    owner = api.patch(
        "/api/accounts/acme/", {"kind": "owner", "status": "frozen"}, format="json", **bearer(platform_key)
    )
    empty = api.patch("/api/accounts/acme/", {}, format="json", **bearer(platform_key))

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["credit_limit"]) == ("frozen", "20.00000")
    assert owner.json()["kind"] == "owner"
    assert empty.status_code == 400 and "credit_limit" in empty.json()


def test_an_org_reads_its_ledger_lines_newest_first(api, accounts, acme_reader_key, globex_key):
    insert_usage([usage_row(transno="first"), usage_row(transno="second")])
    account_pending_usage()

    response = api.get("/api/accounts/acme/lines?kind=customer", **bearer(acme_reader_key))
    other = api.get("/api/accounts/acme/lines", **bearer(globex_key))
    bad = api.get("/api/accounts/acme/lines?kind=gold", **bearer(acme_reader_key))

    assert response.status_code == 200
    lines = response.json()["results"]
    assert [(line["reference"], line["amount"], line["transaction_kind"]) for line in lines] == [
        ("second", "-0.00600", "usage"),
        ("first", "-0.00600", "usage"),
        ("", "5.00000", "topup"),
    ]
    assert other.status_code == 404
    assert bad.status_code == 400 and "kind" in bad.json()


def test_listing_ledger_lines_takes_a_fixed_number_of_queries(
    api, accounts, acme_key, django_assert_max_num_queries
):
    insert_usage([usage_row() for _ in range(30)])
    account_pending_usage()

    with django_assert_max_num_queries(5):
        response = api.get("/api/accounts/acme/lines?page_size=50", **bearer(acme_key))

    assert len(response.json()["results"]) == 31


# --- failed postings ------------------------------------------------------------------------------


@pytest.fixture
def failures():
    """acme has no money (insufficient_balance), globex no account (no_account), one record no price."""
    make_accounts(customers=("acme",), funds=Decimal(0))
    insert_usage(
        [
            usage_row(transno="acme-1"),
            usage_row(transno="acme-2", amount=None, model_name="unpriced"),
            usage_row(transno="globex-1", userorgid="globex"),
        ]
    )
    account_pending_usage()
    return {f.transno: f for f in AccountingFailure.objects.all()}


def test_failures_need_a_key(api):
    assert api.get("/api/accounting-failures/").status_code == 401


def test_an_org_key_sees_only_its_orgs_failures(api, failures, acme_reader_key):
    response = api.get("/api/accounting-failures/", **bearer(acme_reader_key))
    forced = api.get("/api/accounting-failures/?userorgid=globex", **bearer(acme_reader_key))

    assert {f["transno"] for f in response.json()["results"]} == {"acme-1", "acme-2"}
    assert forced.json()["results"] == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {"acme-1", "acme-2", "globex-1"}),
        ("?error_code=no_price", {"acme-2"}),
        ("?userorgid=globex", {"globex-1"}),
        ("?transno=acme-1", {"acme-1"}),
        ("?model_name=unpriced", {"acme-2"}),
        ("?start_date=2026-11-20&end_date=2026-11-20&status=open", {"acme-1", "acme-2", "globex-1"}),
        ("?start_date=2026-11-21", set()),
        ("?userid=u-1&llmid=gpt-4o", {"acme-1", "acme-2", "globex-1"}),
    ],
)
def test_a_platform_key_searches_all_failures(api, failures, platform_reader_key, query, expected):
    response = api.get(f"/api/accounting-failures/{query}", **bearer(platform_reader_key))

    assert response.status_code == 200
    assert {f["transno"] for f in response.json()["results"]} == expected


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?error_code=oops", "error_code"),
        ("?status=closed", "status"),
        ("?start_date=yesterday", "start_date"),
        ("?end_date=2026-13-01", "end_date"),
        ("?start_date=2026-11-20&end_date=2026-11-01", "end_date"),
        ("?ordering=error_message", "ordering"),
        ("?ordering=-amount,bogus", "ordering"),
    ],
)
def test_a_bad_failure_filter_is_a_400_naming_it(api, platform_key, query, field):
    response = api.get(f"/api/accounting-failures/{query}", **bearer(platform_key))

    assert response.status_code == 400
    assert field in response.json()


def test_failures_are_listed_in_the_order_asked_for(api, platform_key):
    # Three orgs with no account: three failures, of three amounts.
    insert_usage([usage_row(transno=f"t-{n}", userorgid=f"org-{n}", amount=Decimal(n)) for n in (2, 3, 1)])
    account_pending_usage()

    def transnos(ordering: str) -> list[str]:
        response = api.get(f"/api/accounting-failures/?ordering={ordering}", **bearer(platform_key))
        assert response.status_code == 200, response.json()
        return [f["transno"] for f in response.json()["results"]]

    assert transnos("amount") == ["t-1", "t-2", "t-3"]
    assert transnos("-amount") == ["t-3", "t-2", "t-1"]


def test_listing_failures_takes_a_fixed_number_of_queries(
    api, failures, platform_key, django_assert_max_num_queries
):
    with django_assert_max_num_queries(4):
        response = api.get("/api/accounting-failures/", **bearer(platform_key))

    assert response.json()["count"] == 3


def test_one_failure_of_another_org_is_a_404_and_a_bad_id_a_400(api, failures, acme_key):
    own = api.get(f"/api/accounting-failures/{failures['acme-1'].pk}/", **bearer(acme_key))
    other = api.get(f"/api/accounting-failures/{failures['globex-1'].pk}/", **bearer(acme_key))
    bad = api.get("/api/accounting-failures/abc/", **bearer(acme_key))

    assert (own.status_code, other.status_code, bad.status_code) == (200, 404, 400)
    assert own.json()["error_code"] == "insufficient_balance"
    assert "id" in bad.json()


def test_an_org_admin_retries_its_own_failure(api, failures, acme_admin_key):
    failure = failures["acme-1"]
    ledger_topup(org="acme", amount=Decimal(1))

    response = post(api, f"/api/accounting-failures/{failure.pk}/retry", acme_admin_key)

    assert response.status_code == 200
    body = response.json()
    assert body["result"] == "accounted"
    assert body["failure"]["status"] == "resolved"
    assert body["failure"]["resolved_by"].startswith("api key llk_")
    assert LLMUsage.objects.get(pk=failure.usage_id).accounting_status == "accounted"


def test_a_retry_that_fails_again_says_so(api, failures, platform_key):
    response = post(api, f"/api/accounting-failures/{failures['acme-1'].pk}/retry/", platform_key)

    assert response.json()["result"] == "failed"
    assert response.json()["failure"]["attempts"] == 2


def test_retry_needs_an_admin_of_the_failures_org(api, failures, acme_key, globex_admin_key):
    pk = failures["acme-1"].pk

    assert post(api, f"/api/accounting-failures/{pk}/retry", acme_key).status_code == 403
    assert post(api, f"/api/accounting-failures/{pk}/retry", globex_admin_key).status_code == 404


def test_retry_many(api, failures, platform_key):
    ledger_topup(org="acme", amount=Decimal(1))
    ids = [failures["acme-1"].pk, failures["globex-1"].pk, 999999]

    response = post(api, "/api/accounting-failures/retry", platform_key, {"ids": ids})

    assert response.status_code == 200
    assert response.json()["results"] == {
        str(ids[0]): "accounted",
        str(ids[1]): "failed",
        "999999": "not_found",
    }


@pytest.mark.parametrize("data", [{}, {"ids": []}, {"ids": ["x"]}, {"ids": 5}])
def test_retry_many_names_bad_ids(api, platform_key, data):
    response = post(api, "/api/accounting-failures/retry", platform_key, data)

    assert response.status_code == 400
    assert "ids" in response.json()


def test_a_platform_admin_resolves_and_ignores(api, failures, platform_key):
    resolved = post(api, f"/api/accounting-failures/{failures['acme-1'].pk}/resolve", platform_key)
    ignored = post(api, f"/api/accounting-failures/{failures['acme-2'].pk}/ignore", platform_key)
    refused = post(api, f"/api/accounting-failures/{failures['acme-1'].pk}/ignore", platform_key)

    assert (resolved.status_code, ignored.status_code, refused.status_code) == (200, 200, 409)
    assert resolved.json()["status"] == "resolved"
    assert resolved.json()["resolved_by"].startswith("api key llk_")
    assert resolved.json()["resolved_at"]
    assert ignored.json()["status"] == "ignored"


@pytest.mark.parametrize("action", ["resolve", "ignore"])
def test_an_org_admin_cannot_write_off_a_failure(api, failures, acme_admin_key, action):
    response = post(api, f"/api/accounting-failures/{failures['acme-1'].pk}/{action}", acme_admin_key)

    assert response.status_code == 403
    assert AccountingFailure.objects.get(pk=failures["acme-1"].pk).status == "open"


def test_a_staff_session_acts_by_its_django_permissions(api, failures):
    staff = User.objects.create_user("ops", password="pw", is_staff=True)
    api.force_login(staff)
    url = f"/api/accounting-failures/{failures['acme-1'].pk}/resolve"

    assert api.get("/api/accounting-failures/").status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_accountingfailure"))
    listed = api.get("/api/accounting-failures/")
    refused = api.post(url)
    staff.user_permissions.add(Permission.objects.get(codename="change_accountingfailure"))
    resolved = api.post(url)

    assert listed.json()["count"] == 3
    assert refused.status_code == 403 and "change_accountingfailure" in refused.json()["detail"]
    assert resolved.json()["resolved_by"] == "ops"


def test_a_non_staff_session_is_refused(api, failures):
    api.force_login(User.objects.create_user("visitor", password="pw"))

    assert api.get("/api/accounting-failures/").status_code == 403


def test_the_api_schema_describes_the_accounting_endpoints(api):
    with CaptureQueriesContext(connection) as queries:
        response = api.get("/api/schema/?format=json")

    assert response.status_code == 200
    # The schema is built from the code alone: describing the API costs the database nothing.
    assert [query["sql"] for query in queries] == []

    paths = response.json()["paths"]
    assert "/api/accounts/{org}/topup" in paths or "/api/accounts/{org}/topup/" in paths
    assert any(path.startswith("/api/accounting-failures/{id}/retry") for path in paths)


def test_listing_accounts_takes_a_fixed_number_of_queries(
    api, accounts, platform_key, django_assert_max_num_queries
):
    with django_assert_max_num_queries(4):
        response = api.get("/api/accounts/", **bearer(platform_key))

    assert response.json()["count"] == 6


def test_failures_can_be_ordered_by_an_allowed_field(api, failures, platform_key):
    from accounting.failures import failure_record

    failure = failures["acme-1"]
    failure_record(
        usage_id=failure.usage_id,
        transno=failure.transno,
        use_date=failure.use_date,
        error_code="internal",
        error_message="again",
    )

    response = api.get("/api/accounting-failures/?ordering=-attempts", **bearer(platform_key))

    assert [f["transno"] for f in response.json()["results"]][0] == "acme-1"
