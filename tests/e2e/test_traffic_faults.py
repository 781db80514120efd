"""Fault injection through the running mesh: a VirtualService fault on the upstream's route aborts
20 % of the calls with UNAVAILABLE and delays 30 % by 200 ms (independently, delay first, as
Envoy and gRFC A33 do). The client of each language applies it before the call leaves; the test
measures both rates as the driven service answers its own caller (an aborted upstream call makes
it answer UNAVAILABLE; a delayed one makes it 200 ms slower), over 1000 calls, within 5 points.
Aborted calls never reach the upstream: its servers' counters must add up to the rest.

Orders (Python) runs the requests whose ids share one of its 64 lock stripes one after the other,
so a call stuck behind a delayed one would look delayed itself: a call's time counts from when
orders took it up (`Driver.queued`). Orders also gets fewer calls at a time: near saturation its
own time passes 200 ms now and then."""

from __future__ import annotations

import statistics

from support.istio_files import destination, tag
from support.traffic import apply_routes, codes, counts_by, driver, istio_files, make_figures, percent  # noqa: F401

CALLS = 1000
ABORT_PERCENT = 20
DELAY_PERCENT = 30
DELAY = 0.2  # seconds
CONCURRENCY = {"python": 8}
TOLERANCE = 5  # points

figures = make_figures("fault injection")


def test_fault_abort_and_delay_rates_hold_within_5_points(driver, istio_files, figures):
    up = driver.upstream
    apply_routes(driver, istio_files, {
        "name": f"faults-{tag()}", "route": [destination(up)],
        "retries": {"attempts": 0},  # the rates as injected (gRPC clients do not retry an injected abort anyway)
        "fault": {"abort": {"percentage": {"value": ABORT_PERCENT}, "grpcStatus": "UNAVAILABLE"},
                  "delay": {"percentage": {"value": DELAY_PERCENT}, "fixedDelay": f"{round(DELAY * 1000)}ms"}}})
    before = driver.upstream_calls()
    outcomes = driver.run(CALLS, concurrency=CONCURRENCY.get(driver.language))
    reached = sum(counts_by(before, driver.upstream_calls()).values())
    own = [o.seconds - queued for o, queued in zip(outcomes, driver.queued(outcomes), strict=True)]

    aborted = [o for o in outcomes if o.upstream_failed]
    delayed = [seconds for seconds in own if seconds >= DELAY]
    prompt = [seconds for seconds in own if seconds < DELAY]
    print(figures.add(driver.language, client=f"{driver.client_service}->{up}", calls=CALLS,
                      abort_pct=percent(len(aborted), CALLS), abort_expected=ABORT_PERCENT,
                      delay_pct=percent(len(delayed), CALLS), delay_expected=DELAY_PERCENT,
                      delayed_median_ms=round(1000 * statistics.median(delayed)) if delayed else None,
                      undelayed_median_ms=round(1000 * statistics.median(prompt)) if prompt else None,
                      undelayed_max_ms=round(1000 * max(prompt)) if prompt else None,
                      queued_in_client_service=sum(o.seconds - s > 0.05 for o, s in zip(outcomes, own, strict=True)),
                      reached_upstream=reached))

    assert all(o.upstream_ok or o.upstream_failed for o in outcomes), f"unexpected answers: {codes(outcomes)}"
    assert abs(percent(len(aborted), CALLS) - ABORT_PERCENT) <= TOLERANCE, f"aborted: {codes(outcomes)}"
    assert abs(percent(len(delayed), CALLS) - DELAY_PERCENT) <= TOLERANCE, \
        f"{len(delayed)} of {CALLS} calls took {DELAY} s or more"
    assert reached == CALLS - len(aborted), f"{reached} calls reached {up}; {CALLS - len(aborted)} were not aborted"
