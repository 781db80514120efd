import grpc
import pytest
from google.type import money_pb2

from mesh.runtime.errors import details_of
from services.payments.ledger import Ledger
from services.payments.servicer import PaymentServicer
from shop.payments.v1 import payments_pb2, payments_pb2_grpc

Status = payments_pb2.ChargeStatus
EUR_10 = money_pb2.Money(currency_code="EUR", units=10)


@pytest.fixture
def payments(serve, tmp_path):
    servicer = PaymentServicer(Ledger(str(tmp_path / "payments.db")))
    return payments_pb2_grpc.PaymentServiceStub(serve(payments_pb2_grpc.add_PaymentServiceServicer_to_server, servicer))


def charge(stub, charge_id, token="tok_visa", amount=EUR_10):
    return stub.Charge(payments_pb2.ChargeRequest(charge_id=charge_id, order_id="o1", amount=amount, card_token=token))


def test_a_repeated_charge_returns_the_first_and_captures_once(payments, tmp_path):
    first = charge(payments, "c1").charge
    again = charge(payments, "c1").charge
    assert first == again and first.status == Status.CHARGE_STATUS_CAPTURED
    rows = Ledger(str(tmp_path / "payments.db")).connection().execute("SELECT COUNT(*) FROM charges").fetchone()[0]
    assert rows == 1


def test_a_declined_card_is_failed_precondition_with_a_reason_every_time(payments):
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as caught:
            charge(payments, "c2", token="tok_declined")
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        (info,) = details_of(caught.value)
        assert info.reason == "CARD_DECLINED"


def test_refund_before_charge_leaves_a_tombstone_so_the_late_charge_takes_nothing(payments):
    refunded = payments.Refund(payments_pb2.RefundRequest(charge_id="c3")).charge
    assert refunded.status == Status.CHARGE_STATUS_REFUNDED
    late = charge(payments, "c3").charge
    assert late.status == Status.CHARGE_STATUS_REFUNDED


def test_refund_is_idempotent(payments):
    charge(payments, "c4")
    first = payments.Refund(payments_pb2.RefundRequest(charge_id="c4")).charge
    second = payments.Refund(payments_pb2.RefundRequest(charge_id="c4")).charge
    assert first == second and first.status == Status.CHARGE_STATUS_REFUNDED


def test_invalid_charge_names_every_field(payments):
    with pytest.raises(grpc.RpcError) as caught:
        payments.Charge(payments_pb2.ChargeRequest(amount=money_pb2.Money(currency_code="eu"), card_token="tok_x"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (bad,) = details_of(caught.value)
    assert {v.field for v in bad.field_violations} == {"charge_id", "order_id", "amount.currency_code", "amount", "card_token"}
