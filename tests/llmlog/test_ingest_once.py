"""Work ingest now does once per record or per value, not again each time (bench_adapter_cpu.py), held
to the answers it gave before: the payload hash is still the digest of the record's sorted JSON, a
caller's address parsed once answers the same for every record that sends it, and a NUL is still found
in every text field when the record's JSON is read for it first."""

import hashlib
import json

import msgspec
import pytest

from llmlog.ingest.rules import NUL_MESSAGE
from llmlog.ingest.service import usage_ingest
from llmlog.ingest.wire import UsageIn
from llmlog.models import LLMUsage
from tests.factories import usage_payload

pytestmark = pytest.mark.django_db


def ingest(records: list[dict]):
    return usage_ingest(body=json.dumps(records).encode())


def test_payload_hash_is_the_digest_of_the_record_as_sent_keys_sorted():
    payload = usage_payload(transno="hash-1", metadata={"b": 1, "a": [2, {"d": 3, "c": 4}]})
    ingest([payload])

    # What every resend since the first release is compared with: a change here would make them conflicts.
    expected = hashlib.sha256(
        msgspec.json.encode(msgspec.json.decode(json.dumps(payload), type=UsageIn), order="sorted")
    ).hexdigest()
    assert LLMUsage.objects.get(transno="hash-1").payload_hash == expected


def test_an_address_sent_by_many_records_is_stored_and_refused_alike_for_each():
    records = [usage_payload(transno=f"ip-{i}", request_ip="2001:DB8:0:0::1") for i in range(3)]
    records += [usage_payload(transno=f"bad-ip-{i}", request_ip="10.0.0.300") for i in range(2)]

    result = ingest(records)

    assert [item.status for item in result.items] == ["created"] * 3 + ["error"] * 2
    assert set(LLMUsage.objects.filter(transno__startswith="ip-").values_list("request_ip", flat=True)) == {
        "2001:db8::1"
    }
    assert [item.errors for item in result.items[3:]] == [
        {"request_ip": "'10.0.0.300' is not an IPv4 or IPv6 address."}
    ] * 2


def test_a_nul_is_found_in_a_text_field_beside_text_that_only_looks_like_one():
    records = [
        usage_payload(transno="looks-like-nul", username="C:\\u0000"),  # a backslash, then "u0000"
        usage_payload(transno="nul", username="a\x00b", feature="C:\\u0000"),
    ]

    result = ingest(records)

    assert result.items[0].status == "created"
    assert LLMUsage.objects.get(transno="looks-like-nul").username == "C:\\u0000"
    assert result.items[1].errors == {"username": NUL_MESSAGE}
