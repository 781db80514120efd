"""Traffic scenarios: apply one of istio/scenarios/ to the running mesh, drive a little traffic
through the gateway and print what a user sees; take them off again.

  python -m mesh.runner scenario                       list them            (make scenario)
  python -m mesh.runner scenario NAME                  apply, drive, count  (make scenario name=NAME)
  python -m mesh.runner scenario NAME --traffic-only   count again          (make scenario-traffic name=NAME)
  python -m mesh.runner scenario NAME --apply-only     apply, no traffic
  python -m mesh.runner scenario --off                 defaults again       (make scenario-off)

Applying a scenario first takes off whatever scenario is applied (one at a time: two scenarios may
define the same host's VirtualService), then copies the scenario's YAML files into the folder the
running control plane watches (istio/ under `make up`; the copies are .gitignored there) and sets
its chaos overrides (`mesh/runner/chaos.py`: an instance restarted with injected failures or
delay), in the order its README walks through. A scenario resource replaces the default one of the
same kind, namespace and name, as `kubectl apply` would: the default's file is parked
(`inventory.yaml` -> `inventory.yaml.parked`, which the control plane does not read) while the
scenario is applied. `--off` removes every scenario file from that folder and every chaos
override, and puts parked defaults back: istio/'s defaults again.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import json
import pathlib
import shutil
import statistics
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import yaml

from mesh.auth import tokens
from mesh.runner import chaos, mtls, probes, supervisor, topology

__all__ = ["PARKED", "SCENARIOS", "Mesh", "Scenario", "Step", "applied_files", "main", "scenario_files"]

FOLDER = topology.ROOT / "istio" / "scenarios"
PARKED = ".parked"  # suffix of a default file a scenario's resource replaces for now
SETTLE = 1.0  # seconds: the control plane reads istio/ every 0.2 s and pushes at once
PRODUCT = "sku-grinder"
SCENARIO_USER = "scenario-traffic"


# -- the running mesh ---------------------------------------------------------------------------------
@dataclasses.dataclass
class Reply:
    status: int  # 0: no HTTP answer
    body: dict[str, Any]
    seconds: float

    @property
    def error(self) -> str:
        error = self.body.get("error", {})
        return f"{error.get('code', '?')}: {error.get('message', '')}" if isinstance(error, dict) else str(error)


@dataclasses.dataclass
class Mesh:
    run_dir: pathlib.Path
    offset: int

    def state(self) -> dict[str, Any]:
        """The runner's state.json (PIDs, restarts), or an empty one."""
        return supervisor.read_state(self.run_dir)

    @property
    def istio_dir(self) -> pathlib.Path:
        """The folder the running control plane watches (recorded by the supervisor)."""
        recorded = self.state().get("istio_dir")
        return pathlib.Path(recorded) if recorded else topology.istio_dir_from_env()

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{topology.Ports(self.offset).gateway}"

    def process(self, name: str) -> dict[str, Any]:
        return next(p for p in self.state()["processes"] if p["name"] == name)

    def log_size(self, name: str) -> int:
        try:
            return (self.run_dir / "logs" / f"{name}.log").stat().st_size
        except OSError:
            return 0

    def log_since(self, name: str, offset: int) -> list[str]:
        try:
            with open(self.run_dir / "logs" / f"{name}.log", "rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace").splitlines()
        except OSError:
            return []

    def http(self, method: str, path: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
             timeout: float = 30.0) -> Reply:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.gateway + path, data=data, method=method,
                                         headers={"Content-Type": "application/json", **(headers or {})})
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                status, raw = answer.status, answer.read()
        except urllib.error.HTTPError as answer:
            status, raw = answer.code, answer.read()
        except OSError as error:
            return Reply(0, {"error": str(error)}, time.monotonic() - started)
        try:
            parsed = json.loads(raw or b"{}")
        except ValueError:
            parsed = {"error": raw.decode(errors="replace")[:200]}
        return Reply(status, parsed, time.monotonic() - started)

    def product_page(self, headers: dict[str, str] | None = None, product: str = PRODUCT) -> Reply:
        return self.http("GET", f"/v1/products/{product}?currency=EUR", headers=headers)

    def order(self, product: str, headers: dict[str, str] | None = None) -> Reply:
        """An order as the scenario user (placing orders needs a token: minted with the run
        folder's key, as `make token` does)."""
        token = tokens.mint(tokens.SigningKey.load_or_create(topology.auth_dir(self.run_dir)), SCENARIO_USER)
        return self.http("POST", "/v1/orders", {
            "customerId": "scenario", "currency": "EUR", "items": [{"productId": product, "quantity": 1}],
            "payment": {"cardToken": "tok_visa"}}, {"Idempotency-Key": f"scenario-{uuid.uuid4().hex}",
                                                    "Authorization": f"Bearer {token}", **(headers or {})})

    def in_stock(self, wanted: int) -> list[str]:
        """Up to `wanted` product ids, one per unit in stock, the best stocked first: an order each
        takes one unit, and stock only comes back with a fresh run folder."""
        listed = self.http("GET", "/v1/products?pageSize=100").body.get("products", [])
        stock = {p["id"]: self.product_page(product=p["id"]).body.get("available", 0) for p in listed}
        units = [pid for pid, n in sorted(stock.items(), key=lambda kv: -kv[1]) for _ in range(min(n, wanted))]
        # round robin over the products, so that no product runs out first
        by_product: dict[str, list[str]] = collections.defaultdict(list)
        for pid in units:
            by_product[pid].append(pid)
        out: list[str] = []
        while len(out) < wanted and any(by_product.values()):
            for pid in list(by_product):
                if by_product[pid] and len(out) < wanted:
                    out.append(by_product[pid].pop())
        return out


def concurrently(calls: list[Callable[[], Reply]], workers: int) -> list[Reply]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda call: call(), calls))


def _seconds(replies: list[Reply]) -> str:
    if not replies:
        return "-"
    times = sorted(r.seconds for r in replies)
    low, high = times[0], times[-1]
    return f"{low:.2f} s" if high - low < 0.05 else f"{low:.2f}-{high:.2f} s (median {statistics.median(times):.2f} s)"


def _outcomes(replies: list[Reply]) -> str:
    """'200 x 18 in 0.01-0.03 s; 503 x 2 in 1.00 s (UNAVAILABLE: ...)'"""
    parts = []
    for status, group in sorted(_by_status(replies).items()):
        detail = f" ({group[0].error})" if status != 200 else ""
        parts.append(f"{status or 'no answer'} x {len(group)} in {_seconds(group)}{detail}")
    return "; ".join(parts)


def _by_status(replies: list[Reply]) -> dict[int, list[Reply]]:
    groups: dict[int, list[Reply]] = collections.defaultdict(list)
    for reply in replies:
        groups[reply.status].append(reply)
    return groups


def verdict(ok: bool, expected: str) -> bool:
    print(f"  {'as expected' if ok else 'NOT as expected'}: {expected}")
    return ok


# -- what each scenario measures ----------------------------------------------------------------------
def pricing_split(mesh: Mesh) -> bool:
    replies = [mesh.product_page() for _ in range(200)]
    versions = collections.Counter(r.body.get("pricingVersion", f"error {r.status}") for r in replies)
    print("  200 product pages: " + ", ".join(f"{v} {n} ({n / 2:.0f}%)" for v, n in sorted(versions.items())))
    weights = _weights(mesh.istio_dir / "pricing-canary.yaml")
    if weights is None:
        return verdict(False, "istio/pricing-canary.yaml applied")
    share = versions.get("v2", 0) / len(replies) * 100
    return verdict(abs(share - weights["v2"]) <= 10 and sum(versions.values()) == versions["v1"] + versions["v2"],
                   f"about {weights['v1']}% v1 and {weights['v2']}% v2 (the weights in istio/pricing-canary.yaml), "
                   "no errors")


def _weights(path: pathlib.Path) -> dict[str, int] | None:
    import yaml  # only here: the one scenario that reads its applied file

    try:
        doc = yaml.safe_load(path.read_text())
        routes = doc["spec"]["http"][0]["route"]
        return {r["destination"]["subset"]: int(r.get("weight", 100 if len(routes) == 1 else 0)) for r in routes}
    except (OSError, KeyError, IndexError, TypeError, ValueError, yaml.YAMLError):
        return None


def beta_routing(mesh: Mesh) -> bool:
    ok = True
    for label, headers, expected in (("x-user-tier: beta", {"x-user-tier": "beta"}, "v2"),
                                     ("x-user-tier: Beta", {"x-user-tier": "Beta"}, "v1"),
                                     ("no header", None, "v1")):
        versions = collections.Counter(mesh.product_page(headers).body.get("pricingVersion", "error") for _ in range(50))
        print(f"  50 product pages with {label:<18} " + ", ".join(f"{v} {n}" for v, n in sorted(versions.items())))
        ok &= versions == {expected: 50}
    # orders asks pricing for an order's quote: the runtimes pass x-user-tier on (MESH_PROPAGATE_HEADERS)
    for label, headers, expected in (("x-user-tier: beta", {"x-user-tier": "beta"}, "v2"), ("no header", None, "v1")):
        products = mesh.in_stock(1)
        reply = mesh.order(products[0], headers) if products else None
        priced = reply.body.get("order", {}).get("pricingVersion") if reply else "no stock left"
        print(f"  an order with {label:<18}      priced by {priced or (reply.error if reply else '-')}")
        ok &= priced == expected
    return verdict(ok, "v2 for every call with exactly `x-user-tier: beta`, v1 for every other, orders included")


def payments_hidden(mesh: Mesh, orders: int = 100) -> bool:
    products = mesh.in_stock(orders)
    if len(products) < orders:
        print(f"  only {len(products)} units left in stock (stock comes back with a fresh run folder: make down, "
              "remove .run/data, make up)")
    start = mesh.log_size("orders")
    replies = concurrently([functools.partial(mesh.order, p) for p in products], workers=8)
    lines = mesh.log_since("orders", start)
    hidden = sum(1 for line in lines if ('"order failed"' in line and "payments is unavailable" in line)
                 or ("compensation of" in line and "incomplete" in line))
    failed = [r for r in replies if r.status != 200]
    print(f"  {len(replies)} orders: {_outcomes(replies)}")
    print(f"  behind them: {hidden} attempts of orders failed on payments (the injected abort; "
          "make logs service=orders), for the gateway's retries to hide")
    return verdict(not failed and hidden > 0, "every order confirmed, while orders saw payments fail about 10% of "
                                              "the time")


def timeout_fires(mesh: Mesh) -> bool:
    products = mesh.in_stock(3)
    orders = concurrently([functools.partial(mesh.order, p) for p in products], workers=3)
    pages = [mesh.product_page() for _ in range(3)]
    print(f"  3 orders:        {_outcomes(orders)}")
    print(f"  3 product pages: {_outcomes(pages)}  (GetStock is not delayed)")
    return verdict(bool(orders) and all(r.status == 503 and r.seconds < 5 for r in orders)
                   and all(r.status == 200 for r in pages),
                   "every order fails with 503 (UNAVAILABLE: inventory is unavailable) in about 1 s per try of the "
                   "gateway, well before the 10 s delay; product pages unaffected")


def half_fail(mesh: Mesh) -> bool:
    replies = [mesh.product_page() for _ in range(100)]
    print(f"  100 product pages: {_outcomes(replies)}")
    failed = sum(r.status != 200 for r in replies)
    return verdict(20 <= failed <= 80, "about half fail: round robin sends every other GetStock to inventory-2, "
                                       "and nothing retries it")


def ejected(mesh: Mesh) -> bool:
    started, clean, last_error = time.monotonic(), 0, None
    while time.monotonic() - started < 15 and clean < 4:
        replies = [mesh.product_page() for _ in range(25)]
        failed = sum(r.status != 200 for r in replies)
        now = time.monotonic() - started
        print(f"  t={now:4.1f} s  25 product pages: {failed} failed")
        clean = clean + 1 if failed == 0 else 0
        last_error = now if failed else last_error
    direct = _inventory_directly(mesh, "inventory-2")
    print(f"  inventory-2 asked directly: {direct}")
    return verdict(clean >= 4 and "UNAVAILABLE" in direct,
                   "errors stop within a few seconds while inventory-2 still fails: it is ejected (for 30 s, "
                   "then tried again and ejected again for longer)")


def _inventory_directly(mesh: Mesh, instance: str) -> str:
    from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

    with mtls.direct_channel(mesh.run_dir, mesh.process(instance)["port"], "inventory") as channel:
        try:
            reply = inventory_pb2_grpc.InventoryServiceStub(channel).GetStock(
                inventory_pb2.GetStockRequest(product_id=PRODUCT), timeout=5)
        except grpc.RpcError as error:
            return f"{error.code().name}: {error.details()}"
    return f"OK (available {reply.available})"


def _burst(mesh: Mesh, calls: int = 20) -> list[Reply]:
    replies = concurrently([mesh.product_page for _ in range(calls)], workers=calls)
    print(f"  {calls} product pages at once: {_outcomes(replies)}")
    return replies


def all_wait(mesh: Mesh) -> bool:
    replies = _burst(mesh)
    return verdict(all(r.status == 200 and r.seconds >= 0.9 for r in replies),
                   "every page answers, and every one waits the 1 s of inventory")


def load_shed(mesh: Mesh) -> bool:
    replies = _burst(mesh)
    groups = _by_status(replies)
    shed, served = groups.get(503, []), groups.get(200, [])
    return verdict(len(shed) >= 10 and all(r.seconds < 0.5 for r in shed) and len(served) + len(shed) == len(replies),
                   "2 pages wait for inventory and answer; the others fail at once with 503 (UNAVAILABLE) instead of "
                   "waiting in line")


# -- the scenarios ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Step:
    files: tuple[str, ...] = ()  # copied into the control plane's folder
    chaos: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()  # (instance or service, ((VARIABLE, value),))
    say: str = ""  # what the step shows, printed before its measure
    measure: Callable[[Mesh], bool] | None = None


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    steps: tuple[Step, ...]
    next: str = ""  # what to try after the demo

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(f for step in self.steps for f in step.files)

    @property
    def measure(self) -> Callable[[Mesh], bool] | None:
        return next((s.measure for s in reversed(self.steps) if s.measure), None)


FAIL = (("MESH_INJECT_FAILURE_PERCENT", "100"),)
SLOW = (("MESH_INJECT_DELAY_MS", "1000"),)
SCENARIOS = {s.name: s for s in (
    Scenario("pricing-canary", "pricing canary: 90/10, then 50/50, then 100% v2", (
        Step(("pricing-canary.yaml",), say="90% of calls to pricing go to v1, 10% to v2", measure=pricing_split),),
        "edit the weights in istio/pricing-canary.yaml (50/50, then 0/100) and count again: "
        "make scenario-traffic name=pricing-canary"),
    Scenario("beta-header", "header x-user-tier: beta -> pricing v2", (
        Step(("beta-header.yaml",), say="calls carrying x-user-tier: beta go to pricing v2, the others to v1",
             measure=beta_routing),),
        "curl -s -H 'x-user-tier: beta' GATEWAY/v1/products/sku-grinder"),
    Scenario("payments-abort", "payments fails 10% of calls, retries hide it from users", (
        Step(("payments-abort.yaml", "orders-retries.yaml"),
             say="orders -> payments: 10% of calls aborted with UNAVAILABLE; gateway -> orders: up to 4 retries "
                 "on UNAVAILABLE (orders is idempotent by the Idempotency-Key)",
             measure=payments_hidden),)),
    Scenario("inventory-timeout", "inventory is slow, a timeout makes orders fail fast", (
        Step(("inventory-timeout.yaml",),
             say="orders -> inventory ReserveStock: every call delayed 10 s, the route's timeout is 1 s",
             measure=timeout_fires),)),
    Scenario("outlier-detection", "a failing inventory replica is ejected", (
        Step(("inventory-no-retries.yaml",), (("inventory-2", FAIL),),
             say="inventory-2 answers every call UNAVAILABLE; retries to inventory are off, so users see it",
             measure=half_fail),
        Step(("inventory-outlier-detection.yaml",),
             say="outlier detection on inventory: a replica failing over 85% of at least 5 calls in 1 s is ejected",
             measure=ejected),)),
    Scenario("circuit-breaker", "a circuit breaker sheds load from a slow inventory", (
        Step((), (("inventory", SLOW),), say="both inventory replicas take 1 s per call", measure=all_wait),
        Step(("inventory-circuit-breaker.yaml",),
             say="circuit breaker on inventory: at most 2 calls in flight from each client",
             measure=load_shed),)),
)}


def scenario_files(name: str) -> list[pathlib.Path]:
    return sorted((FOLDER / name).glob("*.yaml"))


def applied_files(istio_dir: pathlib.Path) -> list[pathlib.Path]:
    """Copies of scenario files in `istio_dir` (every scenario file name is unique)."""
    names = {path.name for name in SCENARIOS for path in scenario_files(name)}
    return sorted(path for path in istio_dir.glob("*.yaml") if path.name in names)


def resource_keys(path: pathlib.Path) -> set[tuple[str, str, str]]:
    """(kind, namespace, name) of every resource in a YAML file."""
    keys = set()
    for doc in yaml.safe_load_all(path.read_text()):
        if isinstance(doc, dict):
            meta = doc.get("metadata") or {}
            keys.add((str(doc.get("kind")), str(meta.get("namespace") or topology.NAMESPACE), str(meta.get("name"))))
    return keys


def _park_replaced(istio_dir: pathlib.Path, applied: pathlib.Path) -> None:
    """Park the default files that define a resource `applied` defines too (after copying it: until
    the control plane sees both changes, the default serves and the copy is the duplicate)."""
    mine, scenario_names = resource_keys(applied), {p.name for p in applied_files(istio_dir)}
    for default in sorted(istio_dir.glob("*.yaml")):
        replaced = resource_keys(default) & mine if default.name not in scenario_names else set()
        if replaced:
            default.rename(default.with_name(default.name + PARKED))
            print(f"  parked {default.name} (its {', '.join(sorted(f'{kind} {name}' for kind, _, name in replaced))}"
                  f" is replaced by {applied.name} until `make scenario-off`)")


def _unpark(istio_dir: pathlib.Path) -> list[pathlib.Path]:
    restored = []
    for parked in sorted(istio_dir.glob("*.yaml" + PARKED)):
        restored.append(parked.rename(parked.with_name(parked.name.removesuffix(PARKED))))
        print(f"  restored {restored[-1]}")
    return restored


# -- commands ------------------------------------------------------------------------------------------
def _apply_step(mesh: Mesh, step: Step, source: pathlib.Path) -> bool:
    for name in step.files:
        shutil.copy(source / name, mesh.istio_dir / name)
        print(f"  applied {mesh.istio_dir / name}")
        _park_replaced(mesh.istio_dir, mesh.istio_dir / name)
    if step.files:
        time.sleep(SETTLE)
        errors, _ = probes.control_plane_problems(f"127.0.0.1:{topology.Ports(mesh.offset).xds}")
        mine = [e for e in errors if any(name in e for name in step.files)]
        if mine:
            print("\n".join(f"  control plane: {e}" for e in mine))
            return False
    for target, env in step.chaos:
        print(f"  chaos: {target} {chaos.describe(dict(env))}")
        if chaos.apply(mesh.run_dir, mesh.offset, mesh.state(), target, dict(env), off=False, hint=False) != 0:
            return False
    return True


def take_off(mesh: Mesh, quiet: bool = False) -> int:
    removed = applied_files(mesh.istio_dir)
    restored = _unpark(mesh.istio_dir)  # first: the default serves again before its replacement goes
    for path in removed:
        path.unlink()
        print(f"  removed {path}")
    overridden = [p["name"] for p in mesh.state()["processes"] if p.get("overrides") or p.get("pending_overrides")]
    code = 0
    if overridden:
        print(f"  chaos off: {', '.join(overridden)}")
        code = chaos.apply(mesh.run_dir, mesh.offset, mesh.state(), None, {}, off=True)
    if not quiet:
        if not removed and not restored and not overridden:
            print("  no scenario was applied")
        defaults = sorted(p.name for p in mesh.istio_dir.glob("*.yaml"))
        print(f"  {mesh.istio_dir} holds the defaults again: {', '.join(defaults) or 'no file'}")
    return code


def _list() -> int:
    print("scenarios (istio/scenarios/NAME/README.md walks through each):")
    for scenario in SCENARIOS.values():
        print(f"  {scenario.name:<18} {scenario.title}")
    print("\nmake scenario name=NAME         apply it to the running mesh, drive traffic, print what users see")
    print("make scenario-traffic name=NAME drive the traffic again (after an edit)")
    print("make scenario-off                take every scenario off (the defaults of istio/, no chaos)")
    return 0


def main(run_dir: pathlib.Path, offset: int, name: str | None, mode: str, running: dict[str, Any] | None) -> int:
    if name is None and mode == "demo":
        return _list()
    if name is not None and name not in SCENARIOS:
        print(f"no scenario {name!r}; one of: {', '.join(SCENARIOS)}")
        return 2
    if not running:
        print("the mesh is down (make up starts it)")
        return 1
    mesh = Mesh(run_dir, offset)
    if mode == "off":
        print("taking every scenario off")
        return take_off(mesh)
    if name is None:  # only the listing and `off` go without one
        print(f"which scenario? one of: {', '.join(SCENARIOS)}")
        return 2
    scenario = SCENARIOS[name]
    if mode == "traffic":
        missing = [f for f in scenario.files if not (mesh.istio_dir / f).exists()]
        if missing:
            print(f"{name} is not applied ({', '.join(missing)} missing): make scenario name={name}")
            return 1
        print(f"{name}: traffic through {mesh.gateway}")
        return 0 if scenario.measure is None or scenario.measure(mesh) else 1
    print(f"{name}: {scenario.title}")
    if applied_files(mesh.istio_dir) or any(p.get("overrides") for p in mesh.state()["processes"]):
        print("taking the scenario applied now off first (one at a time)")
        if take_off(mesh, quiet=True) != 0:
            return 1
    ok = True
    for number, step in enumerate(scenario.steps, 1):
        if mode == "demo" and len(scenario.steps) > 1:
            print(f"\nstep {number}: {step.say}")
        elif mode == "demo":
            print(f"\n{step.say}")
        if not _apply_step(mesh, step, FOLDER / name):
            return 1
        if mode == "demo" and step.measure is not None:
            ok &= step.measure(mesh)
    if mode == "demo":
        print(f"\nwalkthrough: istio/scenarios/{name}/README.md")
        if scenario.next:
            print(f"next: {scenario.next.replace('GATEWAY', mesh.gateway)}")
    print("take it off: make scenario-off  (python -m mesh.runner scenario --off)")
    return 0 if ok else 1
