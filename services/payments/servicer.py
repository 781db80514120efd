"""PaymentService: idempotent charges and refunds against a fake card network.

The card network is two test tokens: `tok_visa` is accepted, `tok_declined` is declined.
"""

from __future__ import annotations

import os
import re

from mesh.runtime.config import InstanceConfig
from mesh.runtime.errors import failed_precondition, invalid_argument
from mesh.runtime.instance import Servicer
from services.payments.ledger import Ledger
from shop.payments.v1 import payments_pb2, payments_pb2_grpc

DOMAIN = "payments.shop.local"
ACCEPTED_TOKENS = frozenset({"tok_visa"})
DECLINED_TOKENS = frozenset({"tok_declined"})
CURRENCY = re.compile(r"^[A-Z]{3}$")

Status = payments_pb2.ChargeStatus


def _declined(charge_id: str):
    return failed_precondition(
        "the card was declined", "CARD_DECLINED", DOMAIN, {"charge_id": charge_id, "decline_code": "generic_decline"}
    )


def validate_charge(request: payments_pb2.ChargeRequest) -> list[tuple[str, str]]:
    violations = []
    if not request.charge_id:
        violations.append(("charge_id", "required"))
    if not request.order_id:
        violations.append(("order_id", "required"))
    amount = request.amount
    if not CURRENCY.match(amount.currency_code):
        violations.append(("amount.currency_code", "must be an ISO 4217 code such as EUR"))
    if amount.units < 0 or amount.nanos < 0 or (amount.units == 0 and amount.nanos == 0):
        violations.append(("amount", "must be positive"))
    if not request.card_token:
        violations.append(("card_token", "required"))
    elif request.card_token not in ACCEPTED_TOKENS | DECLINED_TOKENS:
        violations.append(("card_token", "unknown card token"))
    return violations


class PaymentServicer(payments_pb2_grpc.PaymentServiceServicer):
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def Charge(self, request, context):
        violations = validate_charge(request)
        if violations:
            raise invalid_argument(violations)
        with self._ledger.transaction() as db:
            existing = self._ledger.find(db, request.charge_id)
            if existing is None:
                status = Status.CHARGE_STATUS_DECLINED if request.card_token in DECLINED_TOKENS else Status.CHARGE_STATUS_CAPTURED
                existing = payments_pb2.Charge(
                    id=request.charge_id, order_id=request.order_id, amount=request.amount, status=status
                )
                self._ledger.insert(db, existing, request.card_token)
        # A repeated request answers exactly as the first did, including a refund tombstone
        # written by a compensation that overtook this charge.
        if existing.status == Status.CHARGE_STATUS_DECLINED:
            raise _declined(request.charge_id)
        return payments_pb2.ChargeResponse(charge=existing)

    def Refund(self, request, context):
        if not request.charge_id:
            raise invalid_argument([("charge_id", "required")])
        with self._ledger.transaction() as db:
            charge = self._ledger.find(db, request.charge_id)
            if charge is None:
                # Tombstone: a Charge that arrives after its refund must capture nothing.
                charge = payments_pb2.Charge(id=request.charge_id, status=Status.CHARGE_STATUS_REFUNDED)
                self._ledger.insert(db, charge, "")
            elif charge.status == Status.CHARGE_STATUS_CAPTURED:
                self._ledger.set_status(db, charge.id, Status.CHARGE_STATUS_REFUNDED)
                charge.status = Status.CHARGE_STATUS_REFUNDED
        return payments_pb2.RefundResponse(charge=charge)


def make_servicers(config: InstanceConfig, settings: object) -> list[Servicer]:
    servicer = PaymentServicer(Ledger(os.path.join(config.data_dir, "payments.db")))
    return [Servicer.of(payments_pb2, "PaymentService", payments_pb2_grpc.add_PaymentServiceServicer_to_server, servicer)]
