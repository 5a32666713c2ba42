"""The Python SDK without a component: values, the harness, and the samples' behaviour
(the same as their Rust twins), run under pytest by scripts/test."""

import datetime as dt
import importlib.util
import json
from decimal import Decimal
from pathlib import Path

import pytest

from sluice_sdk import (
    BusinessError,
    Condition,
    Entity,
    EntityReference,
    Money,
    OptionSet,
    Output,
    TransientError,
    records,
    testing,
    values,
)

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "sample-plugins" / "examples"


def sample(name):
    path = ROOT / "sample-plugins" / "python" / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"sample_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.execute


def test_values_read_and_write_the_json_form_the_host_uses():
    forms = [
        (None, None),
        ("text", "text"),
        (42, 42),
        (True, True),
        ({"decimal": "12.50"}, Decimal("12.50")),
        ({"money": "100.00"}, Money("100.00")),
        ({"date-time": "2026-11-23T05:00:00Z"}, dt.datetime(2026, 11, 23, 5, tzinfo=dt.timezone.utc)),
        ({"option-set": 3}, OptionSet(3)),
        ({"entity-reference": {"entity": "account", "id": "a1", "name": "Contoso"}}, EntityReference("account", "a1", "Contoso")),
    ]
    for json_form, native in forms:
        read = values.from_json(json_form)
        assert read == native and type(read) is type(native), json_form
        assert values.to_json(read) == json_form
    assert values.from_json(12.5) == Decimal("12.5")


def test_values_the_host_cannot_hold_are_refused_by_name():
    with pytest.raises(ValueError, match="float"):
        Output(x=1.5)
    with pytest.raises(ValueError, match="time zone"):
        Output(x=dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="decimal places"):
        Output(x=Decimal("0." + "1" * 19))
    with pytest.raises(ValueError, match="64-bit"):
        Output(x=2**63)
    assert values.decimal_parts(Decimal("-12.50")) == (-1250, 2)
    assert values.from_parts(-1250, 2) == Decimal("-12.50")


def test_echo_returns_its_inputs():
    result = testing.run(sample("echo"), {"message": "Ping", "entity": "none", "input_parameters": {"n": 7, "s": "x"}})
    assert result.succeeded
    assert result.output == Output(n=7, s="x")


def test_account_number_numbers_after_the_highest_in_use():
    result = testing.run(
        sample("account_number"),
        EXAMPLES / "account-create.json",
        records=EXAMPLES / "accounts.json",
        config="ACC",
    )
    assert result.error is None, result.error
    assert result.output.output_parameters == {"accountnumber": "ACC-000042"}
    assert result.changes == [("update", "account", "a-new")]
    assert result.records.get("account", "a-new")["accountnumber"] == "ACC-000042"
    assert result.trace == ["2 accounts numbered; a-new becomes ACC-000042"]


def test_the_harness_creates_the_record_a_context_is_about():
    # No records file: the new account exists as the Create made it, so the update works.
    result = testing.run(sample("account_number"), EXAMPLES / "account-create.json", config="INV")
    assert result.output.output_parameters == {"accountnumber": "INV-000001"}
    assert result.records.get("account", "a-new").attributes == {"name": "Fabrikam", "accountnumber": "INV-000001"}


def test_errors_become_what_the_job_records():
    def business(ctx):
        raise BusinessError("credit limit exceeded")

    def transient(ctx):
        raise TransientError("the rates service is busy")

    def bug(ctx):
        return {}["missing"]

    def not_found(ctx):
        records.retrieve("account", "nope")

    context = {"message": "Create", "entity": "account"}
    assert testing.run(business, context).error == ("business", "credit limit exceeded")
    assert testing.run(transient, context).error == ("transient", "the rates service is busy")
    assert testing.run(bug, context).error == ("transient", "KeyError: 'missing'")
    assert testing.run(not_found, context).error == ("transient", "RecordNotFound: account nope")


def test_queries_follow_the_hosts_operators():
    store = [
        Entity("lead", "l1", {"score": 10, "country": "US"}),
        Entity("lead", "l2", {"score": Decimal("20.5"), "country": "DE"}),
        Entity("lead", "l3", {"country": None}),
    ]

    def count(*conditions, top=None):
        def execute(ctx):
            return Output(n=len(records.query("lead", where=conditions, top=top)))

        return testing.run(execute, {"message": "Ping", "entity": "lead"}, records=store).output.output_parameters["n"]

    assert count(Condition("score", "greater-than", 15)) == 1
    assert count(Condition("score", "less-equal", Decimal("20.5"))) == 2
    assert count(Condition("country", "is-null")) == 1
    assert count(Condition("country", "not-equal", "US")) == 2
    assert count(top=2) == 2
    with pytest.raises(ValueError, match="unknown operator"):
        Condition("score", "like", 1)


def test_stages_see_what_the_host_shows_them():
    context = json.loads((EXAMPLES / "account-create.json").read_text())
    seen = {}

    def execute(ctx):
        seen["target"], seen["post"] = ctx.target, ctx.post_image
        return None

    testing.run(execute, context, stage="pre-operation")
    assert seen["post"] is None and seen["target"].attributes == {"name": "Fabrikam"}
    testing.run(execute, context)
    assert seen["post"].attributes == {"name": "Fabrikam"} and seen["target"] is None


def test_the_packaged_wit_is_the_hosts():
    packaged = Path(__file__).resolve().parents[1] / "sluice_sdk" / "wit" / "plugin.wit"
    assert packaged.read_text() == (ROOT / "wit" / "plugin.wit").read_text(), "copy wit/plugin.wit into the SDK"


def test_credit_validator_refuses_a_negative_limit_with_a_business_error():
    validate = sample("credit_validator")
    refused = testing.run(validate, EXAMPLES / "account-negative-credit.json")
    assert refused.error == ("business", "Credit limit cannot be negative (got -500.00).")
    nameless = {"message": "Create", "entity": "account", "stage": "pre-validation", "target": {"logical_name": "account", "id": "a", "attributes": {}}}
    assert testing.run(validate, nameless).error == ("business", "An account needs a name.")
    fine = {"message": "Create", "entity": "account", "target": {"logical_name": "account", "id": "a", "attributes": {"name": "Contoso", "creditlimit": {"money": "10"}}}}
    assert testing.run(validate, fine).output == Output(valid=True)
