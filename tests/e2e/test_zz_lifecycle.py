"""Crash and shutdown, run last: a killed instance comes back and says so; `down` leaves
nothing behind."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket

import httpx

from support.poll import poll_until


def _state(mesh) -> dict:
    return {p["name"]: p for p in json.loads((mesh.run_dir / "state.json").read_text())["processes"]}


MUG = {"customerId": "c", "currency": "EUR", "items": [{"productId": "sku-travel-mug", "quantity": 1}],
       "payment": {"cardToken": "tok_visa"}}


def _place(mesh, key: str) -> httpx.Response:
    return httpx.post(f"{mesh.gateway}/v1/orders", headers={"Idempotency-Key": key, **mesh.auth()}, json=MUG, timeout=30)


def test_no_instance_crashed_during_the_tests(mesh):
    restarted = {name: p["restarts"] for name, p in _state(mesh).items() if p["restarts"]}
    assert restarted == {}


def test_a_crashed_instance_is_restarted_and_the_restart_shows_in_status(mesh):
    victim = _state(mesh)["payments"]
    os.kill(victim["pid"], signal.SIGKILL)
    poll_until(lambda: _state(mesh)["payments"]["restarts"] >= 1 and _state(mesh)["payments"]["pid"] not in (None, victim["pid"]),
               timeout=15, message="payments restarted by the supervisor")

    def healthy_again():
        out = mesh.runner("status", check=False).stdout
        row = next(line for line in out.splitlines() if line.startswith("payments "))
        return row.split()[-2:] == ["1", "passing"] and row

    row = poll_until(healthy_again, timeout=30, interval=0.3, message="payments passing again with 1 restart")
    assert "passing" in row


def test_orders_still_work_after_the_restart(mesh):
    reply = httpx.post(f"{mesh.gateway}/v1/orders", headers={"Idempotency-Key": "after-restart", **mesh.auth()}, timeout=30,
                       json={
        "customerId": "c", "currency": "JPY", "items": [{"productId": "sku-filter-papers", "quantity": 3}],
        "payment": {"cardToken": "tok_visa"}})
    assert reply.status_code == 200, reply.text
    assert reply.json()["order"]["total"]["currencyCode"] == "JPY"


def test_a_crash_of_orders_loses_no_acknowledged_order(mesh):
    acknowledged = []
    for n in range(5):
        reply = _place(mesh, f"before-orders-crash-{n}")
        assert reply.status_code == 200, reply.text
        acknowledged.append(reply.json()["order"])
    victim = _state(mesh)["orders"]["pid"]
    os.kill(victim, signal.SIGKILL)
    poll_until(lambda: _state(mesh)["orders"]["pid"] not in (None, victim), timeout=15, message="orders restarted")
    for placed in acknowledged:
        reply = poll_until(lambda: (r := httpx.get(f"{mesh.gateway}/v1/orders/{placed['id']}", headers=mesh.auth(),
                                                   timeout=10)).status_code == 200 and r,
                           timeout=20, interval=0.2, message=f"order {placed['id']} readable after the crash")
        assert reply.json()["order"] == placed
    again = _place(mesh, "before-orders-crash-0")  # the same key still gives the same order
    assert again.status_code == 200 and again.json()["order"]["id"] == acknowledged[0]["id"]


def test_a_consul_crash_loses_no_order_and_every_instance_registers_again(mesh):
    instances = [name for name, p in _state(mesh).items() if p["service"]]
    placed = _place(mesh, "before-consul-crash")
    assert placed.status_code == 200, placed.text
    os.kill(_state(mesh)["consul"]["pid"], signal.SIGKILL)  # `consul agent -dev` comes back empty

    def all_registered_and_passing():
        checks = httpx.get(f"{mesh.consul}/v1/health/state/passing", timeout=2,
                           headers={"X-Consul-Token": mesh.consul_token("read")}).json()
        return set(instances) <= {check["ServiceID"] for check in checks}

    poll_until(all_registered_and_passing, timeout=30, interval=0.3, message="every instance registered again")
    again = httpx.get(f"{mesh.gateway}/v1/orders/{placed.json()['order']['id']}", headers=mesh.auth(), timeout=10)
    assert again.status_code == 200 and again.json()["order"]["status"] == "ORDER_STATUS_CONFIRMED"
    poll_until(lambda: _place(mesh, "after-consul-crash").status_code == 200, timeout=15, interval=0.3,
               message="a new order through the recovered mesh")


def _descendants(pid: int) -> set[int]:
    """Every process below `pid` (span exporters, Consul's and Jaeger's children, ...)."""
    found, todo = set(), [pid]
    while todo:
        for task in pathlib.Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                children = {int(c) for c in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += list(children - found)
            found |= children
    return found


def test_down_stops_every_process_and_frees_every_port(mesh):
    supervisor = json.loads((mesh.run_dir / "state.json").read_text())["supervisor_pid"]
    pids = {p["pid"] for p in _state(mesh).values() if p["pid"]} | _descendants(supervisor) | {supervisor}
    assert len(pids) > len(_state(mesh)) + 1  # the Python instances' span exporters are among them
    out = mesh.runner("down")
    assert "stopped" in out.stdout

    def gone(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] == "Z"

    poll_until(lambda: all(gone(pid) for pid in pids), timeout=5, message="every process of the mesh to be gone")
    listening = []
    for port in mesh.ports():
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                listening.append(port)
    assert listening == []
